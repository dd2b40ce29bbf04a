"""Item 2: a saved index survives kills mid-save, and a damaged or stale one is never served.

A child saves an index again and again (alternating two versions) and is SIGKILLed at
random moments: afterwards the directory must load as one of the two complete versions,
with exactly that version's ids and codes. Then the files of a real collection's saved
index are truncated, emptied, replaced with random bytes, or swapped for an older (stale)
save: loading must refuse each (IndexCorruptError / IndexStaleError / IndexNotFoundError),
and the collection must rebuild from the database and serve the database's ids.
"""

from __future__ import annotations

import multiprocessing
import random
import shutil
import time
from pathlib import Path

import numpy as np
import pytest

import semstore
from semstore import storage
from semstore.index import ADCIndex, IndexCorruptError, IndexNotFoundError, IndexStaleError, IndexVersion
from semstore.index.persistence import CONFIG_NAME, read_index_dir
from tests.reliability.children import PRELOAD, expected_codes, save_loop
from tests.reliability.conftest import COLLECTION, encoder_factory, figures, image_bytes, scaled, settings_for

pytestmark = pytest.mark.reliability

SAVE_KILLS = scaled(15, 200)
ITEMS = 100_000  # 800 KB of codes: a save takes long enough for kills to land inside it


def test_sigkill_during_index_save_leaves_a_complete_index(shipped_codec, tmp_path: Path) -> None:
    codec, codec_path = shipped_codec
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(PRELOAD)
    rng = random.Random(20261125)
    directory, acks = tmp_path / "index", tmp_path / "saves.txt"
    truth = {n: expected_codes(codec, n) for n in (ITEMS, ITEMS + 1)}
    seen: dict[int, int] = {ITEMS: 0, ITEMS + 1: 0}
    kills = temp_left = 0
    started = time.perf_counter()
    for _ in range(SAVE_KILLS):
        saves_before = len(acks.read_text().split()) if acks.exists() else 0
        child = context.Process(target=save_loop, args=(str(codec_path), str(directory), str(acks), ITEMS))
        child.start()
        # wait for one more completed save, then kill at a random moment of the following ones
        deadline = time.monotonic() + 120
        while (len(acks.read_text().split()) if acks.exists() else 0) <= saves_before:
            assert child.is_alive() and time.monotonic() < deadline, "the save loop died or hung"
            time.sleep(0.01)
        time.sleep(rng.uniform(0.0, 0.3))
        child.kill()
        child.join()
        assert child.exitcode == -9
        kills += 1
        temp_left += any(path.name.endswith(".tmp") for path in directory.iterdir())
        index = ADCIndex.load(directory, codec)
        count = len(index)
        assert count in truth, count
        _, version, _ = read_index_dir(directory, codec.content_hash)
        assert version.count == count
        ids = np.sort(index.ids())
        assert np.array_equal(ids, np.arange(1, count + 1))
        probe = np.asarray(rng.sample(range(1, count + 1), 50) + [count])
        assert np.array_equal(index.codes_for(probe), truth[count][probe - 1])
        seen[count] += 1
    figures(
        "kill-during-index-save",
        kills=kills,
        loaded_older_version=seen[ITEMS],
        loaded_newer_version=seen[ITEMS + 1],
        kills_leaving_temp_files=temp_left,
        served_corrupt=0,
        seconds=round(time.perf_counter() - started, 1),
    )


