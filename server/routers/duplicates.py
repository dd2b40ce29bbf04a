"""Near-duplicate groups of a collection, found from its codes alone (see :mod:`semstore.duplicates`)."""

from __future__ import annotations

from functools import partial
from typing import Annotated

import anyio
from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from semstore.collection import Collection
from semstore.duplicates import (
    DEFAULT_NEIGHBOURS,
    DEFAULT_THRESHOLD,
    DuplicateGroup,
    find_duplicates,
    source_uris,
)
from server.deps import CollectionDep, ReadAccess, StateDep
from server.duplicate_jobs import DuplicateJobs, DuplicatesRunning
from server.errors import COMMON_ERRORS, ApiError
from server.uploads import check_page_size

router = APIRouter(prefix="/v1/collections/{name}", tags=["duplicates"], responses=COMMON_ERRORS)

#: Groups per response when the request does not say (capped by the server's max page size).
DEFAULT_DUPLICATES_PAGE = 100
#: Most nearest items a request may compare each item with.
MAX_NEIGHBOURS = 100


class DuplicateGroupOut(BaseModel):
    """Items that are near-duplicates of each other, directly or through other members."""

    ids: list[int] = Field(description="Item ids, ascending.")
    source_uris: list[str | None] = Field(description="Each item's source URI (null: deleted since).")
    min_similarity: float = Field(description="Lowest decoded cosine among the pairs that joined the group.")
    max_similarity: float = Field(description="Highest decoded cosine among the pairs that joined the group.")


class DuplicatesOut(BaseModel):
    """The near-duplicate groups of a collection, ordered by their smallest id."""

    threshold: float
    total: int = Field(description="Groups found (``groups`` holds the first ``limit``).")
    limit: int
    groups: list[DuplicateGroupOut]


@router.get("/duplicates", dependencies=[ReadAccess])
async def duplicates(
    collection: CollectionDep,
    state: StateDep,
    threshold: Annotated[
        float,
        Query(gt=0, le=1, allow_inf_nan=False, description="Cosine of two items' decoded embeddings from which they "
              "are near-duplicates, in (0, 1]. With a CLIP model and the default 128-bit codec, 0.9 groups resized, "
              "re-compressed and slightly cropped copies (and some very similar photos); raise it for stricter groups."),
    ] = DEFAULT_THRESHOLD,
    limit: Annotated[int | None, Query(ge=1, description="Most groups returned.")] = None,
    neighbours: Annotated[int, Query(ge=1, le=MAX_NEIGHBOURS, description="Nearest items each item is compared with.")] = DEFAULT_NEIGHBOURS,
) -> DuplicatesOut:
    """Groups of near-duplicate items (resized, re-compressed, slightly cropped copies) from their codes.

    Every item is compared with its nearest items in the collection's index (a self-join
    costing about ``N * sqrt(N)`` code look-ups once the collection is large); items whose
    decoded embeddings reach ``threshold`` are grouped transitively. Exact copies are
    already refused at ingest.
    """
    page = min(DEFAULT_DUPLICATES_PAGE, state.settings.max_page_size) if limit is None else limit
    check_page_size("limit", page, state.settings.max_page_size)
    try:
        return await anyio.to_thread.run_sync(
            partial(_duplicates, collection, state.duplicates, threshold, page, neighbours), limiter=state.inference
        )
    except DuplicatesRunning:
        raise ApiError(
            409, "duplicates_running",
            f"a near-duplicate search of {collection.name!r} is already running; retry when it has finished",
            headers={"Retry-After": "30"},
        ) from None  # fmt: skip


def _duplicates(collection: Collection, jobs: DuplicateJobs, threshold: float, limit: int, neighbours: int) -> DuplicatesOut:
    index = collection.index
    revision = collection.index_service.revision  # (the state the index was just brought to)

    def join() -> list[DuplicateGroup]:
        return [] if index is None else find_duplicates(index, threshold=threshold, neighbours=neighbours)

    # the answer of an unchanged collection is kept: a join takes minutes at 10^6 items
    groups = jobs.run(collection.name, (collection.id, revision, threshold, neighbours), join)
    shown = groups[:limit]
    sources = source_uris(collection, [i for group in shown for i in group.ids])
    return DuplicatesOut(
        threshold=threshold,
        total=len(groups),
        limit=limit,
        groups=[
            DuplicateGroupOut(
                ids=list(group.ids),
                source_uris=[sources.get(i) for i in group.ids],
                min_similarity=group.min_similarity,
                max_similarity=group.max_similarity,
            )
            for group in shown
        ],
    )
