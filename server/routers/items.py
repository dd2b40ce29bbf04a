"""Items: upload images, ingest server-side paths, get / patch / delete an item, thumbnails and originals."""

from __future__ import annotations

import base64
from functools import partial
from typing import Annotated

import anyio
import numpy as np
from fastapi import APIRouter, File, Form, Query, Response, UploadFile, status

from semstore.collection import Collection
from semstore.ingest import IngestReport
from semstore.ingest.roots import confine_paths
from semstore.storage import ItemNotFoundError
from semstore.thumbnails import MAX_THUMBNAIL_SIZE, image_media_type, make_thumbnail
from semstore.uploads import upload_uri
from server.deps import CollectionDep, ItemId, ReadAccess, StateDep, WriteAccess
from server.errors import COMMON_ERRORS, ApiError
from server.schemas import IngestedFile, IngestOut, ItemOut, MetadataPatch, PathIngest
from server.uploads import check_request_pixels, parse_metadata_field, read_uploads
from server.state import AppState

router = APIRouter(prefix="/v1/collections/{name}/items", tags=["items"], responses=COMMON_ERRORS)

#: Most files one path-ingest request may add (bigger folders: use the CLI).
MAX_PATH_INGEST_FILES = 10_000


@router.post("", dependencies=[WriteAccess])
async def upload_items(
    collection: CollectionDep,
    state: StateDep,
    files: Annotated[list[UploadFile], File(description="Image files (JPEG, PNG, WebP, GIF, BMP, TIFF).")],
    metadata: Annotated[str | None, Form(description="JSON object of metadata given to every image.")] = None,
) -> IngestOut:
    """Add uploaded images. A bad image is reported and skipped; 422 if none could be stored."""
    meta = parse_metadata_field(metadata)
    settings = state.settings
    named = await read_uploads(files, settings.max_images_per_request)
    edge = await anyio.to_thread.run_sync(lambda: collection.encoder.image_edge, limiter=state.inference)
    await anyio.to_thread.run_sync(
        partial(
            check_request_pixels,
            named,
            max_pixels=settings.max_request_pixels,
            max_image_pixels=settings.max_image_pixels,
            min_edge=edge,
        )
    )
    report = await state.ingest.add_images(collection, named, meta)
    sources = [upload_uri(name, data) for name, data in named]
    labels = [name for name, _ in named]
    return _ingest_out(report, sources, labels)


@router.post("/ingest", dependencies=[WriteAccess])
async def ingest_paths(collection: CollectionDep, state: StateDep, body: PathIngest) -> IngestOut:
    """Add image files and folders that already lie on the server, under an allowed root only."""
    confined = await anyio.to_thread.run_sync(
        partial(confine_paths, body.paths, state.settings.allowed_ingest_roots, max_files=MAX_PATH_INGEST_FILES)
    )
    if confined.files:
        report = await state.ingest.add_paths(collection, confined.files, body.metadata)
    else:
        report = IngestReport()
    report.failed.extend(confined.refused)
    sources = [str(path) for path in confined.files] + [failure.source for failure in confined.refused]
    return _ingest_out(report, sources, sources)


def _ingest_out(report: IngestReport, sources: list[str], labels: list[str]) -> IngestOut:
    added = dict(report.added_items)
    failed = {failure.source: failure.reason for failure in report.failed}
    files = []
    for source, label in zip(sources, labels):
        if source in failed:
            files.append(IngestedFile(source=label, status="failed", reason=failed[source]))
        elif source in added:
            files.append(IngestedFile(source=label, status="added", id=added.pop(source)))
        else:
            files.append(IngestedFile(source=label, status="skipped"))
    # Counted from the per-file view: a repeat of a bad file fails like the file it repeats.
    counts = {state: sum(1 for entry in files if entry.status == state) for state in ("added", "skipped", "failed")}
    out = IngestOut(
        **counts,
        files=files,
        codec_trained=report.codec_trained,
        seconds=round(report.seconds, 4),
    )
    if counts["failed"] and not counts["added"] and not counts["skipped"]:
        raise ApiError(422, "bad_images", "none of the images could be stored", out.model_dump(mode="json"))
    return out


