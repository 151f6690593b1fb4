"""The pipe between an isolated child and its node, for checkpoint requests: a child that
dies mid-message or never reads its answer must not hang the node (found by review: with
queues, a half-written request blocked the slot thread for ever, and a large answer to a
dead child hung the node's exit)."""

from __future__ import annotations

import multiprocessing
import os
import struct
import time
from types import SimpleNamespace
from typing import Any

from loguru import logger

from xconsumer.isolation import _CheckpointServer


class _Store:
    def __init__(self) -> None:
        self.committed: list[Any] = []

    def commit(self, value: Any) -> None:
        self.committed.append(value)

    def value(self) -> Any:
        return "x" * 200_000  # an answer larger than a pipe's buffer


def _runner(store: _Store) -> Any:
    return SimpleNamespace(checkpoint=store, slot=SimpleNamespace(task="t", index=0),
                           log=logger)


def _pipes() -> tuple[Any, Any, Any, Any]:
    requests_r, requests_w = multiprocessing.Pipe(duplex=False)
    replies_r, replies_w = multiprocessing.Pipe(duplex=False)
    return requests_r, requests_w, replies_r, replies_w


def test_a_request_cut_off_by_the_childs_death_ends_the_server():
    requests_r, requests_w, replies_r, replies_w = _pipes()
    server = _CheckpointServer(_runner(_Store()), requests_r, replies_w)
    # A length header for 100 kB, then 10 bytes, then the writer is gone (a SIGKILL).
    os.write(requests_w.fileno(), struct.pack("!i", 100_000) + b"0123456789")
    requests_w.close()
    replies_r.close()
    began = time.monotonic()
    server.close()
    assert time.monotonic() - began < 2.0


def test_a_large_answer_to_a_child_that_is_gone_ends_the_server():
    requests_r, requests_w, replies_r, replies_w = _pipes()
    store = _Store()
    server = _CheckpointServer(_runner(store), requests_r, replies_w)
    requests_w.send((1, "commit", "5"))
    requests_w.send((2, "read", None))
    assert replies_r.poll(5) and replies_r.recv() == (1, True, None)
    replies_r.close()  # the child died before reading the large answer
    requests_w.close()
    began = time.monotonic()
    server.close()
    assert time.monotonic() - began < 2.0 and store.committed == [5]
