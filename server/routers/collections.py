"""Collections: create, list, get (stats), delete; export and import; codec upload."""

from __future__ import annotations

import dataclasses
import os
import tempfile
from functools import partial
from typing import Annotated

import anyio
from fastapi import APIRouter, File, Form, Response, UploadFile, status
from fastapi.responses import FileResponse
from starlette.background import BackgroundTask

from semstore import transfer
from semstore.collection import Collection
from semstore.database import Database
from server.deps import NAME_PATTERN, CollectionDep, CollectionName, DatabaseDep, ReadAccess, StateDep, WriteAccess
from server.errors import COMMON_ERRORS
from server.schemas import CodecOut, CollectionCreate, CollectionList, CollectionOut, ImportOut
from server.uploads import read_uploads

router = APIRouter(prefix="/v1", tags=["collections"], responses=COMMON_ERRORS)


def collection_out(collection: Collection) -> CollectionOut:
    return CollectionOut(**dataclasses.asdict(collection.stats()))


@router.get("/collections", dependencies=[ReadAccess])
def list_collections(database: DatabaseDep) -> CollectionList:
    """Every collection with its item count and compression figures."""
    return CollectionList(collections=[collection_out(c) for c in database.collections()])


@router.post("/collections", status_code=status.HTTP_201_CREATED, dependencies=[WriteAccess])
async def create_collection(body: CollectionCreate, state: StateDep) -> CollectionOut:
    """Create an empty collection; its codec is trained on its first images unless ``codec`` names a stored one."""
    database = state.database.get()
    # Refused here, before any model loads: only the models this server allows, by registry tag.
    model, pretrained = state.model_policy.resolve(body.model, body.pretrained)
    created = await anyio.to_thread.run_sync(
        partial(_create, database, body.name, model, pretrained, body.codec), limiter=state.inference
    )
    return created


def _create(database: Database, name: str, model: str, pretrained: str | None, codec_hash: str | None) -> CollectionOut:
    codec = transfer.load_stored_codec(database, codec_hash) if codec_hash else None
    collection = database.create_collection(name, model=model, pretrained=pretrained, codec=codec)
    return collection_out(collection)


@router.get("/collections/{name}", dependencies=[ReadAccess])
def get_collection(collection: CollectionDep) -> CollectionOut:
    """A collection's items, bytes per item, bits per vector and codec configuration."""
    return collection_out(collection)


@router.delete("/collections/{name}", status_code=status.HTTP_204_NO_CONTENT, dependencies=[WriteAccess])
def delete_collection(name: CollectionName, database: DatabaseDep) -> Response:
    """Delete a collection, its items and its kept uploads."""
    database.delete_collection(name)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get(
    "/collections/{name}/export",
    dependencies=[ReadAccess],
    response_class=FileResponse,
    responses={200: {"content": {"application/zip": {"schema": {"type": "string", "format": "binary"}}}, "description": "A zip archive: manifest.json, codec.safetensors, items.jsonl."}},
)
async def export_collection(name: CollectionName, state: StateDep) -> FileResponse:
    """Download the collection as a zip archive (codec + codes + metadata as JSON Lines)."""
    database = state.database.get()
    handle, path = tempfile.mkstemp(prefix="semstore-export-", suffix=".zip")
    os.close(handle)
    try:
        await anyio.to_thread.run_sync(transfer.export_collection, database, name, path)
    except BaseException:
        os.unlink(path)
        raise
    return FileResponse(
        path,
        media_type="application/zip",
        filename=f"{name}.semstore.zip",
        background=BackgroundTask(os.unlink, path),
    )


@router.post("/collections/import", dependencies=[WriteAccess])
async def import_collection(
    state: StateDep,
    archive: Annotated[UploadFile, File(description="An archive from the export route.")],
    name: Annotated[str | None, Form(pattern=NAME_PATTERN, description="Target collection (default: the exported name).")] = None,
) -> ImportOut:
    """Load an exported archive: creates the collection or merges into one with the same codec."""
    database = state.database.get()
    summary = await anyio.to_thread.run_sync(
        partial(transfer.import_collection, database, archive.file, name=name, model_check=state.model_policy.check),
        limiter=state.inference,
    )
    return ImportOut(**dataclasses.asdict(summary))


@router.post("/codecs", status_code=status.HTTP_201_CREATED, dependencies=[WriteAccess], tags=["codecs"])
async def upload_codec(
    state: StateDep, file: Annotated[UploadFile, File(description="A codec file from `semstore train-codec`.")]
) -> CodecOut:
    """Store a trained codec; create collections with it by passing its ``content_hash`` as ``codec``."""
    ((_, data),) = await read_uploads([file], 1)
    codec = transfer.parse_codec(data)
    content_hash = await anyio.to_thread.run_sync(transfer.store_codec, state.database.get(), codec)
    return CodecOut(
        content_hash=content_hash,
        dim=codec.dim,
        num_subvectors=codec.num_subvectors,
        codebook_size=codec.codebook_size,
        bits_per_vector=codec.bits_per_vector,
    )
