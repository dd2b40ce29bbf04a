"""The ingest command: image files and folders into a collection."""

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from semstore.cli.commands._collection import get_or_create
from semstore.cli.errors import ERROR_EXIT_CODE, CliError
from semstore.cli.loading import load_encoder
from semstore.cli.params import (
    DEFAULT_COLLECTION,
    CodecOption,
    CollectionOption,
    DataDirOption,
    DbOption,
    ModelOption,
    PretrainedOption,
    build_settings,
    open_database,
    parse_pairs,
)
from semstore.cli.render import print_table

if TYPE_CHECKING:
    from semstore.distributed import RayIngestOptions
    from semstore.ingest.pipeline import IngestInterrupted

_RAY = "Distributed (Ray)"
#: What a shell reports for a command stopped by Ctrl-C (128 + SIGINT).
INTERRUPTED_EXIT_CODE = 130


def interrupted_message(stop: "IngestInterrupted") -> str:
    """What was kept and lost when Ctrl-C stopped an ingest, and how to resume."""
    report = stop.report
    lines = [f"interrupted after {report.seconds:.1f}s: {report.added} item(s) stored and kept, {report.skipped} skipped."]
    if stop.unsaved_sample:
        lines.append(
            f"{stop.unsaved_sample} image(s) embedded for the codec sample were not stored: the sample is "
            "held in memory only (never written to disk) until the codec is trained, and is lost."
        )
    lines.append("Run the same command again to resume: images already stored are skipped.")
    return "\n".join(lines)


def _ray_options(address: str, *, workers: int, gpus_per_worker: float | None, batch_size: int) -> "RayIngestOptions":
    from semstore.distributed import RayIngestOptions, RayNotInstalledError, require_ray

    try:
        require_ray()
    except RayNotInstalledError as exc:
        raise CliError(str(exc)) from exc
    return RayIngestOptions(
        address=address,
        workers=workers,
        gpus_per_worker=gpus_per_worker,
        batch_size=batch_size,
    )


def ingest(
    paths: Annotated[list[Path], typer.Argument(help="Image files and folders (searched recursively).")],
    collection: CollectionOption = DEFAULT_COLLECTION,
    codec: CodecOption = None,
    meta: Annotated[
        list[str] | None,
        typer.Option("--meta", "-m", help="KEY=VALUE metadata for every added item (repeatable); numbers and true/false are typed."),
    ] = None,
    batch_size: Annotated[int | None, typer.Option("--batch-size", min=1, help="Images per encoder batch.")] = None,
    codec_sample: Annotated[
        int | None,
        typer.Option(
            "--codec-sample",
            min=2,
            metavar="N",
            help="A new collection's codec is trained on its first N images (default 20000, "
            "SEMSTORE_CODEC_BOOTSTRAP_SIZE); nothing is stored before that. Fewer: a faster first "
            "result, a codec fitted to less data.",
        ),
    ] = None,
    no_progress: Annotated[bool, typer.Option("--no-progress", help="Hide the progress bar.")] = False,
    ray: Annotated[
        str | None,
        typer.Option(
            "--ray",
            metavar="ADDRESS",
            help="Run on a Ray cluster: `local` starts one on this machine, `auto` joins the running one "
            "(RAY_ADDRESS or `ray start`), or HOST:6379 / ray://HOST:10001. "
            'Needs pip install "semstore\\[distributed]".',
            rich_help_panel=_RAY,
        ),
    ] = None,
    workers: Annotated[
        int, typer.Option("--workers", min=1, help="Encoder actors (one model each) with --ray.", rich_help_panel=_RAY)
    ] = 1,
    gpus_per_worker: Annotated[
        float | None,
        typer.Option("--gpus-per-worker", min=0, help="GPUs per encoder actor with --ray (default: 1 if the cluster has GPUs, else 0).", rich_help_panel=_RAY),
    ] = None,
    model: ModelOption = None,
    pretrained: PretrainedOption = None,
    db: DbOption = None,
    data_dir: DataDirOption = None,
) -> None:
    """Add images to a collection (created if missing); unchanged files are skipped.

    Unreadable files are listed with the reason and do not fail the run (exit code 0); the exit code is 1 when nothing could be ingested at all.
    """
    metadata = parse_pairs(meta, "--meta")
    # Checked before anything is created, so a typo does not leave an empty collection behind.
    from semstore.ingest.pipeline import IngestInterrupted  # (not at import: --help stays fast)

    missing = [str(path) for path in paths if not path.expanduser().exists()]
    if missing:
        raise CliError(f"no such file or folder: {', '.join(missing)}")
    settings = build_settings(
        db=db, data_dir=data_dir, model=model, pretrained=pretrained, batch_size=batch_size,
        codec_bootstrap_size=codec_sample,
    )  # fmt: skip
    options = None
    if ray is not None:
        options = _ray_options(ray, workers=workers, gpus_per_worker=gpus_per_worker, batch_size=settings.batch_size)
    with open_database(settings) as database:
        target, created = get_or_create(database, collection, codec=codec)
        if created:
            typer.echo(f"created collection {target.name!r} (model {target.model})")
        if options is None:  # (on Ray, the workers load the model)
            load_encoder(target)
        try:
            report = target.add(paths, metadata=metadata or None, progress=not no_progress, ray=options)
        except IngestInterrupted as stop:
            typer.echo(interrupted_message(stop), err=True)
            raise typer.Exit(INTERRUPTED_EXIT_CODE) from None
    typer.echo(report.summary())
    if metadata and report.skipped:
        typer.echo(
            f"note: --meta was applied to the {report.added} added item(s) only; the {report.skipped} already "
            "stored kept their metadata (change it with PATCH /v1/collections/NAME/items/ID or "
            "Collection.update_metadata)"
        )
    if report.failed:
        print_table(
            f"{len(report.failed)} file(s) not ingested",
            ["file", "reason"],
            [(failure.source, failure.reason) for failure in report.failed],
        )
    if report.failed and not report.added and not report.skipped:
        typer.echo("error: none of the files could be ingested", err=True)
        raise typer.Exit(ERROR_EXIT_CODE)
    if not (report.added or report.skipped or report.failed):
        typer.echo("no image files found")
