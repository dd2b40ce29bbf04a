"""Reading the EXIF facts of items stored before they were read at ingest (migration 0006).

``semstore exif-backfill`` (and :func:`backfill_exif`) walks the collection's items that have
no ``item_exif`` row, reads each one's own source (the kept original of an upload, or its
file, checked against the content hash stored at ingest: a changed or missing file is
skipped, never misread), and stores what its EXIF block holds. Items without EXIF keep no
row, so running it again reads them again (and finds nothing): it is meant to run once after
the upgrade, and is safe to interrupt and rerun.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tqdm import tqdm

from semstore import storage
from semstore.ingest.exif import exif_row, read_exif_bytes

if TYPE_CHECKING:
    from semstore.collection import Collection

#: Items read per transaction.
BATCH = 256


@dataclass
class BackfillReport:
    """What a backfill did: items read, of which had EXIF (now stored), and sources unavailable."""

    read: int = 0
    found: int = 0
    unavailable: int = 0


def backfill_exif(collection: Collection, *, progress: bool = False, batch: int = BATCH) -> BackfillReport:
    """Read and store the EXIF facts of the collection's items that have none stored yet."""
    from semstore.collection import SourceUnavailableError

    db = collection.database
    report = BackfillReport()
    with db.sessions() as session:
        total = storage.count_items_without_exif(session, collection_id=collection.id)
    bar = tqdm(total=total, desc=f"EXIF of {collection.name}", unit="item", disable=not progress)
    after = 0
    service = collection.index_service
    try:
        while True:
            with db.sessions() as session:
                pending = storage.items_without_exif(session, collection_id=collection.id, after_id=after, limit=batch)
            if not pending:
                return report
            found: dict[int, dict[str, Any]] = {}
            for item_id, _uri in pending:
                try:
                    data = collection.source_bytes(item_id, max_bytes=db.settings.max_upload_bytes)
                except SourceUnavailableError:
                    report.unavailable += 1
                    continue
                report.read += 1
                row = exif_row(read_exif_bytes(data))
                if row is not None:
                    found[item_id] = row
            if found:
                with service.writing():
                    with storage.transaction(db.sessions) as session:
                        report.found += storage.set_item_exif(session, collection_id=collection.id, rows=found)
                    service.applied()  # (EXIF lives in the database only: filters on it read it there)
            after = pending[-1][0]
            bar.update(len(pending))
    finally:
        bar.close()
