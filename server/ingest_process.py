"""Uploads and path ingests in a separate, niced worker process (``settings.ingest_processes``).

An ingest is mostly Python work (image decode and EXIF, the encoder's forward pass, the
codec, SQLAlchemy): on a thread of the server process it holds the GIL that the threads
answering searches need, and thread priorities cannot help with that. So the server hands
each ingest to a :class:`~concurrent.futures.ProcessPoolExecutor` whose workers (started
with "spawn": no copied locks, threads or CUDA state, a clean import) are
:data:`~server.ingest_threads.INGEST_NICENESS` steps nicer than the server. A worker opens
its own :class:`~semstore.Database` from the server's settings and encoder factory (the one
a Ray ingest ships to its actors, :attr:`semstore.Database.injected_encoder_factory`),
with ``indexes=False``: it never loads, builds or saves an index, so it cannot fight the
server over the saved index file. It runs the same ``Collection.add_images`` /
``Collection.add`` as the in-process path (one transaction per batch of items and their
codes, kept originals written first under the upload folder's lock), so what is stored
does not depend on where the ingest ran.

The worker's commits are not another process's writes to the server's index: before each
commit the worker tells the server (on a pipe of its own) which collection revisions it
writes and waits for the answer, so the server's index service counts them as its own
writes in flight (a search meanwhile does not stop to catch up, which costs an aggregate
over the whole collection); when the worker returns, the server reads the new rows and
applies them in place, then answers, so a search right after an upload finds the new items.
Anything not applied so (an error, a worker that died) counts as another process's write and
is caught up through the collection's revision (:meth:`Collection.sync_index`).

A worker that dies (killed, out of memory) breaks its pool: the request gets a 503
``ingest_worker_lost``, the worker is replaced for the next request, and what the dead one
left half done is cleaned up (kept originals of items it never committed); items it
committed stay (a retry skips them).
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import pickle
import signal
import threading
import time
import queue
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import nullcontext
from functools import partial
from multiprocessing.connection import Connection
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import numpy as np
from sqlalchemy import event
from sqlalchemy.orm import Session

from semstore import storage
from semstore.collection import Collection
from semstore.index_service import revisions_of
from semstore.replica import stored_codes
from server.errors import ApiError
from server.ingest_threads import IngestThreads, lower_priority

if TYPE_CHECKING:
    from semstore.config import Settings
    from semstore.database import Database, EncoderFactory
    from semstore.index_service import IndexService
    from semstore.ingest import IngestReport

logger = logging.getLogger("semstore.server")

#: How a worker process starts: a fresh interpreter (safe with threads, locks and CUDA).
START_METHOD = "spawn"


def build_ingest(
    settings: Settings, encoder_factory: EncoderFactory | None = None, limiter: anyio.CapacityLimiter | None = None
) -> IngestThreads | IngestProcesses:
    """The server's ingest runner: worker processes if ``settings.ingest_processes`` > 0 and
    the encoder factory can be sent to them, else low-priority threads of this process that
    hold ``limiter`` (the server's encoder limiter) while they work.

    The worker processes do not take ``limiter``: their encoders are not this process's, and
    an upload waiting for a worker must not hold up the text searches that need it.
    """
    if settings.ingest_processes > 0:
        try:
            pickle.dumps(encoder_factory)
        except Exception as exc:  # noqa: BLE001 - e.g. a lambda: the workers could not build that encoder
            logger.warning("ingest runs on threads of the server process: the encoder factory cannot be sent to a worker (%s)", exc)
        else:
            return IngestProcesses(settings, encoder_factory, settings.ingest_processes)
    return IngestThreads(settings.inference_concurrency, limiter)


class _Worker:
    """One worker process (a process pool of one, so that it has a channel of its own) and
    the pipe on which it announces each commit before it makes it."""

    def __init__(self, settings: Settings, encoder_factory: EncoderFactory | None) -> None:
        context = multiprocessing.get_context(START_METHOD)
        self.channel, self._worker_end = context.Pipe()
        self.pool = ProcessPoolExecutor(
            max_workers=1, mp_context=context, initializer=_start_worker, initargs=(settings, encoder_factory, self._worker_end)
        )

    def close(self) -> None:
        """Wait for its ingest (quick for a dead process), stop the process, close the pipe."""
        self.pool.shutdown(wait=True, cancel_futures=True)
        self.channel.close()
        self._worker_end.close()


class IngestProcesses:
    """Runs ingests in ``workers`` niced worker processes, started with the app (:meth:`start`)
    or else by the first ingest, and again by the first ingest after one died.

    Each ingest is followed by a thread of this process (at most one per worker, so a worker
    runs one ingest at a time and further ones wait here, holding no thread). The worker tells
    it each collection revision it is about to commit and waits for the answer: the server's
    index service counts it as its own write in flight (:meth:`IndexService.committed`), so a
    search meanwhile does not stop to catch up with it; when the worker returns, its new rows
    are read and applied to the index in place (:meth:`IndexService.apply_added`), as the
    server's own ingest threads do. Whatever is not applied (a worker that died, an error)
    counts as another process's write: the next search, or this request, catches up.
    """

    def __init__(self, settings: Settings, encoder_factory: EncoderFactory | None, workers: int) -> None:
        self._settings = settings
        self._encoder_factory = encoder_factory
        self._workers: list[_Worker | None] = [None] * workers
        self._free: queue.SimpleQueue[int] = queue.SimpleQueue()
        for slot in range(workers):
            self._free.put(slot)
        self._followers = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="semstore-ingest-follow")
        self._lock = threading.Lock()
        self._closed = False

    async def add_images(
        self, collection: Collection, images: Sequence[tuple[str, bytes]], metadata: Mapping[str, Any] | None
    ) -> IngestReport:
        """:meth:`Collection.add_images` in a worker; its items are in the index when it returns."""
        return await self._ingest(collection, _add_images, collection.name, list(images), metadata)

    async def add_paths(self, collection: Collection, files: Sequence[Path], metadata: Mapping[str, Any] | None) -> IngestReport:
        """:meth:`Collection.add` of server-side files in a worker; its items are in the index when it returns."""
        return await self._ingest(collection, _add_paths, collection.name, [str(path) for path in files], metadata)

    def start(self) -> None:
        """Start the workers now (in the background: the server does not wait for them), so
        that the first upload does not wait for their imports and model."""
        try:
            for slot in range(len(self._workers)):
                self._worker(slot).pool.submit(_ready).add_done_callback(_log_start_failure)
        except Exception as exc:  # noqa: BLE001 - the first upload tries again
            logger.warning("could not start the ingest worker processes: %s", exc)

    async def _ingest(self, collection: Collection, job: Any, *args: Any) -> IngestReport:
        started = time.perf_counter()
        try:
            future = self._followers.submit(self._run, collection, job, *args)
        except RuntimeError:  # "cannot schedule new futures after shutdown"
            raise ApiError(503, "unavailable", "the server is shutting down") from None
        try:
            report, pid = await asyncio.wrap_future(future)
        except BrokenProcessPool as exc:
            logger.error("collection %r: the ingest worker process stopped during an ingest (%s); the next one gets a new worker",
                         collection.name, str(exc))  # fmt: skip
            await anyio.to_thread.run_sync(_after_lost_worker, collection)
            raise ApiError(
                503,
                "ingest_worker_lost",
                "the ingest worker process stopped during this request (killed, or out of memory); items it had "
                "committed are kept and a retry skips them; the next request gets a new worker",
            ) from None
        except Exception:
            await anyio.to_thread.run_sync(_sync_index_quietly, collection)  # what it committed before the error
            raise
        # The index holds the new items already; this switches its kind or saves it when due.
        await anyio.to_thread.run_sync(_sync_index, collection)
        logger.debug("collection %r: ingest ran in worker process %d in %.3f s", collection.name, pid, time.perf_counter() - started)
        return report

    def _run(self, collection: Collection, job: Any, *args: Any) -> tuple[IngestReport, int]:
        """Run ``job`` on a free worker and follow it (on a follower thread: there is always one free)."""
        slot = self._free.get_nowait()
        try:
            worker = self._worker(slot)
            follows = collection.database.shard_search is None  # (with shards, the shards catch up by themselves)
            service = collection.index_service if follows else None
            with service.writing() if service is not None else nullcontext():
                try:
                    future = worker.pool.submit(job, *args)
                    _follow(worker.channel, future, service, collection.id)
                    report, pid = future.result()
                except BrokenProcessPool:
                    self._replace(slot, worker)
                    raise
                if service is not None:
                    _apply_added(collection, service, [item_id for _, item_id in report.added_items])
            return report, pid
        finally:
            self._free.put(slot)

    def _worker(self, slot: int) -> _Worker:
        with self._lock:
            if self._closed:
                raise ApiError(503, "unavailable", "the server is shutting down")
            worker = self._workers[slot]
            if worker is None:
                worker = self._workers[slot] = _Worker(self._settings, self._encoder_factory)
            return worker

    def _replace(self, slot: int, broken: _Worker) -> None:
        """Drop a worker whose process died; the slot's next ingest starts another."""
        with self._lock:
            if self._workers[slot] is broken:
                self._workers[slot] = None
        broken.close()  # (waiting also spares Python's exit a wake-up of the pool's closed manager thread)

    def shutdown(self) -> None:
        """Wait for running ingests, then stop the workers (the app's shutdown)."""
        self._followers.shutdown(wait=True, cancel_futures=True)
        with self._lock:
            self._closed = True
            workers, self._workers = self._workers, [None] * len(self._workers)
        for worker in workers:
            if worker is not None:
                worker.close()


def _follow(channel: Connection, future: Future[Any], service: IndexService | None, collection_id: int) -> None:
    """Answer the worker's announcements until its job is done (under ``service.writing()``).

    ``("commit", revisions)``: revisions it is about to commit, now this process's own writes
    in flight; ``("rollback", revisions)``: they were not committed after all; ``("done", {})``:
    the job returns. Each is answered with its sequence number before the worker goes on. A
    worker that dies says nothing more: then ``future`` is done (broken).
    """
    while True:
        if channel.poll(0.05):
            sequence, kind, revisions = channel.recv()
            mine = list(revisions.get(collection_id, ()))
            if service is not None and mine:
                if kind == "commit":
                    service.committed(mine)
                elif kind == "rollback":
                    service.rolled_back(mine)
            channel.send(sequence)
            if kind == "done":
                return
        elif future.done():
            return


def _apply_added(collection: Collection, service: IndexService, ids: list[int]) -> None:
    """Apply the rows a worker just committed to the index in place (if one is loaded)."""
    current = service.codec_and_index()
    if current is None or not ids:
        return  # nothing loaded: the next access loads or builds it
    codec_id, index = current
    codec = index.codec
    rows = [row for row in _rows(collection, ids) if row.codec_id == codec_id]
    if not rows:
        return
    stored = np.asarray([row.id for row in rows], dtype=np.int64)
    service.apply_added(stored, stored_codes(rows, codec), [row.metadata_ for row in rows])
    # An item deleted between the read and the apply (its delete found nothing to remove
    # from the index yet) is removed now; one deleted later is removed by its own delete.
    present = {row.id for row in _rows(collection, stored.tolist())}
    gone = [item_id for item_id in stored.tolist() if item_id not in present]
    if gone:
        service.apply_removed(np.asarray(gone, dtype=np.int64))


def _rows(collection: Collection, ids: list[int]) -> list[storage.Item]:
    with collection.database.sessions() as session:
        rows = storage.get_items(session, collection_id=collection.id, ids=ids)
        session.expunge_all()  # (read after the session closes)
        return list(rows)


def _log_start_failure(future: Future[int]) -> None:
    if not future.cancelled() and future.exception() is not None:
        logger.warning("the ingest worker process did not start: %s", future.exception())


def _sync_index(collection: Collection) -> None:
    if collection.database.shard_search is None:  # (with shards, the shards catch up by themselves)
        collection.sync_index()


def _sync_index_quietly(collection: Collection) -> None:
    try:
        _sync_index(collection)
    except Exception as exc:  # noqa: BLE001 - the request's own error is the one to report; searches catch up
        logger.warning("collection %r: index catch-up after a failed ingest: %s", collection.name, exc)


def _after_lost_worker(collection: Collection) -> None:
    """Catch up with what a dead worker committed; remove the kept originals it wrote for
    items it never committed."""
    _sync_index_quietly(collection)
    try:
        removed = collection.clean_uploads()
    except Exception as exc:  # noqa: BLE001 - the next start's clean-up retries
        logger.warning("collection %r: could not clean the upload folder after a lost worker: %s", collection.name, exc)
        return
    if removed:
        logger.info("collection %r: removed %d upload files left by the lost worker", collection.name, removed)


# -- in the worker process -----------------------------------------------------------------

_database: Database | None = None
_channel: Connection | None = None  # to the server: commit announcements
_announced = 0  # sequence number of the last announcement
_announcing = threading.Lock()
_in_job = False
_collections: dict[str, tuple[tuple[Any, ...], Collection]] = {}


def _start_worker(settings: Settings, encoder_factory: EncoderFactory | None, channel: Connection) -> None:
    """Initializer of a worker: ignore Ctrl-C (the server shuts the pool down), leave a core
    to the server (unless ``settings.threads`` says how many torch threads to use), open the
    database without indexes, load the encoders of its collections, then lower its priority.

    The imports and the model load are what the first ingest would otherwise wait for
    (seconds); the server starts its workers as it starts, so they are start-up time, at the
    server's priority, not an upload's at a low one.
    """
    global _database, _channel
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    import open_clip  # noqa: F401
    import torch

    from semstore.database import Database

    if settings.threads is None:
        # One core fewer than the machine has, so a search finds a core free (an ingest on
        # every core also makes torch's threads wait for each other on a busy machine).
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        torch.set_num_threads(max(1, min(torch.get_num_threads(), cores - 1)))
    # The server migrated the database before any request could reach a collection.
    database = Database(settings=settings, encoder_factory=encoder_factory, migrate=False, indexes=False)
    try:  # the encoders of the collections there are (as many as may stay loaded)
        with database.sessions() as session:
            models = sorted({(record.model, record.pretrained) for record in storage.list_collections(session)}, key=str)
        for model, pretrained in models[: settings.max_loaded_encoders]:
            database.encoder(model, pretrained)
    except Exception as exc:  # noqa: BLE001 - e.g. the database is down: the first ingest loads what it needs
        logger.info("the ingest worker did not load the collections' models (the first ingest does): %s", exc)
    # Announce each revision before it is committed (and a rollback before the database's own
    # listener forgets what the transaction wrote).
    event.listen(database.sessions, "before_commit", partial(_announce, "commit"))
    event.listen(database.sessions, "after_rollback", partial(_announce, "rollback"), insert=True)
    _lower_process_priority()
    _database, _channel = database, channel


def _announce(kind: str, session: Session) -> None:
    """Tell the server the revisions this transaction wrote (``kind``: commit or rollback)
    and wait for its answer."""
    revisions = revisions_of(session)
    if revisions and _in_job:
        _tell(kind, revisions)


def _tell(kind: str, revisions: dict[int, list[int]]) -> None:
    global _announced
    if _channel is None:
        return
    with _announcing:
        _announced += 1
        _channel.send((_announced, kind, revisions))
        while _channel.recv() != _announced:
            pass  # (an answer to an earlier announcement: cannot happen, as each is awaited)


def _lower_process_priority() -> None:
    """Make every thread of this process :data:`~server.ingest_threads.INGEST_NICENESS` steps nicer (on Linux a
    priority is a thread's: those the imports and the model load started need it too; the
    threads started later inherit it from the one that starts them)."""
    try:
        tids = [int(tid) for tid in os.listdir("/proc/self/task")]
    except OSError:
        tids = [0]  # (elsewhere: the process)
    for tid in tids:
        lower_priority(tid)


def _ready() -> int:
    """A no-op job: the worker is started and initialised."""
    return os.getpid()


def _collection(name: str) -> Collection:
    """The collection as stored now, the same object while its record (codec included) is the
    same: its codec's search tables are built once, and nothing is remembered from a
    collection deleted and re-created under the same name meanwhile."""
    assert _database is not None, "the ingest worker was not initialised"
    with _database.sessions() as session:
        record = storage.get_collection(session, name=name)
        key = (record.id, record.model, record.pretrained, record.dim, record.codec_id)
        cached = _collections.get(name)
        if cached is None or cached[0] != key:
            cached = _collections[name] = (key, Collection(_database, record))
    return cached[1]


def _add_images(name: str, images: list[tuple[str, bytes]], metadata: Mapping[str, Any] | None) -> tuple[IngestReport, int]:
    return _job(lambda: _collection(name).add_images(images, metadata=metadata))


def _add_paths(name: str, files: list[str], metadata: Mapping[str, Any] | None) -> tuple[IngestReport, int]:
    return _job(lambda: _collection(name).add(files, metadata=metadata, progress=False))


def _job(run: Callable[[], IngestReport]) -> tuple[IngestReport, int]:
    """``(report, this process's pid)``; its commits are announced to the server."""
    global _in_job
    _in_job = True
    try:
        return run(), os.getpid()
    except Exception as exc:
        raise _portable(exc) from None
    finally:
        _in_job = False
        try:
            _tell("done", {})  # (the server stops following as soon as it reads this)
        except (OSError, EOFError) as exc:  # the server is gone: nobody to tell
            logger.debug("the ingest worker could not reach the server: %s", exc)


def _portable(exc: Exception) -> Exception:
    """``exc`` if it survives the trip to the server (else the pool would count the worker as
    broken), otherwise the nearest built-in exception class with the same message, so the
    server still maps it to the same kind of error response."""
    try:
        pickle.loads(pickle.dumps(exc))
        return exc
    except Exception:  # noqa: BLE001 - e.g. an exception class whose __init__ takes other arguments
        base = next(cls for cls in type(exc).__mro__ if cls.__module__ == "builtins")
        try:
            return base(str(exc))
        except Exception:  # noqa: BLE001
            return RuntimeError(f"{type(exc).__name__}: {exc}")
