"""Printing a benchmark's report and appending it to ``bench/RESULTS.md``."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

RESULTS = Path(__file__).with_name("RESULTS.md")


def load_average() -> str:
    """The 1, 5 and 15 minute load averages, e.g. ``"2.1 1.8 1.5"``."""
    return " ".join(f"{value:.1f}" for value in os.getloadavg())


def publish(lines: Sequence[str], *, append: bool) -> None:
    """Print the report; with ``append`` add it as a new section at the end of RESULTS.md."""
    text = "\n".join(lines)
    print(text)
    if append:
        with RESULTS.open("a") as out:
            out.write("\n" + text)
