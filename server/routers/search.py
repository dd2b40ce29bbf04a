"""Search by text, by an uploaded image or by a stored item; zero-shot classification."""

from __future__ import annotations

import time
from functools import partial
from typing import Annotated, Any

import anyio
import numpy as np
from fastapi import APIRouter, File, Form, Response, UploadFile

from semstore.collection import Collection, QueryError
from server.deps import CollectionDep, ReadAccess, StateDep
from server.errors import COMMON_ERRORS
from server.schemas import (
    ClassifyOut,
    ClassifyRequest,
    Hit,
    LabelledItem,
    SearchOptions,
    SearchOut,
    SearchRequest,
    Timing,
)
from server.uploads import check_page_size, parse_where_field, read_uploads

router = APIRouter(prefix="/v1/collections/{name}", tags=["search"], responses=COMMON_ERRORS)

#: Items per classification page when the request does not say.
DEFAULT_CLASSIFY_PAGE = 100


#: Response header of a partial answer (a sharded deployment's shards missing): ``missing=1,2``.
PARTIAL_HEADER = "X-Semstore-Partial"


@router.post("/search", dependencies=[ReadAccess])
async def search(collection: CollectionDep, state: StateDep, body: SearchRequest, response: Response) -> SearchOut:
    """Top-k items for a ``text`` query or a stored item (``item_id``: "more like this").

    With a sharded deployment, shards that do not answer in time are left out: ``partial``
    is true, ``missing_shards`` names them, and the ``X-Semstore-Partial`` header is set.
    """
    check_page_size("k", body.k, state.settings.max_page_size)
    if (body.text is None) == (body.item_id is None):
        raise QueryError("give exactly one of text or item_id")
    started = time.perf_counter()
    if body.text is not None:
        if not body.text.strip():
            raise QueryError("the text query is empty")
        encoder = await anyio.to_thread.run_sync(lambda: collection.encoder)
        # Concurrent text queries are embedded together (see server.batching).
        query = await state.text_batcher.encode(encoder, body.text)
        kind = "text"
    else:
        query = await anyio.to_thread.run_sync(partial(collection.embed_query, item=body.item_id))
        kind = "item"
    return _flag_partial(response, await anyio.to_thread.run_sync(partial(_search, collection, query, started, body, kind)))


@router.post("/search/image", dependencies=[ReadAccess])
async def search_by_image(
    collection: CollectionDep,
    state: StateDep,
    response: Response,
    image: Annotated[UploadFile, File(description="The query image.")],
    k: Annotated[int, Form(ge=1)] = 10,
    min_score: Annotated[float | None, Form(allow_inf_nan=False)] = None,
    where: Annotated[str | None, Form(description="JSON object: metadata every hit must have.")] = None,
    rerank: Annotated[int, Form(ge=0, le=10_000)] = 100,
) -> SearchOut:
    """Top-k items for an uploaded image (same options as the JSON search, as form fields)."""
    check_page_size("k", k, state.settings.max_page_size)
    options = SearchOptions(k=k, min_score=min_score, where=parse_where_field(where), rerank=rerank)
    ((_, data),) = await read_uploads([image], 1)
    started = time.perf_counter()
    query = await anyio.to_thread.run_sync(partial(collection.embed_query, image=data), limiter=state.inference)
    return _flag_partial(response, await anyio.to_thread.run_sync(partial(_search, collection, query, started, options, "image")))


def _flag_partial(response: Response, out: SearchOut) -> SearchOut:
    if out.partial:
        response.headers[PARTIAL_HEADER] = f"missing={','.join(map(str, out.missing_shards))}"
    return out


def _search(collection: Collection, query: np.ndarray, started: float, options: SearchOptions, kind: Any) -> SearchOut:
    embedded = time.perf_counter()
    result = collection.search_result(
        query, k=options.k, where=options.where, min_score=options.min_score, rerank=options.rerank or None
    )
    hits = result.hits
    done = time.perf_counter()
    return SearchOut(
        hits=[
            Hit(id=h.id, score=h.score, source_uri=h.source_uri, metadata=h.metadata, width=h.width, height=h.height, exif=h.exif)
            for h in hits
        ],
        query=kind,
        timing=Timing(
            embed_ms=round((embedded - started) * 1000, 3),
            search_ms=round((done - embedded) * 1000, 3),
            total_ms=round((done - started) * 1000, 3),
        ),
        partial=result.partial,
        missing_shards=result.missing_shards,
    )


@router.post("/classify", dependencies=[ReadAccess], tags=["classify"])
async def classify(collection: CollectionDep, state: StateDep, body: ClassifyRequest) -> ClassifyOut:
    """Zero-shot label of every item from its codes alone: a page of items and the count per label."""
    limit = min(DEFAULT_CLASSIFY_PAGE, state.settings.max_page_size) if body.limit is None else body.limit
    check_page_size("limit", limit, state.settings.max_page_size)
    result = await anyio.to_thread.run_sync(
        partial(collection.classify, body.labels, template=body.template), limiter=state.inference
    )
    page = slice(body.offset, body.offset + limit)
    ids, labels, scores = result.ids[page], result.label_index[page], result.scores[page]
    return ClassifyOut(
        labels=result.labels,
        counts=result.counts(),
        total=len(result),
        offset=body.offset,
        limit=limit,
        items=[
            LabelledItem(id=int(i), label=result.labels[int(j)], score=float(s)) for i, j, s in zip(ids, labels, scores)
        ],
    )
