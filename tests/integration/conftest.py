"""Fixtures shared by the in-process node tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from xconsumer.node import Node


@pytest.fixture
def record(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "record.jsonl"
    monkeypatch.setenv("XCONSUMER_TEST_RECORD", str(path))
    monkeypatch.setenv("XCONSUMER_TEST_RELEASE", str(tmp_path / "release"))
    return path


@pytest.fixture
def nodes() -> Iterator[list[Node]]:
    started: list[Node] = []
    yield started
    for node in started:
        node.stop(timeout=5)
        if node.client.connected:  # a node left with stuck slots keeps its session
            node.client.stop()
            node.client.close()
