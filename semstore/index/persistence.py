"""An index saved as a directory: ``index-<n>.faiss`` plus ``config.json`` (the commit point).

Save order: the FAISS file goes to a temp name, is fsynced and renamed; then ``config.json``
(version, layout, codec hash, sha256 of the index file) is written the same way; only then
are older index files deleted. A crash at any point leaves either the old complete index or
the new one. Loading verifies everything it can before handing out an index; a single
writer per directory is assumed (a racing writer can only make the load fail, never wrong).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from semstore.files import create_private_file, private_folder
from semstore.index.errors import IndexCorruptError, IndexNotFoundError, IndexStaleError

FORMAT = "semstore-adc-index/1"
CONFIG_NAME = "config.json"
_INDEX_NAME = re.compile(r"^index-(\d+)\.faiss$")
_TEMP_NAME = re.compile(r"^\.(index-\d+\.faiss|config\.json)\.[0-9a-f]{12}\.tmp$")


@dataclass(frozen=True)
class IndexVersion:
    """What an index was built from: the codec and the state of the database.

    ``count`` is the number of items, ``max_id`` the largest item id (0 when empty, by the
    convention of :meth:`ADCIndex.current_version`) and ``revision`` a counter the database
    bumps on every change, so that equal counts after add + delete still differ.
    """

    codec_hash: str
    count: int
    max_id: int
    revision: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Any) -> "IndexVersion":
        """Parse a dict written by :meth:`to_dict`; raises ValueError on any mismatch."""
        if not isinstance(data, dict) or set(data) != {"codec_hash", "count", "max_id", "revision"}:
            raise ValueError(f"not an index version: {data!r}")
        if not isinstance(data["codec_hash"], str):
            raise ValueError("codec_hash must be a string")
        for key in ("count", "max_id", "revision"):
            if not isinstance(data[key], int) or isinstance(data[key], bool):
                raise ValueError(f"{key} must be an integer")
        return cls(**data)


def write_index_dir(directory: str | Path, serialized: np.ndarray, version: IndexVersion, meta: dict[str, Any]) -> Path:
    """Save an index serialised by ``faiss.serialize_index`` into ``directory`` atomically;
    returns the new index file's path.

    ``meta`` (layout, code shape, ...) is stored in ``config.json`` next to the version.
    """
    folder = private_folder(directory)
    name = f"index-{_next_generation(folder)}.faiss"
    token = uuid.uuid4().hex[:12]
    tmp_index = folder / f".{name}.{token}.tmp"
    try:
        create_private_file(tmp_index)  # opening it "wb" below truncates it and keeps its 0600 mode
        with open(tmp_index, "wb") as handle:
            handle.write(memoryview(serialized))
            handle.flush()
            os.fsync(handle.fileno())
        digest = hashlib.sha256(memoryview(serialized)).hexdigest()
        size = tmp_index.stat().st_size
        os.replace(tmp_index, folder / name)
    finally:
        tmp_index.unlink(missing_ok=True)
    config = {
        "format": FORMAT,
        **meta,
        "codec_hash": version.codec_hash,
        "version": version.to_dict(),
        "index_file": name,
        "index_bytes": size,
        "sha256": digest,
    }
    tmp_config = folder / f".{CONFIG_NAME}.{token}.tmp"
    try:
        create_private_file(tmp_config)
        with open(tmp_config, "w", encoding="utf-8") as handle:
            json.dump(config, handle, indent=2, sort_keys=True)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_config, folder / CONFIG_NAME)  # the commit point
    finally:
        tmp_config.unlink(missing_ok=True)
    _fsync_dir(folder)
    for path in folder.iterdir():
        # older generations, and temp files a crashed writer left behind
        if (_INDEX_NAME.match(path.name) and path.name != name) or _TEMP_NAME.match(path.name):
            path.unlink(missing_ok=True)
    return folder / name


def read_index_dir(
    directory: str | Path, codec_hash: str, expected: IndexVersion | None = None
) -> tuple[faiss.Index, IndexVersion, dict[str, Any]]:
    """Read and verify a saved index: (FAISS index, its version, the whole config).

    Raises :class:`IndexNotFoundError` without a config, :class:`IndexStaleError` for another
    codec or a version other than ``expected``, :class:`IndexCorruptError` for anything
    unreadable or inconsistent (bad JSON, missing file, checksum, FAISS parse, item count).
    """
    folder = Path(directory)
    config_path = folder / CONFIG_NAME
    if not config_path.is_file():
        raise IndexNotFoundError(f"no saved index in {folder} ({CONFIG_NAME} missing)")
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise IndexCorruptError(f"{config_path} is unreadable: {exc}") from exc
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise IndexCorruptError(f"{config_path} is not a semstore index config (format {FORMAT!r} expected)")
    try:
        version = IndexVersion.from_dict(config.get("version"))
    except ValueError as exc:
        raise IndexCorruptError(f"{config_path} holds an invalid version: {exc}") from exc
    if config.get("codec_hash") != version.codec_hash:
        raise IndexCorruptError(f"{config_path} is inconsistent: codec hash differs from its version's")
    if version.codec_hash != codec_hash:
        raise IndexStaleError(
            f"index in {folder} was built for codec {version.codec_hash[:12]}, not {codec_hash[:12]}"
        )
    if expected is not None and version != expected:
        raise IndexStaleError(f"index in {folder} is stale: saved {version}, expected {expected}")
    name = config.get("index_file")
    if not isinstance(name, str) or not _INDEX_NAME.match(name) or not isinstance(config.get("sha256"), str):
        raise IndexCorruptError(f"{config_path} names no valid index file")
    try:
        data = (folder / name).read_bytes()
    except OSError as exc:
        raise IndexCorruptError(f"index file {folder / name} is unreadable: {exc}") from exc
    if hashlib.sha256(data).hexdigest() != config["sha256"]:
        raise IndexCorruptError(f"index file {folder / name} is corrupt: sha256 does not match {CONFIG_NAME}")
    try:
        index = faiss.deserialize_index(np.frombuffer(data, dtype=np.uint8))
    except Exception as exc:  # FAISS reports every parse failure as RuntimeError (or worse)
        raise IndexCorruptError(f"FAISS cannot read {folder / name}: {exc}") from exc
    if int(index.ntotal) != version.count:
        raise IndexCorruptError(f"index file {folder / name} holds {index.ntotal} items, its version says {version.count}")
    return index, version, config


def _next_generation(folder: Path) -> int:
    numbers = [int(match.group(1)) for path in folder.iterdir() if (match := _INDEX_NAME.match(path.name))]
    return max(numbers, default=0) + 1


def _fsync_dir(folder: Path) -> None:
    # makes the renames durable; not every platform/filesystem can open a directory
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
