"""The serve command: the HTTP server (``server.app:create_app``) under uvicorn."""

import json
import os
from pathlib import Path
from typing import Annotated

import typer

from semstore.cli.params import DataDirOption, DbOption, ModelOption, PretrainedOption, build_settings

_SHARDS = "Sharded search (Ray Serve)"


def serve(
    host: Annotated[
        str | None, typer.Option("--host", help="Interface to listen on (default: SEMSTORE_HOST or 127.0.0.1).")
    ] = None,
    port: Annotated[
        int | None, typer.Option("--port", min=0, max=65535, help="TCP port, 0: any free port (default: SEMSTORE_PORT or 8000).")
    ] = None,
    model: ModelOption = None,
    pretrained: PretrainedOption = None,
    db: DbOption = None,
    data_dir: DataDirOption = None,
    source_root: Annotated[
        list[Path] | None,
        typer.Option(
            "--source-root",
            help=(
                "Folder whose files the server may read for thumbnails of items ingested from it (repeatable; "
                "e.g. the folder given to `semstore ingest`). Default: SEMSTORE_SOURCE_ROOTS, else none."
            ),
        ),
    ] = None,
    ray: Annotated[
        str | None,
        typer.Option("--ray", help="Ray cluster to deploy shards on with --shards ('auto', 'host:6379', 'ray://host:10001').",
                     rich_help_panel=_SHARDS),
    ] = None,
    shards: Annotated[
        int | None,
        typer.Option("--shards", min=1, help="Search through this many shard deployments on Ray Serve (default 1: no shards).",
                     rich_help_panel=_SHARDS),
    ] = None,
    replicas: Annotated[
        int | None, typer.Option("--replicas", min=1, help="Replicas of each shard deployment.", rich_help_panel=_SHARDS)
    ] = None,
) -> None:
    """Run the HTTP API server and the search page (API keys: `semstore keys create`).

    With --shards S (PostgreSQL, the distributed extra) the server deploys S shard deployments
    on Ray Serve and answers searches through them (see docs/distributed.md).
    """
    from server.app import check_settings
    from server.serving import serve as run_server

    # Validated here so a bad value is one error line, not a failing worker.
    roots = [root.expanduser().resolve() for root in source_root] if source_root else None
    settings = build_settings(
        db=db, data_dir=data_dir, model=model, pretrained=pretrained, host=host, port=port, source_roots=roots,
        shards=shards, shard_replicas=replicas, ray_address=ray,
    )  # fmt: skip
    check_settings(settings)
    if settings.shards > 1:
        from semstore.distributed import require_ray

        require_ray()  # one error line now rather than a server that cannot search
    # The app factory builds its own Settings in the server process: options travel as env vars.
    for name, value in (
        ("SEMSTORE_DATABASE_URL", db),
        ("SEMSTORE_DATA_DIR", data_dir),
        ("SEMSTORE_MODEL", model),
        ("SEMSTORE_PRETRAINED", pretrained),
        ("SEMSTORE_HOST", settings.host),
        ("SEMSTORE_PORT", settings.port),
        ("SEMSTORE_SOURCE_ROOTS", json.dumps([str(root) for root in roots]) if roots else None),
        ("SEMSTORE_SHARDS", shards),
        ("SEMSTORE_SHARD_REPLICAS", replicas),
        ("SEMSTORE_RAY_ADDRESS", ray),
    ):
        if value is not None:
            os.environ[name] = str(value)
    run_server(settings)
