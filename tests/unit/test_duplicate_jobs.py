"""One near-duplicate join per collection at a time; the last answer kept while nothing changed."""

from __future__ import annotations

import threading

import pytest

from server.duplicate_jobs import DuplicateJobs, DuplicatesRunning


def test_a_second_join_of_a_collection_is_refused_while_one_runs_and_others_are_not() -> None:
    jobs = DuplicateJobs()
    started, release = threading.Event(), threading.Event()
    answers: list[object] = []

    def slow() -> str:
        started.set()
        assert release.wait(10)
        return "groups"

    worker = threading.Thread(target=lambda: answers.append(jobs.run("photos", ("rev", 1), slow)))
    worker.start()
    assert started.wait(10)
    with pytest.raises(DuplicatesRunning):
        jobs.run("photos", ("rev", 2), lambda: "other")
    assert jobs.run("archive", ("rev", 1), lambda: "theirs") == "theirs"  # another collection runs
    release.set()
    worker.join(10)
    assert answers == ["groups"]


def test_the_answer_is_reused_for_the_same_key_only_and_a_failure_frees_the_collection() -> None:
    jobs = DuplicateJobs(max_answers=2)
    calls: list[str] = []

    def compute(value: str):  # noqa: ANN202
        def run() -> str:
            calls.append(value)
            return value

        return run

    assert jobs.run("a", (1,), compute("first")) == "first"
    assert jobs.run("a", (1,), compute("again")) == "first" and calls == ["first"]  # kept
    assert jobs.run("a", (2,), compute("new revision")) == "new revision"  # the collection changed
    jobs.run("b", (1,), compute("b"))
    jobs.run("c", (1,), compute("c"))  # only two answers are kept: a's goes
    assert jobs.run("a", (2,), compute("recomputed")) == "recomputed"

    def failing() -> str:
        raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        jobs.run("d", (1,), failing)
    assert jobs.run("d", (1,), compute("d")) == "d"  # not left "running"
