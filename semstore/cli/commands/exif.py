"""EXIF facts: reading them for items stored before ingest did (``exif-backfill``)."""

from typing import Annotated

import typer

from semstore.cli.params import DEFAULT_COLLECTION, CollectionOption, DataDirOption, DbOption, JsonOption, build_settings, open_database
from semstore.cli.render import echo_json


def exif_backfill(
    collection: CollectionOption = DEFAULT_COLLECTION,
    progress: Annotated[bool, typer.Option("--progress/--no-progress", help="Show a progress bar.")] = True,
    db: DbOption = None,
    data_dir: DataDirOption = None,
    json_output: JsonOption = False,
) -> None:
    """Read the EXIF facts (date taken, camera, lens, GPS, ...) of items stored before ingest
    read them, from each item's own source file or kept upload (checked against its content
    hash; missing or changed files are skipped). Safe to interrupt and rerun."""
    settings = build_settings(db=db, data_dir=data_dir)
    with open_database(settings, create=False) as database:
        report = database.collection(collection).backfill_exif(progress=progress and not json_output)
    if json_output:
        echo_json({"read": report.read, "with_exif": report.found, "unavailable": report.unavailable})
        return
    typer.echo(f"read {report.read} items: {report.found} with EXIF stored; {report.unavailable} sources unavailable")
