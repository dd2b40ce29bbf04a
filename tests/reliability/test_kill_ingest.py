"""Item 1: SIGKILL an ingesting process at random moments; nothing acknowledged is ever lost.

A child ingests generated images into SQLite (WAL, synchronous=FULL) and into PostgreSQL
and is killed after a seeded random delay, again and again. After every kill the
database and the index are checked: every acknowledged item is present with its codes,
no item lacks codes or a codec, no code row lacks its item (codes live in the item's
row: checked as well-formed rows and existing codecs), ``PRAGMA integrity_check`` is ok,
the index (loaded or rebuilt) holds exactly the database's ids, and a sample of
acknowledged items finds itself at top-1. A last, unkilled run completes the folder.
Collections that start without a codec take kills during the codec bootstrap.
"""

from __future__ import annotations

import multiprocessing
import random
import time
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import text

import semstore
from semstore.codec import PQVAECodec
from semstore.config import Settings
from tests.reliability.conftest import (
    COLLECTION,
    NUM_SUBVECTORS,
    encoder_factory,
    figures,
    scaled,
    settings_for,
    write_images,
)
from tests.reliability.children import PRELOAD, ingest, read_acks

pytestmark = pytest.mark.reliability

KILLS = scaled(10, 100)  # per backend, steady-state ingest
BOOTSTRAP_KILLS = scaled(2, 10)  # per backend, while the first codec is trained
PER_CALL = 4
SAMPLE = 5
SEED = 20261125


@pytest.fixture(scope="module")
def forkserver() -> multiprocessing.context.ForkServerContext:
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(PRELOAD)
    # Start the server (and its preloading) now, so that no timed child run pays for it.
    warm_up = context.Process(target=time.sleep, args=(0,))
    warm_up.start()
    warm_up.join()
    return context


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'kill.db'}"
    return request.getfixturevalue("postgres_url")


class Killer:
    """Runs the ingest child and SIGKILLs it after a random delay; remembers what it acknowledged."""

    def __init__(self, context, settings: Settings, folder: Path, workdir: Path, rng: random.Random) -> None:  # noqa: ANN001
        self.context, self.settings, self.folder, self.workdir, self.rng = context, settings, folder, workdir, rng
        workdir.mkdir(parents=True, exist_ok=True)
        self.acked: dict[int, str] = {}
        self.runs = 0
        self.killed = 0
        self.killed_after_acks = 0

    def run(self, collection: str, *, kill_within: tuple[float, float] | None) -> bool:
        """One child run; killed after ``uniform(*kill_within)`` s, or run to the end. True if it finished."""
        self.runs += 1
        acks = self.workdir / f"acks-{self.runs:04d}.txt"
        # Killed runs skip stored files up front; the last run re-reads the whole folder (library dedup).
        args = (self.settings.model_dump_json(), collection, str(self.folder), str(acks), PER_CALL, kill_within is not None)
        child = self.context.Process(target=ingest, args=args)
        child.start()
        if kill_within is None:
            child.join(timeout=600)
        else:
            child.join(timeout=self.rng.uniform(*kill_within))
            if child.exitcode is None:
                child.kill()
                child.join()
                self.killed += 1
        new, finished = read_acks(acks)
        if child.exitcode not in (0, -9):
            raise AssertionError(f"the ingest child failed with exit code {child.exitcode}")
        self.killed_after_acks += bool(new) and child.exitcode == -9
        for item_id, source in new.items():
            assert self.acked.setdefault(item_id, source) == source, f"id {item_id} acknowledged twice"
        return finished


def check_invariants(url: str, settings: Settings, collection: str, acked: dict[int, str], encoder) -> int:  # noqa: ANN001
    """Every invariant of the issue after a kill; returns the number of stored items."""
    database = semstore.Database(url, settings=settings, encoder_factory=encoder_factory(encoder), migrate=False)
    try:
        with database.engine.connect() as connection:
            if database.engine.dialect.name == "sqlite":
                assert connection.execute(text("PRAGMA journal_mode")).scalar_one() == "wal"
                assert connection.execute(text("PRAGMA synchronous")).scalar_one() == 2  # FULL
                assert connection.execute(text("PRAGMA integrity_check")).scalars().all() == ["ok"]
                assert connection.execute(text("PRAGMA foreign_key_check")).all() == []
            (collection_id, codec_id) = connection.execute(
                text("SELECT id, codec_id FROM collections WHERE name = :name"), {"name": collection}
            ).one()
            rows = connection.execute(
                text("SELECT id, source_uri, codes, codec_id, content_hash FROM items WHERE collection_id = :c ORDER BY id"),
                {"c": collection_id},
            ).all()
            orphans = connection.execute(
                text("SELECT count(*) FROM items i LEFT JOIN codecs c ON c.id = i.codec_id WHERE c.id IS NULL")
            ).scalar_one()
        stored = {row.id: row for row in rows}
        assert orphans == 0, "items whose codec row is missing"
        if rows:
            assert codec_id is not None, "items stored but the collection has no codec"
        for row in rows:  # codes and their item are one row: no item without well-formed codes
            assert row.codes is not None and len(row.codes) == NUM_SUBVECTORS, row.id
            assert row.codec_id == codec_id, row.id
        assert len({row.content_hash for row in rows}) == len(rows)
        lost = {i: s for i, s in acked.items() if i not in stored or stored[i].source_uri != s}
        assert not lost, f"{len(lost)} acknowledged items lost: {sorted(lost)[:10]}"

        target = database.collection(collection)
        index = target.index
        if index is None:
            assert not rows, "items stored but no index can be built"
            return 0
        assert np.array_equal(np.sort(index.ids()), np.asarray(sorted(stored), dtype=np.int64))
        codec: PQVAECodec = target.codec
        for item_id in random.Random(len(acked)).sample(sorted(acked), min(SAMPLE, len(acked))):
            codes = np.frombuffer(stored[item_id].codes, dtype=np.uint8)
            assert np.array_equal(target.codes(item_id), codes)
            hits = target.search(item=item_id, k=3)
            best = hits[0].score
            assert any(hit.id == item_id and hit.score >= best - 1e-5 for hit in hits), (item_id, hits)
        assert codec.num_subvectors == NUM_SUBVECTORS
        return len(rows)
    finally:
        database.close()


