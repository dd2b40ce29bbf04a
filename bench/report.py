"""Shared by the performance benches: machine facts, timing helpers, appending to RESULTS.md."""

from __future__ import annotations

import os
import platform
import shlex
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

RESULTS = Path(__file__).with_name("RESULTS.md")
CACHE = Path(__file__).with_name(".cache")


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def load_average() -> str:
    return "{:.1f} / {:.1f} / {:.1f}".format(*os.getloadavg()) if hasattr(os, "getloadavg") else "n/a"


def machine_facts() -> str:
    """CPU model, cores, load average (1/5/15 min) and library versions, one line."""
    import faiss
    import numpy as np

    return (
        f"{cpu_model()}, {os.cpu_count()} cores, load avg {load_average()}, Python {platform.python_version()}, "
        f"faiss {faiss.__version__}, numpy {np.__version__}"
    )


def command_line() -> str:
    return "python " + " ".join(shlex.quote(a) for a in [os.path.relpath(sys.argv[0]), *sys.argv[1:]])


def append_results(title: str, body: str, path: Path = RESULTS) -> None:
    """Append one dated section (title, command, machine, body) at the END of RESULTS.md."""
    section = (
        f"\n## {title} ({datetime.now(UTC):%Y-%m-%d %H:%M} UTC)\n\n"
        f"Command: `{command_line()}`  \nMachine: {machine_facts()}\n\n{body.rstrip()}\n"
    )
    with path.open("a", encoding="utf-8") as out:
        out.write(section)


def publish(title: str, body: str, *, write: bool) -> None:
    """Print a bench's report; with ``write``, also append it to RESULTS.md."""
    print(body)
    if write:
        append_results(title, body)


def timed_runs(
    run: Callable[[], object], *, budget_s: float = 0.0, min_runs: int = 3, max_runs: int = 200, warmup: bool = False
) -> list[float]:
    """Wall times (s) of repeated ``run()`` calls: at least ``min_runs``, more while ``budget_s`` lasts.

    ``warmup`` makes one untimed call first (caches, lazily built tables, thread pools).
    """
    if warmup:
        run()
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < max_runs and (len(times) < min_runs or time.perf_counter() - start < budget_s):
        t0 = time.perf_counter()
        run()
        times.append(time.perf_counter() - t0)
    return times


def median_seconds(run: Callable[[], object], *, budget_s: float, min_runs: int = 3, max_runs: int = 200) -> float:
    """Median wall time of ``run()`` over repeats until ``budget_s`` is spent (at least ``min_runs``).

    The median, not the mean: other jobs share the CPU, and a median ignores their spikes.
    """
    return statistics.median(timed_runs(run, budget_s=budget_s, min_runs=min_runs, max_runs=max_runs))


def publish_section(lines: list[str], *, append: bool, path: Path = RESULTS) -> None:
    """Print a ready-made Markdown section (with its own heading); with ``append`` add it to RESULTS.md."""
    text = "\n".join(lines)
    print(text)
    if append:
        with path.open("a", encoding="utf-8") as out:
            out.write("\n" + text)


@contextmanager
def limit_threads(count: int, *, torch: bool = False) -> Iterator[None]:
    """FAISS OpenMP and BLAS/numpy threads (and torch's intra-op threads with ``torch``)
    limited to ``count`` together for the ``with`` block."""
    import faiss
    from threadpoolctl import threadpool_limits

    before = faiss.omp_get_max_threads()
    torch_module = None
    if torch:
        import torch as torch_module

        before_torch = torch_module.get_num_threads()
        torch_module.set_num_threads(count)
    faiss.omp_set_num_threads(count)
    try:
        with threadpool_limits(count):
            yield
    finally:
        faiss.omp_set_num_threads(before)
        if torch_module is not None:
            torch_module.set_num_threads(before_torch)
