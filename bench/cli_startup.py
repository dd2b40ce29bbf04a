"""CLI start-up: wall time of ``semstore --help``, ``stats``, ``search --item`` and a text
``search``, cold and warm, for one or more source trees (e.g. before and after a change).

For each tree (``--tree PATH``, default: this checkout) the script makes a scratch data
directory, ingests 12 generated images with that tree's own CLI (so each tree writes the
schema it knows), then times every command as a fresh ``python -m semstore.cli`` process:

* **cold**: the first run after ``sync; echo 3 > /proc/sys/vm/drop_caches`` (the page cache
  emptied: Python, torch's shared libraries and the database read from disk). Needs root;
  without it the column says so and the first run is reported as measured, with a warm cache.
* **warm**: the median (and max) of ``--runs`` further runs.

The model is a real open_clip architecture (default ViT-B-32) with random weights: importing
torch and open_clip and building the model cost what they cost with pretrained weights; reading
the weights file (~600 MB for ViT-B-32, not downloadable here) is not included.

Usage::

    git worktree add /tmp/before <commit>
    python bench/cli_startup.py --tree /tmp/before --tree . [--runs 5] [--out bench/RESULTS.md]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from PIL import Image, ImageDraw

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.report import RESULTS, publish_section  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
COMMANDS: dict[str, list[str]] = {
    "--help": ["--help"],
    "stats": ["stats"],
    "collections": ["collections"],
    "search --item 1": ["search", "--item", "1", "-k", "5"],
    "search TEXT": ["search", "a red circle", "-k", "5"],
}


def draw_images(folder: Path, count: int = 12) -> None:
    folder.mkdir(parents=True)
    for i in range(count):
        image = Image.new("RGB", (64, 48), ((37 * i) % 256, (91 * i) % 256, (53 * i) % 256))
        ImageDraw.Draw(image).ellipse((4 + i, 4, 40 + i, 40), fill=((200 + i) % 256, 30, 30))
        image.save(folder / f"image-{i:02d}.png")


def environment(tree: Path, data_dir: Path, model: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEMSTORE_")}
    env.update(
        PYTHONPATH=str(tree),
        SEMSTORE_DATA_DIR=str(data_dir),
        SEMSTORE_MODEL=model,
        SEMSTORE_PRETRAINED="",
        SEMSTORE_CODEC_NUM_SUBVECTORS="4",
        SEMSTORE_CODEC_CODEBOOK_SIZE="16",
    )
    env.pop("FORCE_COLOR", None)
    return env


def run_cli(args: Sequence[str], env: dict[str, str], cwd: Path) -> float:
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "semstore.cli", *args], env=env, cwd=cwd, capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"semstore {' '.join(args)} failed ({done.returncode}): {done.stderr.strip()[-400:]}")
    return elapsed


def drop_caches() -> bool:
    try:
        subprocess.run(["sync"], check=True)
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
        return True
    except OSError:
        return False


def measure_tree(tree: Path, model: str, runs: int, work: Path) -> dict[str, tuple[float, bool, float, float]]:
    """command -> (cold s, cache really dropped, warm median s, warm max s)."""
    data_dir, images = work / "data", work / "images"
    draw_images(images)
    env = environment(tree, data_dir, model)
    # (SEMSTORE_PRETRAINED="" is how an older tree is told "no weights" too)
    run_cli(["ingest", str(images), "--no-progress"], env, work)
    results = {}
    for label, args in COMMANDS.items():
        dropped = drop_caches()
        cold = run_cli(args, env, work)
        warm = [run_cli(args, env, work) for _ in range(runs)]
        results[label] = (cold, dropped, statistics.median(warm), max(warm))
        print(f"  {label:18s} cold {cold:6.2f} s{'' if dropped else ' (cache not dropped)'}, warm median {statistics.median(warm):6.2f} s")
    return results


def git_label(tree: Path) -> str:
    done = subprocess.run(["git", "-C", str(tree), "log", "-1", "--format=%h %s"], capture_output=True, text=True)
    return done.stdout.strip()[:70] if done.returncode == 0 else str(tree)


def format_report(measured: dict[str, dict[str, tuple[float, bool, float, float]]], model: str, runs: int) -> str:
    trees = list(measured)
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        f"## CLI start-up ({when}, `bench/cli_startup.py`)",
        "",
        f"Model {model} with random weights (import and build costs; no weights file read), SQLite, 12 items, "
        f"fresh process per run; cold = first run after dropping the page cache, warm = median (max) of {runs} runs. "
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}.",
        "",
        "| command | " + " | ".join(f"`{git_label(Path(t))}` cold / warm" for t in trees) + " |",
        "|---|" + "---|" * len(trees),
    ]
    for label in COMMANDS:
        cells = []
        for tree in trees:
            cold, dropped, median, worst = measured[tree][label]
            cells.append(f"{cold:.2f} s{'' if dropped else ' (cache warm)'} / {median:.2f} s ({worst:.2f})")
        lines.append(f"| `semstore {label}` | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tree", type=Path, action="append", help="a semstore source tree (repeatable; default: this one)")
    parser.add_argument("--model", default="ViT-B-32", help="open_clip architecture, built with random weights")
    parser.add_argument("--runs", type=int, default=5, help="warm runs per command")
    parser.add_argument("--out", type=Path, default=None, help=f"append the table to this markdown file (e.g. {RESULTS})")
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    trees = [tree.resolve() for tree in (args.tree or [REPO])]
    measured = {}
    for tree in trees:
        print(f"{tree} ({git_label(tree)})")
        with tempfile.TemporaryDirectory(prefix="semstore-cli-startup-") as scratch:
            measured[str(tree)] = measure_tree(tree, args.model, args.runs, Path(scratch))
    publish_section(format_report(measured, args.model, args.runs).splitlines(), append=args.out is not None, path=args.out or RESULTS)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
