"""Ports for servers we start: below the kernel's ephemeral range, so a server restarted on its
port does not find it taken by another process's port-0 bind in between (two test workers run
at once, each starting servers and nodes)."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from xconsumer import zkserver
from xconsumer.zkserver import PICK_FLOOR, free_port, free_ports


def test_ports_are_distinct_free_and_below_the_ephemeral_range() -> None:
    top = zkserver._ephemeral_start()
    ports = free_ports(9)
    assert len(set(ports)) == 9
    assert all(PICK_FLOOR <= p < top for p in ports), (ports, top)
    held = []
    try:
        for p in ports:  # each can be listened on
            s = socket.socket()
            s.bind(("127.0.0.1", p))
            s.listen()
            held.append(s)
    finally:
        for s in held:
            s.close()


def test_a_port_in_use_is_never_picked(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = busy.getsockname()[1]
        # A range of five ports, the first of them in use.
        monkeypatch.setattr(zkserver, "PICK_FLOOR", taken)
        monkeypatch.setattr(zkserver, "_ephemeral_start", lambda: taken + 5)
        picks = {free_port() for _ in range(20)}
    assert taken not in picks and picks <= set(range(taken + 1, taken + 5)), (taken, picks)


def test_without_room_below_the_range_the_kernel_picks(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    fake = tmp_path / "ip_local_port_range"
    fake.write_text(f"{PICK_FLOOR + 3}\t60999\n")
    monkeypatch.setattr(zkserver, "_EPHEMERAL_RANGE", fake)
    ports = free_ports(3)
    assert len(set(ports)) == 3 and all(p >= PICK_FLOOR + 3 for p in ports), ports
    monkeypatch.setattr(zkserver, "_EPHEMERAL_RANGE", tmp_path / "missing")
    assert zkserver._ephemeral_start() == 32768
