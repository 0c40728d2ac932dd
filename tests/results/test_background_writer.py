"""The MLflow writer's thread: calls in order, a bounded queue that blocks the caller when full,
and a stop that runs everything queued before it."""

from __future__ import annotations

import threading

import pytest

from bench.results.background import QUEUE_SIZE, BackgroundWriter, WriterStopped


def test_calls_run_in_order_and_stop_drains_the_queue():
    writer = BackgroundWriter("test-writer")
    done: list[int] = []
    gate, holding = threading.Event(), threading.Event()
    writer.submit(lambda: (holding.set(), gate.wait()))  # holds the thread: everything below waits in the queue
    assert holding.wait(5)
    futures = [writer.submit(lambda i=i: done.append(i) or i) for i in range(50)]
    assert done == [] and writer.queued == 50
    gate.set()
    writer.stop()
    assert done == list(range(50))
    assert [f.result(timeout=0) for f in futures] == list(range(50))


def test_a_full_queue_blocks_the_caller_until_there_is_room():
    assert QUEUE_SIZE >= 1
    writer = BackgroundWriter("test-writer", max_queued=2)
    gate, holding = threading.Event(), threading.Event()
    writer.submit(lambda: (holding.set(), gate.wait()))
    assert holding.wait(5)  # the thread took the gate call: the queue is empty again
    writer.submit(lambda: None)
    writer.submit(lambda: None)
    submitted = threading.Event()
    third = threading.Thread(target=lambda: (writer.submit(lambda: None), submitted.set()))
    third.start()
    assert not submitted.wait(0.5), "a third call went into a queue of two"
    gate.set()
    assert submitted.wait(5), "the caller stayed blocked after the queue had room"
    third.join()
    writer.stop()


def test_an_error_reaches_the_caller_and_the_writer_goes_on():
    writer = BackgroundWriter("test-writer")

    def fail() -> None:
        raise RuntimeError("store down")

    failed = writer.submit(fail)
    after = writer.submit(lambda: "next")
    writer.stop()
    with pytest.raises(RuntimeError, match="store down"):
        failed.result(timeout=0)
    assert after.result(timeout=0) == "next"


def test_no_call_is_taken_after_stop():
    writer = BackgroundWriter("test-writer")
    writer.stop()
    writer.stop()  # idempotent
    with pytest.raises(WriterStopped):
        writer.submit(lambda: None)
    with pytest.raises(ValueError):
        BackgroundWriter("test-writer", max_queued=0)
