"""The processes the reliability tests SIGKILL: an acknowledged ingest, and a loop of index saves.

It is started from a multiprocessing forkserver that has imported torch, open_clip and
semstore once (``PRELOAD``), so each of the many restarts costs a fork, not an import.
After each ``Collection.add`` call returns (its items are committed and the index saved),
one line ``<id>\\t<source>`` per new item is appended to the acknowledgement file with a
single ``os.write``: an acknowledged item is one the library reported as stored.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import open_clip  # noqa: F401 - preloaded by the forkserver, so children only fork
import torch
from sqlalchemy import text

import semstore
from semstore.config import Settings
from semstore.encoders import TINY_TEST_MODEL, OpenClipEncoder

PRELOAD = ["tests.reliability.children"]
DONE = "done"

# Built once in the forkserver (the tokenizer alone takes a second): children inherit it.
torch.set_num_threads(1)
ENCODER = OpenClipEncoder(TINY_TEST_MODEL, None, threads=1, batch_size=8)


def _warm_up() -> None:
    """One tiny ingest (codec training included) in a throw-away database, so that every lazy
    import and first-call cost is paid once in the forkserver instead of in every child."""
    import io

    import sqlalchemy
    from PIL import Image

    sqlalchemy.create_engine("postgresql+psycopg://warm@127.0.0.1/warm").dispose()  # loads the dialect only
    with tempfile.TemporaryDirectory() as folder:
        url = f"sqlite:///{folder}/warm.db"
        settings = Settings(data_dir=folder, database_url=url, model=TINY_TEST_MODEL, pretrained=None,
                            codec_bootstrap_size=2, codec_num_subvectors=2, codec_codebook_size=4)  # fmt: skip
        database = semstore.connect(url, settings=settings, encoder_factory=lambda _model, _pretrained: ENCODER)
        images = []
        for shade in (0, 255):
            out = io.BytesIO()
            Image.new("RGB", (8, 8), (shade, 0, 0)).save(out, format="PNG")
            images.append((f"{shade}.png", out.getvalue()))
        database.create_collection("warm").add_images(images, keep_originals=False)
        database.close()


_warm_up()


def ingest(settings_json: str, collection: str, folder: str, ack_path: str, per_call: int, skip_stored: bool) -> None:
    """Add every image of ``folder`` to ``collection`` ``per_call`` files at a time, acknowledging each call.

    With a collection that has no codec yet, the first call holds ``codec_bootstrap_size``
    files, so the codec is trained (and stored with the first items) inside it. With
    ``skip_stored`` the files whose path is already a stored source are left out up front,
    so that a restart spends its time on new items rather than on the library's dedup.
    """
    settings = Settings.model_validate_json(settings_json)
    if settings.model != TINY_TEST_MODEL:
        raise ValueError("the ingest child only runs the tiny test model")
    # The test migrated the database already; a restart only reconnects.
    database = semstore.Database(
        settings.database_url, settings=settings, migrate=False, encoder_factory=lambda _model, _pretrained: ENCODER
    )
    target = database.collection(collection)
    files = sorted(Path(folder).iterdir())
    if skip_stored:
        with database.engine.connect() as connection:
            stored = set(connection.execute(text("SELECT source_uri FROM items WHERE collection_id = :c"), {"c": target.id}).scalars())
        files = [path for path in files if str(path) not in stored]
    first = per_call if target.codec is not None else settings.codec_bootstrap_size
    calls = [files[:first]] + [files[i : i + per_call] for i in range(first, len(files), per_call)]
    fd = os.open(ack_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        for chunk in calls:
            report = target.add(chunk, progress=False)
            if report.failed:
                raise RuntimeError(f"ingest failed: {report.failed}")
            if report.added_items:
                os.write(fd, "".join(f"{item_id}\t{source}\n" for source, item_id in report.added_items).encode())
        os.write(fd, f"{DONE}\n".encode())
    finally:
        os.close(fd)
        database.close()


def read_acks(path: Path) -> tuple[dict[int, str], bool]:
    """``({id: source}, finished)`` from an acknowledgement file (a torn last line is ignored)."""
    acked: dict[int, str] = {}
    finished = False
    if not path.exists():
        return acked, finished
    for line in path.read_text().splitlines():
        if line == DONE:
            finished = True
        elif "\t" in line:
            item_id, source = line.split("\t", 1)
            acked[int(item_id)] = source
    return acked, finished


def save_loop(codec_path: str, directory: str, ack_path: str, items: int) -> None:
    """Save an index of ``items`` then ``items + 1`` codes, alternately, forever (until killed).

    Version ``n`` holds ids ``1..n``; after each completed save its item count is appended
    to ``ack_path``. Codes are derived from the ids so a reader can check them.
    """
    from semstore.codec import PQVAECodec
    from semstore.index import ADCIndex, IndexVersion

    codec = PQVAECodec.load(codec_path)
    index = ADCIndex.build(codec, np.arange(1, items + 1), expected_codes(codec, items))
    extra = expected_codes(codec, items + 1)[-1:]
    fd = os.open(ack_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    while True:
        for count in (items + 1, items):
            if count > len(index):
                index.add(np.array([count]), extra)
            else:
                index.remove(np.array([count + 1]))
            index.save(directory, IndexVersion(codec.content_hash, count, count, count))
            os.write(fd, f"{count}\n".encode())


def expected_codes(codec, count: int) -> np.ndarray:  # noqa: ANN001
    """The codes of ids ``1..count`` in :func:`save_loop`'s indexes."""
    rng = np.random.default_rng(7)
    return rng.integers(0, codec.codebook_size, (count, codec.num_subvectors)).astype(codec.code_dtype)
