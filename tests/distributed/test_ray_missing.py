"""Without Ray installed, ``--ray`` fails with one line saying how to install it."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from semstore.distributed import RayNotInstalledError, require_ray


def test_cli_without_ray_installed_says_how_to_install(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from semstore.cli import app

    monkeypatch.setitem(sys.modules, "ray", None)  # makes `import ray` raise ImportError
    env = {"SEMSTORE_DATA_DIR": str(tmp_path / "data"), "SEMSTORE_DATABASE_URL": f"sqlite:///{tmp_path / 'x.db'}"}
    result = CliRunner().invoke(app, ["ingest", str(tmp_path), "--ray", "auto"], env=env)
    assert result.exit_code == 1
    assert 'pip install "semstore[distributed]"' in result.output
    assert "Traceback" not in result.output


def test_require_ray_raises_a_typed_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(RayNotInstalledError, match=r"semstore\[distributed\]"):
        require_ray()


def test_sharded_search_without_ray_says_how_to_install(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from semstore.config import Settings
    from semstore.distributed.shard_serving import deploy_shards

    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(RayNotInstalledError, match=r"semstore\[distributed\]"):
        deploy_shards(Settings(data_dir=tmp_path, database_url=f"sqlite:///{tmp_path / 'x.db'}"), shards=2)


def test_importing_semstore_does_not_import_ray() -> None:
    import subprocess

    code = "import sys, semstore, semstore.distributed, semstore.distributed.shard_serving, semstore.cli; print('ray' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
