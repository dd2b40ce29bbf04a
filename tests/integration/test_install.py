"""A CPU-only install path (issue #19, item 1): with a torch already installed, installing
semstore pulls no other torch build and no CUDA library."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_installing_semstore_keeps_the_installed_torch() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--dry-run", "--quiet", "--report", "-", "--no-build-isolation", "-e", str(ROOT)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout)
    would_install = {entry["metadata"]["name"].lower() for entry in report["install"]}
    assert "semstore" in would_install  # the report is about this project
    assert not {name for name in would_install if name in ("torch", "torchvision") or name.startswith("nvidia-")}, would_install