def _damage(directory: Path, how: str, rng: np.random.Generator, stale: Path) -> None:
    config = directory / CONFIG_NAME
    (index_file,) = [path for path in directory.iterdir() if path.suffix == ".faiss"]
    data = index_file.read_bytes()
    if how == "truncated-index":
        index_file.write_bytes(data[: len(data) // 2])
    elif how == "truncated-index-1-byte":
        index_file.write_bytes(data[:-1])
    elif how == "zero-length-index":
        index_file.write_bytes(b"")
    elif how == "random-bytes-index":
        index_file.write_bytes(rng.bytes(len(data)))
    elif how == "one-flipped-byte":
        flipped = bytearray(data)
        flipped[len(flipped) // 2] ^= 0xFF
        index_file.write_bytes(bytes(flipped))
    elif how == "missing-index-file":
        index_file.unlink()
    elif how == "zero-length-config":
        config.write_bytes(b"")
    elif how == "random-bytes-config":
        config.write_bytes(rng.bytes(300))
    elif how == "truncated-config":
        config.write_bytes(config.read_bytes()[:40])
    elif how == "missing-config":
        config.unlink()
    elif how == "stale-copy":
        shutil.rmtree(directory)
        shutil.copytree(stale, directory)
    else:
        raise AssertionError(how)


DAMAGES = {
    "truncated-index": IndexCorruptError,
    "truncated-index-1-byte": IndexCorruptError,
    "zero-length-index": IndexCorruptError,
    "random-bytes-index": IndexCorruptError,
    "one-flipped-byte": IndexCorruptError,
    "missing-index-file": IndexCorruptError,
    "zero-length-config": IndexCorruptError,
    "random-bytes-config": IndexCorruptError,
    "truncated-config": IndexCorruptError,
    "missing-config": IndexNotFoundError,
    "stale-copy": IndexStaleError,
}


def test_damaged_or_stale_index_files_are_rebuilt_never_served(db_url: str, tmp_path: Path, shipped_codec, tiny_encoder) -> None:  # noqa: ANN001
    codec, _ = shipped_codec
    settings = settings_for(db_url, tmp_path / "data")
    factory = encoder_factory(tiny_encoder)
    database = semstore.connect(db_url, settings=settings, encoder_factory=factory)
    photos = database.create_collection(COLLECTION, codec=codec)
    photos.add_images([(f"a{i}.png", image_bytes(i)) for i in range(20)], keep_originals=False)
    directory = database.index_directory(photos)
    stale = tmp_path / "stale-index"
    shutil.copytree(directory, stale)  # a complete save of the first 20 items
    photos.add_images([(f"b{i}.png", image_bytes(100 + i)) for i in range(12)], keep_originals=False)
    ((_, victim),) = photos.add_images([("c.png", image_bytes(999))], keep_originals=False).added_items
    photos.delete([victim])  # the database's ids now differ from every earlier save
    expected_ids = np.sort(photos.index.ids())
    database.close()
    reopened = semstore.Database(db_url, settings=settings, encoder_factory=factory, migrate=False)
    _ = reopened.collection(COLLECTION).index  # a delete does not save: this rebuilds and saves the current index
    reopened.close()
    rng = np.random.default_rng(3)
    refused: dict[str, str] = {}
    for how, error in DAMAGES.items():
        _damage(directory, how, rng, stale)
        fresh = semstore.Database(db_url, settings=settings, encoder_factory=factory, migrate=False)
        try:
            collection = fresh.collection(COLLECTION)
            with fresh.sessions() as session:  # the version the database is at
                state = storage.collection_state(session, collection_id=collection.id)
            version = IndexVersion(codec.content_hash, state.count, state.max_id, state.revision)
            with pytest.raises(error) as caught:
                ADCIndex.load(directory, codec, version)
            refused[how] = type(caught.value).__name__
            served = collection.index  # rebuilt from the database, or a stale copy caught up (and saved again)
            assert np.array_equal(np.sort(served.ids()), expected_ids), how
            hit = collection.search(item=int(expected_ids[0]), k=1)[0]
            assert hit.id == int(expected_ids[0]) or hit.score >= 0.999, how
            assert len(ADCIndex.load(directory, codec, version)) == len(expected_ids), how
        finally:
            fresh.close()
    figures(f"damaged-index-files[{db_url.split(':')[0]}]", cases=len(DAMAGES), refused_and_rebuilt=len(refused), served_damaged=0, kinds=refused)
