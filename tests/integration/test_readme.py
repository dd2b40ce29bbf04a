"""The README's Python example runs as written (with the tiny model chosen through the environment)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from tests.integration.test_end_to_end import draw_images

README = Path(__file__).resolve().parents[2] / "README.md"


def test_readme_python_example_runs(tmp_path: Path) -> None:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert blocks, "README has no python example"
    example = blocks[0]
    home = tmp_path / "home"
    pictures = draw_images(home / "Pictures", 12)
    (tmp_path / "extra.jpg").write_bytes(draw_images(tmp_path / "x", 1, seed=5)[0].read_bytes())
    (tmp_path / "query.jpg").write_bytes(pictures[3].read_bytes())
    env = os.environ | {
        "HOME": str(home),
        "SEMSTORE_MODEL": "semstore-tiny-test",
        "SEMSTORE_PRETRAINED": "",
        "SEMSTORE_DATA_DIR": str(tmp_path / "data"),
        "SEMSTORE_CODEC_NUM_SUBVECTORS": "4",
        "SEMSTORE_CODEC_CODEBOOK_SIZE": "16",
        "PYTHONPATH": str(README.parent),
    }
    result = subprocess.run(
        [sys.executable, "-c", example], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "added 13" in result.stdout
    assert (tmp_path / "photos.db").exists()
    # the last loop printed the image hits; query.jpg is a copy of Pictures/.../img003
    lines = [line for line in result.stdout.splitlines() if line and line[0].isdigit()]
    assert lines and "img003" in lines[0]
