"""Read-only queries over a collection: search and zero-shot classify."""

from pathlib import Path
from typing import Annotated

import typer

from semstore.cli.errors import CliError
from semstore.cli.loading import load_encoder
from semstore.cli.params import (
    DEFAULT_COLLECTION,
    CollectionOption,
    DataDirOption,
    DbOption,
    JsonOption,
    build_settings,
    open_database,
    parse_where,
    photo_filters,
)
from semstore.cli.render import compact, echo_json, print_table


def search(
    text: Annotated[str | None, typer.Argument(help="Text query.", show_default=False)] = None,
    image: Annotated[Path | None, typer.Option("--image", help="Query by an image file.")] = None,
    item: Annotated[int | None, typer.Option("--item", help="Query by a stored item's id.")] = None,
    k: Annotated[int, typer.Option("-k", "--top-k", min=1, help="Number of results.")] = 10,
    where: Annotated[
        list[str] | None,
        typer.Option(
            "--where", "-w",
            help="Metadata filter KEY=VALUE, or KEY!=, KEY>, KEY>=, KEY<, KEY<= VALUE (repeatable; all must hold).",
        ),
    ] = None,
    filter_json: Annotated[
        str | None,
        typer.Option("--filter", help='Metadata filter as JSON, e.g. \'{"tag": {"$in": ["cat", "dog"]}}\' (with --where: both hold).'),
    ] = None,
    taken_after: Annotated[
        str | None, typer.Option("--taken-after", help="Photos taken on or after this local date/time (EXIF), e.g. 2024-05-01.")
    ] = None,
    taken_before: Annotated[
        str | None, typer.Option("--taken-before", help="Photos taken before this local date/time (EXIF), e.g. 2024-06-01.")
    ] = None,
    near: Annotated[
        str | None, typer.Option("--near", help="Photos whose GPS position (EXIF) is within KM of LAT,LON, e.g. 48.86,2.35,5.")
    ] = None,
    camera: Annotated[str | None, typer.Option("--camera", help="Photos taken with this camera model (EXIF).")] = None,
    min_score: Annotated[float | None, typer.Option("--min-score", help="Drop hits scoring below this cosine.")] = None,
    rerank: Annotated[
        int | None,
        typer.Option("--rerank", min=0, help="ADC candidates re-scored exactly (0: raw ADC scores), default: the library's."),
    ] = None,
    collection: CollectionOption = DEFAULT_COLLECTION,
    db: DbOption = None,
    data_dir: DataDirOption = None,
    json_output: JsonOption = False,
) -> None:
    """Find the items nearest to a text, an image (--image) or a stored item (--item).

    JSON output is one object per line: rank, id, score, source, metadata, width, height.
    """
    filters = photo_filters(
        parse_where(where, filter_json), taken_after=taken_after, taken_before=taken_before, near=near, camera=camera
    )
    options: dict[str, object] = {}
    if rerank is not None:
        options["rerank"] = rerank or None
    settings = build_settings(db=db, data_dir=data_dir)
    with open_database(settings, create=False) as database:
        target = database.collection(collection)
        if _needs_model(text, image, item):
            load_encoder(target)
        hits = target.search(text, image=image, item=item, k=k, where=filters or None, min_score=min_score, **options)
    if json_output:
        for rank, hit in enumerate(hits, 1):
            echo_json(
                {
                    "rank": rank,
                    "id": hit.id,
                    "score": hit.score,
                    "source": hit.source_uri,
                    "metadata": hit.metadata,
                    "width": hit.width,
                    "height": hit.height,
                    "exif": hit.exif,
                }
            )
        return
    if not hits:
        typer.echo("no results")
        return
    rows = [(rank, f"{hit.score:.4f}", hit.id, hit.source_uri, compact(hit.metadata)) for rank, hit in enumerate(hits, 1)]
    columns = ["rank", "score", "id", "source", "metadata"]
    if any(hit.exif for hit in hits):
        columns.append("taken / camera")
        rows = [(*row, _photo_facts(hit.exif)) for row, hit in zip(rows, hits)]
    print_table(None, columns, rows, numeric=["rank", "score", "id"])


def _photo_facts(exif: dict[str, object]) -> str:
    camera = " ".join(str(exif[k]) for k in ("make", "model") if exif.get(k))
    return " / ".join(part for part in (str(exif.get("taken_at") or ""), camera) if part) or "-"


def _needs_model(text: str | None, image: Path | None, item: int | None) -> bool:
    """Whether a valid query will embed something (an --item query decodes stored codes; bad
    queries are refused by the library before any model would be needed)."""
    if sum(q is not None for q in (text, image, item)) != 1:
        return False
    return image is not None or bool(text and text.strip())


def classify(
    labels: Annotated[str | None, typer.Option("--labels", help="Comma-separated labels, e.g. cat,dog,car.")] = None,
    label: Annotated[list[str] | None, typer.Option("--label", "-l", help="One label (repeatable).")] = None,
    template: Annotated[str, typer.Option("--template", help="Prompt for each label; {} is replaced by it.")] = "a photo of a {}.",
    limit: Annotated[int, typer.Option("--limit", "-n", min=0, help="Items listed (0: all).")] = 20,
    collection: CollectionOption = DEFAULT_COLLECTION,
    db: DbOption = None,
    data_dir: DataDirOption = None,
    json_output: JsonOption = False,
) -> None:
    """Zero-shot classification of every item from its codes: per-item labels and counts.

    JSON output is one object: labels, counts, total, and the first --limit items.
    """
    names = [part.strip() for part in (labels or "").split(",") if part.strip()]
    names += [part.strip() for part in label or () if part.strip()]
    if not names:
        raise CliError("give labels with --labels a,b,c or repeated --label")
    if "{}" not in template:
        raise CliError(f"--template must contain {{}} where the label goes, got {template!r}")
    try:
        template.format("label")
    except (IndexError, KeyError, ValueError) as exc:
        raise CliError(f"--template {template!r} is not a valid format string: only {{}} may be used ({exc!r})") from exc
    settings = build_settings(db=db, data_dir=data_dir)
    with open_database(settings, create=False) as database:
        target = database.collection(collection)
        load_encoder(target)
        result = target.classify(names, template=template)
        items = result.items()
        shown = items if limit == 0 else items[:limit]
        sources = {item_id: target.get(item_id).source_uri for item_id, _, _ in shown}
    counts = result.counts()
    if json_output:
        echo_json(
            {
                "labels": result.labels,
                "counts": counts,
                "total": len(result),
                "items": [
                    {"id": item_id, "label": name, "score": score, "source": sources[item_id]}
                    for item_id, name, score in shown
                ],
            }
        )
        return
    if shown:
        title = f"first {len(shown)} of {len(items)} items" if len(shown) < len(items) else f"{len(items)} items"
        rows = [(item_id, name, f"{score:.4f}", sources[item_id]) for item_id, name, score in shown]
        print_table(title, ["id", "label", "score", "source"], rows, numeric=["id", "score"])
    total = len(result)
    count_rows = [(name, count, f"{count / total:.0%}" if total else "-") for name, count in counts.items()]
    print_table("counts", ["label", "items", "share"], count_rows, numeric=["items", "share"])