def test_sigkill_during_ingest_loses_nothing(
    url: str, tmp_path: Path, forkserver, shipped_codec, tiny_encoder  # noqa: ANN001
) -> None:
    codec, _ = shipped_codec
    rng = random.Random(SEED)
    settings = settings_for(url, tmp_path / "data")
    steady_folder, boot_folder = tmp_path / "steady", tmp_path / "boot"
    files = write_images(steady_folder, KILLS * 80 + 64)
    boot_files = write_images(boot_folder, settings.codec_bootstrap_size + 24, start=50_000)
    database = semstore.connect(url, settings=settings, encoder_factory=encoder_factory(tiny_encoder))
    database.create_collection(COLLECTION, codec=codec)
    boot_names = [f"boot{attempt}" for attempt in range(BOOTSTRAP_KILLS)]
    for name in ["probe", *boot_names]:
        database.create_collection(name)  # no codec: its first ingest trains one
    database.close()
    started = time.perf_counter()

    # Codec bootstrap. A finished bootstrap cannot be interrupted again, so each kill gets a
    # fresh collection without a codec, and lands inside the time an unkilled bootstrap of
    # the same files takes (measured first on a probe collection).
    probe = Killer(forkserver, settings, boot_folder, tmp_path / "acks-probe", rng)
    probe_started = time.perf_counter()
    assert probe.run("probe", kill_within=None), "the unkilled bootstrap run did not finish"
    bootstrap_s = time.perf_counter() - probe_started
    boots = [Killer(forkserver, settings, boot_folder, tmp_path / f"acks-{name}", rng) for name in boot_names]
    bootstrap_hits = 0
    for name, boot in zip(boot_names, boots):
        boot.run(name, kill_within=(0.3 * bootstrap_s, 0.8 * bootstrap_s))
        stored = check_invariants(url, settings, name, boot.acked, tiny_encoder)
        bootstrap_hits += stored == 0
        assert boot.run(name, kill_within=None), f"the {name} collection's last run did not finish"
        assert check_invariants(url, settings, name, boot.acked, tiny_encoder) == len(boot_files)
    boot_killed = sum(boot.killed for boot in boots)
    boot_acked = sum(len(boot.acked) for boot in boots)

    # Steady state: a codec shipped up front; kills hit encode, commit and index save.
    steady = Killer(forkserver, settings, steady_folder, tmp_path / "acks-steady", rng)
    for _ in range(KILLS):
        steady.run(COLLECTION, kill_within=(0.05, 0.4))
        check_invariants(url, settings, COLLECTION, steady.acked, tiny_encoder)
    assert steady.run(COLLECTION, kill_within=None), "re-running the ingest did not finish"
    final = check_invariants(url, settings, COLLECTION, steady.acked, tiny_encoder)
    assert final == len(files), f"{final} of {len(files)} files stored after the final run"

    backend = url.split(":")[0]
    figures(
        f"kill-during-ingest[{backend}]",
        kills=steady.killed + boot_killed,
        bootstrap_seconds=round(bootstrap_s, 2),
        bootstrap_kills=boot_killed,
        bootstrap_kills_before_codec_commit=bootstrap_hits,
        steady_kills=steady.killed,
        kills_after_some_acks=steady.killed_after_acks,
        acknowledged=len(steady.acked) + boot_acked,
        items_lost=0,
        files=len(files) + len(boot_files) * len(boots),
        stored_at_end=final + len(boot_files) * len(boots),
        seconds=round(time.perf_counter() - started, 1),
    )
    assert boot_killed >= 1 and steady.killed >= KILLS // 2, "too few kills landed while the child was running"
