"""The ``duplicates`` command: near-duplicate groups of a collection, from its codes alone."""

from typing import Annotated

import typer

from semstore.cli.params import (
    DEFAULT_COLLECTION,
    CollectionOption,
    DataDirOption,
    DbOption,
    JsonOption,
    build_settings,
    open_database,
)
from semstore.cli.render import echo_json, print_table

#: Default of ``--threshold``: :data:`semstore.duplicates.DEFAULT_THRESHOLD` (not imported,
#: so that ``semstore --help`` stays fast; a test checks that they agree).
DEFAULT_THRESHOLD = 0.90
#: Default of ``--neighbours``: :data:`semstore.duplicates.DEFAULT_NEIGHBOURS`.
DEFAULT_NEIGHBOURS = 10
#: Longest source URI shown in a table cell, and most ids / sources listed per group there.
_URI_CHARS = 48
_LISTED = 8


def duplicates(
    threshold: Annotated[
        float,
        typer.Option(
            "--threshold", "-t",
            help="Cosine of two items' decoded embeddings from which they are near-duplicates, in (0, 1]. "
            "Decoded cosines of copies sit below their float ones: with a CLIP model and the default 128-bit codec, "
            "0.9 groups resized, re-compressed and slightly cropped copies (and some very similar photos); "
            "raise it for stricter groups.",
        ),
    ] = DEFAULT_THRESHOLD,
    neighbours: Annotated[
        int, typer.Option("--neighbours", min=1, help="Nearest items each item is compared with.")
    ] = DEFAULT_NEIGHBOURS,
    limit: Annotated[int, typer.Option("--limit", "-n", min=0, help="Groups listed (0: all).")] = 20,
    no_progress: Annotated[bool, typer.Option("--no-progress", help="Hide the progress bar.")] = False,
    collection: CollectionOption = DEFAULT_COLLECTION,
    db: DbOption = None,
    data_dir: DataDirOption = None,
    json_output: JsonOption = False,
) -> None:
    """Find groups of near-duplicate items (resized, re-compressed, cropped copies) from their codes.

    Each item is compared with its nearest items; items whose decoded embeddings reach --threshold are grouped, transitively. Exact copies (same bytes) are already refused at ingest.

    JSON output is one object: threshold, total (groups found) and the first --limit groups with ids, source_uris, min_similarity and max_similarity.
    """
    from semstore.duplicates import check_threshold, find_duplicates, source_uris

    threshold = check_threshold(threshold)
    settings = build_settings(db=db, data_dir=data_dir)
    with open_database(settings, create=False) as database:
        target = database.collection(collection)
        index = target.index
        groups = [] if index is None else find_duplicates(index, threshold=threshold, neighbours=neighbours, progress=not no_progress)
        shown = groups if limit == 0 else groups[:limit]
        sources = source_uris(target, [i for group in shown for i in group.ids])
    if json_output:
        echo_json(
            {
                "threshold": threshold,
                "total": len(groups),
                "groups": [
                    {
                        "ids": list(group.ids),
                        "source_uris": [sources.get(i) for i in group.ids],
                        "min_similarity": group.min_similarity,
                        "max_similarity": group.max_similarity,
                    }
                    for group in shown
                ],
            }
        )
        return
    if not groups:
        typer.echo(f"no near-duplicates at threshold {threshold:g}")
        return
    rows = [
        (
            number,
            group.size,
            _listed([str(i) for i in group.ids]),
            _listed([_short(sources.get(i, "(deleted)")) for i in group.ids], "\n"),
            _similarity(group.min_similarity, group.max_similarity),
        )
        for number, group in enumerate(shown, 1)
    ]
    title = f"{len(groups)} groups at threshold {threshold:g}" + (f", first {len(shown)} shown" if len(shown) < len(groups) else "")
    print_table(title, ["group", "size", "ids", "sources", "similarity"], rows, numeric=["group", "size"])


def _short(uri: str) -> str:
    """``uri`` cut to its last ``_URI_CHARS`` characters (the end names the file)."""
    return uri if len(uri) <= _URI_CHARS else "..." + uri[-(_URI_CHARS - 3) :]


def _listed(values: list[str], separator: str = ", ") -> str:
    """The first few values and how many more there are."""
    text = separator.join(values[:_LISTED])
    return text + (f"{separator}(+{len(values) - _LISTED} more)" if len(values) > _LISTED else "")


def _similarity(low: float, high: float) -> str:
    return f"{low:.4f}" if f"{low:.4f}" == f"{high:.4f}" else f"{low:.4f}-{high:.4f}"