@router.get("/{item_id}", dependencies=[ReadAccess])
def get_item(
    collection: CollectionDep,
    item_id: ItemId,
    codes: Annotated[bool, Query(description="Include the codes (base64 of little-endian integers).")] = False,
    embedding: Annotated[bool, Query(description="Include the embedding decoded from the codes.")] = False,
) -> ItemOut:
    """An item's source, metadata and size; its codes and decoded embedding on request."""
    return _item_out(collection, item_id, codes=codes, embedding=embedding)


def _item_out(collection: Collection, item_id: int, *, codes: bool = False, embedding: bool = False) -> ItemOut:
    hit = collection.get(item_id)
    out = ItemOut(id=hit.id, source_uri=hit.source_uri, metadata=hit.metadata, width=hit.width, height=hit.height, exif=hit.exif)
    if codes or embedding:
        stored = collection.codes(item_id)
        if codes:
            little = stored.astype(stored.dtype.newbyteorder("<"))
            out.codes = base64.b64encode(little.tobytes()).decode("ascii")
            out.code_dtype = str(stored.dtype)
        if embedding:
            codec = collection.codec
            assert codec is not None  # an item exists, so the collection has a codec
            out.embedding = np.asarray(codec.decode(stored[None, :])[0], dtype=np.float64).tolist()
    return out


@router.patch("/{item_id}", dependencies=[WriteAccess])
def patch_item(collection: CollectionDep, item_id: ItemId, body: MetadataPatch) -> ItemOut:
    """Merge metadata into an item's (or replace it with ``replace: true``)."""
    collection.update_metadata(item_id, body.metadata, replace=body.replace)
    return _item_out(collection, item_id)


@router.delete("/{item_id}", status_code=status.HTTP_204_NO_CONTENT, dependencies=[WriteAccess])
def delete_item(collection: CollectionDep, item_id: ItemId) -> Response:
    """Delete an item (and its kept upload)."""
    if collection.delete([item_id]) == 0:
        raise ItemNotFoundError(f"no item {item_id} in collection {collection.name!r}")
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get(
    "/{item_id}/thumbnail",
    dependencies=[ReadAccess],
    response_class=Response,
    responses={200: {"content": {"image/jpeg": {"schema": {"type": "string", "format": "binary"}}}, "description": "A JPEG preview."}},
)
async def thumbnail(
    collection: CollectionDep,
    item_id: ItemId,
    state: StateDep,
    size: Annotated[int, Query(ge=16, le=MAX_THUMBNAIL_SIZE, description="Longest edge in pixels.")] = 256,
) -> Response:
    """A JPEG preview of the item's own source image (never a path from the request).

    Only kept uploads and files under the server's ``allowed_ingest_roots`` and
    ``source_roots`` are read, at most ``max_upload_bytes`` of them.
    """
    settings = state.settings
    data = await _source_bytes(collection, item_id, state)
    jpeg = await anyio.to_thread.run_sync(
        partial(
            make_thumbnail,
            data,
            size=size,
            max_pixels=settings.max_image_pixels,
            budget=collection.database.pixel_budget,
        ),
        limiter=state.inference,
    )
    return Response(jpeg, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=3600"})


@router.get(
    "/{item_id}/original",
    dependencies=[ReadAccess],
    response_class=Response,
    responses={200: {"content": {"image/*": {"schema": {"type": "string", "format": "binary"}}}, "description": "The original image file."}},
)
async def original(collection: CollectionDep, item_id: ItemId, state: StateDep) -> Response:
    """The item's own source image, byte for byte, with its media type (never a path from the request).

    Read under the same rules as the thumbnail: kept uploads and files under the server's
    ``allowed_ingest_roots`` and ``source_roots`` only, at most ``max_upload_bytes``; served
    only if it still is an image of an ingest format.
    """
    data = await _source_bytes(collection, item_id, state)
    media_type = await anyio.to_thread.run_sync(image_media_type, data)
    headers = {"Cache-Control": "private, max-age=3600", "X-Content-Type-Options": "nosniff", "Content-Disposition": "inline"}
    return Response(data, media_type=media_type, headers=headers)


async def _source_bytes(collection: Collection, item_id: int, state: AppState) -> bytes:
    """The item's source bytes, read under the server's roots and size limit (in a worker thread)."""
    settings = state.settings
    read = partial(
        collection.source_bytes, item_id, max_bytes=settings.max_upload_bytes, allowed_roots=settings.readable_source_roots()
    )
    return await anyio.to_thread.run_sync(read)
