"""Moving collections and codecs between databases and machines without re-encoding images.

An export is a zip archive holding:

* ``manifest.json``: format and version (:data:`FORMAT_VERSION`), the collection's name, model, pretrained tag,
  embedding width, codec hash and item count;
* ``codec.safetensors``: the codec (:meth:`PQVAECodec.to_bytes`);
* ``items.jsonl``: one JSON object per item, in id order: ``source_uri``, ``content_hash``
  (32 hex characters; archives written before schema 0002 hold the full 64-hex SHA-256,
  which an import cuts to its first 32), ``width``, ``height``, ``metadata`` and ``codes``
  (base64 of the little-endian codes).

Importing into a database creates the collection (or merges into an existing one that
uses the same codec and model); items whose content hash is already stored are skipped.
The codes are comparable across SQLite and PostgreSQL because they are the same bytes.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import re
import zipfile
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import numpy as np

from semstore import __version__, storage
from semstore.codec import PQVAECodec
from semstore.encoders import EncoderError
from semstore.names import InvalidNameError, check_collection_name
from semstore.storage.repository import MAX_SOURCE_URI_CHARS
from semstore.storage.types import DIGEST_HEX_CHARS
from semstore.uploads import is_upload_uri
from semstore.validation import InvalidMetadataError, InvalidTextError, check_metadata, check_text

if TYPE_CHECKING:
    from semstore.database import Database

FORMAT = "semstore-collection"
#: Version written by exports. 2: 32-hex content hashes (schema 0002); an older semstore
#: must refuse these archives rather than store hashes its own 64-hex ones never match.
FORMAT_VERSION = 2
#: Versions an import reads (1 holds 64-hex hashes, cut to 32 on import).
READABLE_VERSIONS = (1, 2)

MANIFEST = "manifest.json"
CODEC = "codec.safetensors"
ITEMS = "items.jsonl"

_MAX_MANIFEST_BYTES = 1 << 20
_MAX_CODEC_BYTES = 512 << 20
_MAX_LINE_BYTES = 1 << 20
_IMPORT_BATCH = 1000
_EXPORT_CHUNK = 900
# A content hash in items.jsonl: 32 hex (schema 0002 on), or the full SHA-256 of older exports.
_ITEM_DIGEST = re.compile(r"[0-9a-fA-F]{32}|[0-9a-fA-F]{64}")


class TransferError(ValueError):
    """An archive or codec file is malformed, or does not fit the target collection."""


@dataclass(frozen=True)
class ExportSummary:
    """What an export wrote."""

    name: str
    items: int
    codec_hash: str | None


@dataclass(frozen=True)
class ImportSummary:
    """What an import did: the target collection, items added and skipped (already stored)."""

    name: str
    created: bool
    added: int
    skipped: int
    codec_hash: str


# --------------------------------------------------------------------------- codecs


def parse_codec(data: bytes) -> PQVAECodec:
    """A codec from the bytes of a codec file; raises :class:`TransferError` if they are not one."""
    try:
        return PQVAECodec.from_bytes(data)
    except Exception as exc:  # an untrusted file can break the loader in many ways
        raise TransferError(f"not a valid semstore codec file: {exc}") from exc


def store_codec(db: Database, codec: PQVAECodec) -> str:
    """Save a trained codec in the database (idempotent); returns its content hash."""
    if not codec.is_fitted:
        raise TransferError("the codec is not trained")
    with storage.transaction(db.sessions) as session:
        row = storage.save_codec(
            session, content_hash=codec.content_hash, config=codec.config.to_dict(), weights=codec.to_bytes()
        )
        return row.content_hash


def load_stored_codec(db: Database, content_hash: str) -> PQVAECodec:
    """The codec stored under ``content_hash``; raises ``CodecNotFoundError``."""
    with db.sessions() as session:
        row = storage.get_codec(session, content_hash=content_hash)
        return PQVAECodec.from_bytes(row.weights)


# --------------------------------------------------------------------------- export


def export_collection(db: Database, name: str, destination: str | Path | IO[bytes]) -> ExportSummary:
    """Write collection ``name`` (codec, codes, metadata) as a zip archive to ``destination``.

    The items are read in one database session, so a concurrent writer does not tear the
    export. Raises ``CollectionNotFoundError``.
    """
    collection = db.collection(name)
    codec = collection.codec
    with db.sessions() as session:
        record = storage.get_collection(session, name=name)
        manifest: dict[str, Any] = {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "semstore_version": __version__,
            "name": record.name,
            "model": record.model,
            "pretrained": record.pretrained,
            "dim": record.dim,
            "codec_hash": codec.content_hash if codec else None,
            "num_subvectors": codec.num_subvectors if codec else None,
            "code_dtype": str(codec.code_dtype) if codec else None,
        }
        if codec is None:
            ids = np.empty(0, dtype=np.int64)
        else:
            ids, _codes = storage.load_codes(
                session, collection_id=record.id, num_subvectors=codec.num_subvectors, dtype=codec.code_dtype
            )
        manifest["items"] = int(ids.size)
        with zipfile.ZipFile(destination, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            archive.writestr(MANIFEST, json.dumps(manifest, indent=2, sort_keys=True))
            if codec is not None:
                archive.writestr(CODEC, codec.to_bytes())
            with archive.open(ITEMS, "w", force_zip64=True) as raw:
                # backslashreplace: a lone surrogate stored before text was checked is written as its
                # JSON escape (the import then refuses that line) instead of failing the export.
                out = io.TextIOWrapper(raw, encoding="utf-8", errors="backslashreplace", newline="\n")
                for start in range(0, ids.size, _EXPORT_CHUNK):
                    chunk = ids[start : start + _EXPORT_CHUNK].tolist()
                    for row in storage.get_items(session, collection_id=record.id, ids=chunk):
                        out.write(json.dumps(_item_line(row), ensure_ascii=False, sort_keys=True) + "\n")
                out.flush()
                out.detach()
    return ExportSummary(name=name, items=int(ids.size), codec_hash=manifest["codec_hash"])


def _item_line(row: storage.Item) -> dict[str, Any]:
    return {
        "source_uri": row.source_uri,
        "content_hash": row.content_hash,
        "width": row.width,
        "height": row.height,
        "metadata": dict(row.metadata_ or {}),
        "codes": base64.b64encode(row.codes).decode("ascii"),
    }


# --------------------------------------------------------------------------- import


ModelCheck = Callable[[str, "str | None"], None]


def import_collection(
    db: Database, source: str | Path | IO[bytes], *, name: str | None = None, model_check: ModelCheck | None = None
) -> ImportSummary:
    """Load an archive written by :func:`export_collection` into collection ``name``.

    ``name`` defaults to the exported collection's name. A missing collection is created
    with the archive's model and codec; an existing one must use the same model and codec
    (or have no codec yet). Items already stored (same content hash) are skipped, so an
    interrupted import into an existing collection can simply be run again; a collection
    created by a failed import is deleted. ``model_check(model, pretrained)`` (e.g. a
    server's :class:`~semstore.encoders.ModelPolicy`) may refuse the archive's model
    before any model is loaded, by raising.

    Every item is validated like an ingested one (source URI: an ``upload://`` URI or an
    absolute path, storable text; metadata: see :func:`semstore.validation.check_metadata`).

    Raises:
        TransferError: the archive is malformed or does not fit the target collection.
    """
    try:
        archive = zipfile.ZipFile(source)
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise TransferError(f"not a semstore export (zip) archive: {exc}") from exc
    with archive:
        manifest = _read_manifest(archive)
        if manifest["codec_hash"] is None:
            raise TransferError("the archive holds an empty collection without a codec: nothing to import")
        codec = parse_codec(_read_member(archive, CODEC, _MAX_CODEC_BYTES))
        if codec.content_hash != manifest["codec_hash"]:
            raise TransferError("the archive's codec does not match its manifest")
        target = name or manifest["name"]
        try:
            check_collection_name(target)
        except InvalidNameError as exc:
            raise TransferError(str(exc)) from None
        if model_check is not None:
            model_check(manifest["model"], manifest.get("pretrained"))
        collection_id, codec_id, created = _target_collection(db, target, manifest, codec)
        added = skipped = 0
        try:
            for batch in _read_items(archive, codec):
                batch_added, batch_skipped = _insert(db, collection_id, codec_id, batch)
                added += batch_added
                skipped += batch_skipped
        except BaseException:
            if created:  # a failed import leaves no half-filled new collection behind
                db.delete_collection(target)
            raise
    return ImportSummary(name=target, created=created, added=added, skipped=skipped, codec_hash=codec.content_hash)


def _read_member(archive: zipfile.ZipFile, member: str, limit: int) -> bytes:
    try:
        info = archive.getinfo(member)
    except KeyError:
        raise TransferError(f"the archive lacks {member}") from None
    if info.file_size > limit:
        raise TransferError(f"{member} is too large ({info.file_size} bytes)")
    try:
        with archive.open(info) as handle:
            data = handle.read(limit + 1)
    except (zipfile.BadZipFile, OSError, EOFError, ValueError, NotImplementedError) as exc:
        raise TransferError(f"cannot read {member} from the archive: {exc}") from exc
    if len(data) > limit:
        raise TransferError(f"{member} is too large")
    return data


def _read_manifest(archive: zipfile.ZipFile) -> dict[str, Any]:
    try:
        manifest = json.loads(_read_member(archive, MANIFEST, _MAX_MANIFEST_BYTES))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise TransferError(f"{MANIFEST} is not valid JSON: {exc}") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise TransferError("not a semstore collection export (unknown manifest format)")
    if manifest.get("version") not in READABLE_VERSIONS:
        raise TransferError(
            f"unsupported export version {manifest.get('version')!r} (this semstore reads {list(READABLE_VERSIONS)})"
        )
    expected = {"name": str, "model": str, "dim": int}
    for key, kind in expected.items():
        if not isinstance(manifest.get(key), kind):
            raise TransferError(f"{MANIFEST}: {key!r} is missing or not a {kind.__name__}")
    if manifest.get("pretrained") is not None and not isinstance(manifest["pretrained"], str):
        raise TransferError(f"{MANIFEST}: 'pretrained' must be a string or null")
    if manifest.get("codec_hash") is not None and not isinstance(manifest["codec_hash"], str):
        raise TransferError(f"{MANIFEST}: 'codec_hash' must be a string or null")
    manifest.setdefault("codec_hash", None)
    return manifest


def _target_collection(
    db: Database, name: str, manifest: Mapping[str, Any], codec: PQVAECodec
) -> tuple[int, int, bool]:
    """``(collection id, codec id, created)`` of the collection the items go into."""
    if codec.dim != manifest["dim"]:
        raise TransferError(f"the codec expects {codec.dim}-d embeddings but the manifest says {manifest['dim']}")
    try:
        existing = db.collection(name)
    except storage.CollectionNotFoundError:
        try:
            db.create_collection(name, model=manifest["model"], pretrained=manifest.get("pretrained"), codec=codec)
        except storage.CollectionExistsError:
            raise
        except (ValueError, EncoderError) as exc:  # unknown model or tag, codec of another width, ...
            raise TransferError(f"cannot create collection {name!r} for this archive: {exc}") from exc
        with db.sessions() as session:
            record = storage.get_collection(session, name=name)
            assert record.codec_id is not None
            return record.id, record.codec_id, True
    if existing.model != manifest["model"] or existing.dim != manifest["dim"]:
        raise TransferError(
            f"collection {name!r} embeds with {existing.model} ({existing.dim}-d), "
            f"the archive with {manifest['model']} ({manifest['dim']}-d)"
        )
    current = existing.codec
    if current is not None and current.content_hash != codec.content_hash:
        raise TransferError(
            f"collection {name!r} uses codec {current.content_hash[:12]}, the archive {codec.content_hash[:12]}: "
            "codes of different codecs are not comparable"
        )
    with storage.transaction(db.sessions) as session:
        record = storage.get_collection(session, name=name)
        if record.codec_id is None:
            row = storage.save_codec(
                session, content_hash=codec.content_hash, config=codec.config.to_dict(), weights=codec.to_bytes()
            )
            record = storage.set_collection_codec(session, collection_id=record.id, codec_id=row.id)
        assert record.codec_id is not None
        return record.id, record.codec_id, False


def _read_items(archive: zipfile.ZipFile, codec: PQVAECodec) -> Iterator[list[storage.NewItem]]:
    """Validated items of ``items.jsonl`` in batches (``codec_id`` 0: set on insert)."""
    row_bytes = codec.num_subvectors * codec.code_dtype.itemsize
    code_dtype = codec.code_dtype.newbyteorder("<")
    try:
        handle = archive.open(ITEMS)
    except KeyError:
        raise TransferError(f"the archive lacks {ITEMS}") from None
    batch: list[storage.NewItem] = []
    with handle:
        number = 0
        while True:
            try:
                line = handle.readline(_MAX_LINE_BYTES + 1)
            except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:
                raise TransferError(f"{ITEMS}: cannot read line {number + 1}: {exc}") from exc
            if not line:
                break
            number += 1
            if len(line) > _MAX_LINE_BYTES:
                raise TransferError(f"{ITEMS} line {number} is longer than {_MAX_LINE_BYTES} bytes")
            if not line.strip():
                continue
            batch.append(_parse_item(line, number, row_bytes))
            if len(batch) >= _IMPORT_BATCH:
                _check_codes(batch, codec, code_dtype, number)
                yield batch
                batch = []
    if batch:
        _check_codes(batch, codec, code_dtype, number)
        yield batch


def _parse_item(line: bytes, number: int, row_bytes: int) -> storage.NewItem:
    where = f"{ITEMS} line {number}"
    try:
        entry = json.loads(line)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise TransferError(f"{where}: not valid JSON: {exc}") from exc
    if not isinstance(entry, dict):
        raise TransferError(f"{where}: expected a JSON object")
    source_uri, digest = entry.get("source_uri"), entry.get("content_hash")
    try:
        check_text(source_uri, "'source_uri'", max_chars=MAX_SOURCE_URI_CHARS, allow_empty=False)
    except InvalidTextError as exc:
        raise TransferError(f"{where}: {exc}") from None
    if not (is_upload_uri(source_uri) or source_uri.startswith("/")):
        raise TransferError(f"{where}: 'source_uri' must be an upload:// URI or an absolute file path")
    if not isinstance(digest, str) or not _ITEM_DIGEST.fullmatch(digest):
        raise TransferError(f"{where}: 'content_hash' must be 32 or 64 hex characters (SHA-256 of the file)")
    sizes = [entry.get("width"), entry.get("height")]
    if any(v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < 0) for v in sizes):
        raise TransferError(f"{where}: 'width' and 'height' must be non-negative integers or null")
    try:
        metadata = check_metadata(entry.get("metadata") or {}, "'metadata'")
    except InvalidMetadataError as exc:
        raise TransferError(f"{where}: {exc}") from None
    try:
        codes = base64.b64decode(entry.get("codes", ""), validate=True)
    except (binascii.Error, TypeError, ValueError) as exc:
        raise TransferError(f"{where}: 'codes' is not base64: {exc}") from exc
    if len(codes) != row_bytes:
        raise TransferError(f"{where}: {len(codes)} bytes of codes, the codec needs {row_bytes}")
    return storage.NewItem(
        source_uri=source_uri, content_hash=digest[:DIGEST_HEX_CHARS].lower(), codes=codes, codec_id=0,
        width=sizes[0], height=sizes[1], metadata=metadata,
    )


def _check_codes(batch: list[storage.NewItem], codec: PQVAECodec, dtype: np.dtype[Any], number: int) -> None:
    codes = np.frombuffer(b"".join(item.codes for item in batch), dtype=dtype).reshape(len(batch), -1)
    try:
        codec.validate_codes(codes)
    except ValueError as exc:
        raise TransferError(f"{ITEMS} up to line {number}: {exc}") from exc


def _insert(db: Database, collection_id: int, codec_id: int, batch: list[storage.NewItem]) -> tuple[int, int]:
    unique: dict[str, storage.NewItem] = {}
    for item in batch:
        unique.setdefault(item.content_hash, item)
    with storage.transaction(db.sessions) as session:
        stored = storage.existing_hashes(session, collection_id=collection_id, hashes=list(unique))
        fresh = [
            storage.NewItem(
                source_uri=item.source_uri, content_hash=item.content_hash, codes=item.codes, codec_id=codec_id,
                width=item.width, height=item.height, metadata=item.metadata,
            )
            for digest, item in unique.items()
            if digest not in stored
        ]
        storage.add_items(session, collection_id=collection_id, items=fresh)
    return len(fresh), len(batch) - len(fresh)
