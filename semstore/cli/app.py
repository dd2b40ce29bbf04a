"""The ``semstore`` command: a thin typer layer over the library, and the only place that prints.

Commands import the library inside their bodies so that ``semstore --help`` stays fast.
"""

from typing import Annotated

import typer

from semstore.cli.commands import codec, collections, duplicates, exif, ingest, keys, query, serve
from semstore.cli.errors import ErrorHandlingGroup

app = typer.Typer(
    name="semstore",
    cls=ErrorHandlingGroup,
    help="Compressed semantic vector database for images: CLIP embeddings stored as PQ-VAE codes.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

app.command("init")(collections.init)
app.command("ingest")(ingest.ingest)
app.command("search")(query.search)
app.command("classify")(query.classify)
app.command("duplicates")(duplicates.duplicates)
app.command("stats")(collections.stats)
app.command("exif-backfill")(exif.exif_backfill)
app.command("collections")(collections.collections)
app.command("delete-collection")(collections.delete_collection)
app.command("train-codec")(codec.train_codec)
app.command("serve")(serve.serve)
app.add_typer(keys.app, name="keys")


def _show_version(value: bool) -> None:
    if value:
        from semstore import __version__

        typer.echo(f"semstore {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_show_version, is_eager=True, help="Show the version and exit."),
    ] = False,
) -> None:
    """Compressed semantic vector database for images: CLIP embeddings stored as PQ-VAE codes."""


def main() -> None:
    """Console-script entry point."""
    app()
