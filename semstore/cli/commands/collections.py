"""Commands managing collections: init, collections, stats, delete-collection."""

import dataclasses
from typing import Annotated

import typer

from semstore.cli.commands._collection import check_codec, database_label
from semstore.cli.params import (
    DEFAULT_COLLECTION,
    CodecOption,
    CollectionOption,
    DataDirOption,
    DbOption,
    JsonOption,
    ModelOption,
    PretrainedOption,
    build_settings,
    open_database,
)
from semstore.cli.render import compact, echo_json, print_table


def init(
    collection: CollectionOption = DEFAULT_COLLECTION,
    model: ModelOption = None,
    pretrained: PretrainedOption = None,
    codec: CodecOption = None,
    exist_ok: Annotated[bool, typer.Option("--exist-ok", help="Succeed if the collection already exists.")] = False,
    db: DbOption = None,
    data_dir: DataDirOption = None,
) -> None:
    """Create the database (if needed) and a collection."""
    settings = build_settings(db=db, data_dir=data_dir, model=model, pretrained=pretrained)
    with open_database(settings) as database:
        created = database.create_collection(
            collection, model=settings.model, pretrained=settings.pretrained, codec=codec, exist_ok=exist_ok
        )
        if exist_ok and codec is not None:
            check_codec(created, codec)
        stored = created.codec
        codec_text = f"codec {stored.content_hash[:12]}" if stored else "codec trained on the first ingest"
        weights = f"/{created.pretrained}" if created.pretrained else ""
        typer.echo(
            f"collection {created.name!r} ready in {database_label(database)}: "
            f"model {created.model}{weights} ({created.dim}-d), {codec_text}"
        )


def collections(db: DbOption = None, data_dir: DataDirOption = None, json_output: JsonOption = False) -> None:
    """List the collections with their item counts (JSON: one object per line)."""
    settings = build_settings(db=db, data_dir=data_dir)
    with open_database(settings, create=False) as database:
        stats = [collection.stats() for collection in database.collections()]
    if json_output:
        for entry in stats:
            echo_json(
                {
                    "name": entry.name,
                    "items": entry.items,
                    "model": entry.model,
                    "pretrained": entry.pretrained,
                    "codec_hash": entry.codec_hash,
                }
            )
        return
    if not stats:
        typer.echo("no collections (create one with `semstore init` or `semstore ingest`)")
        return
    rows = [
        (entry.name, entry.items, entry.model, entry.pretrained, (entry.codec_hash or "")[:12]) for entry in stats
    ]
    print_table(None, ["name", "items", "model", "pretrained", "codec"], rows, numeric=["items"])


def stats(
    collection: CollectionOption = DEFAULT_COLLECTION,
    db: DbOption = None,
    data_dir: DataDirOption = None,
    json_output: JsonOption = False,
) -> None:
    """Items, bytes of codes per item, bits per vector and per pixel, codec and model."""
    settings = build_settings(db=db, data_dir=data_dir)
    with open_database(settings, create=False) as database:
        opened = database.collection(collection)
        _ = opened.index  # loaded (or built) so its kind and RAM per item are reported
        figures = opened.stats()
        index_directory = str(database.index_directory(opened))
    if json_output:
        echo_json({**dataclasses.asdict(figures), "index_directory": index_directory})
        return
    rows = [
        ("collection", figures.name),
        ("items", figures.items),
        ("bytes of codes", figures.code_bytes),
        ("bytes per item", f"{figures.bytes_per_item:g}"),
        ("bits per vector", _number(figures.bits_per_vector)),
        ("bits per pixel", _number(figures.bits_per_pixel)),
        ("model", f"{figures.model}" + (f"/{figures.pretrained}" if figures.pretrained else "")),
        ("dimensions", figures.dim),
        ("codec", figures.codec_hash or "none yet (trained on the first ingest)"),
        ("codec config", compact(figures.codec_config)),
        ("re-rank decoder", "neural" if figures.neural_decoder else "linear"),
        ("index", (figures.index_kind or "none (no codec yet)") + (
            f" (nlist {figures.index_nlist}, nprobe {figures.index_nprobe})" if figures.index_nlist else "")),
        ("index RAM per item", f"{figures.index_bytes_per_item:g} B" if figures.index_bytes_per_item is not None else "-"),
        ("metadata in memory", ", ".join(figures.metadata_keys_in_memory) or "-"),
        ("metadata RAM per item", f"{figures.metadata_bytes_per_item:g} B" if figures.metadata_bytes_per_item is not None else "-"),
        ("index saved in", index_directory),
    ]
    print_table(None, ["", "value"], rows)


def delete_collection(
    name: Annotated[str, typer.Argument(help="The collection to delete.")],
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    db: DbOption = None,
    data_dir: DataDirOption = None,
) -> None:
    """Delete a collection and all its items."""
    settings = build_settings(db=db, data_dir=data_dir)
    with open_database(settings, create=False) as database:
        count = database.collection(name).stats().items
        if not yes:
            typer.confirm(f"Delete collection {name!r} and its {count} items?", abort=True)
        database.delete_collection(name)
    typer.echo(f"deleted collection {name!r} ({count} items)")


def _number(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.6g}"
