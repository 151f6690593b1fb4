"""What a leader's pass may take from leader.DocMemo without asking ZooKeeper: only what
was read, confirmed or written in that pass, one entry's document, version and mzxid
together, never an older answer that came late (found by review: the API thread reads
through the same memo as the controller)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from xconsumer.leader import DocMemo

DOC = {"generation": 1}


def test_an_entry_stands_for_its_pass_only() -> None:
    memo = DocMemo()
    assert memo.current() is None
    memo.remember(10, DOC, version=3)
    assert memo.current() == (DOC, 3, 10)
    memo.expire()
    assert memo.current() is None
    memo.confirmed(10, 3)  # a stat found it unchanged
    assert memo.current() == (DOC, 3, 10)
    memo.expire()
    memo.vouch()  # its watch has not fired
    assert memo.current() == (DOC, 3, 10)


def test_a_refused_publish_forgets_the_entry() -> None:
    memo = DocMemo()
    memo.remember(10, DOC, version=3)
    memo.forget()
    memo.vouch()
    assert memo.current() is None and memo.mzxid is None
    memo.remember(10, DOC, version=3)  # that stale answer, come late: not taken again
    assert memo.mzxid is None
    memo.remember(11, DOC, version=4)
    assert memo.current() == (DOC, 4, 11)


def test_a_copy_has_a_lock_of_its_own() -> None:
    import copy
    import pickle
    memo = DocMemo()
    memo.remember(10, DOC, version=3)
    for twin in (copy.deepcopy(memo), pickle.loads(pickle.dumps(memo))):
        assert twin.current() == (DOC, 3, 10) and twin._lock is not memo._lock


def test_without_a_version_nothing_stands_for_a_read() -> None:
    memo = DocMemo()
    memo.remember(10, DOC)  # e.g. the document of a create: no version known
    memo.vouch()
    assert memo.current() is None


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["remember", "confirm", "expire", "vouch",
                                           "forget"]),
                          st.integers(1, 6), st.integers(0, 4)), max_size=30))
def test_property_the_entry_never_goes_back_and_never_mixes(ops) -> None:
    """Whatever order reads, stats and writes are answered in: the entry's mzxid never goes
    back (zxids only grow), an answer no newer than a forgotten entry is never taken again,
    and `current()` pairs a document only with the version and mzxid it was remembered or
    confirmed with."""
    memo = DocMemo()
    docs = {m: {"generation": m} for m in range(1, 7)}
    newest = None
    floor = -1
    versions: dict[int, set[int]] = {}
    for op, mzxid, version in ops:
        if op == "remember":
            memo.remember(mzxid, docs[mzxid], version=version)
            if (newest is None or mzxid >= newest) and mzxid > floor:
                newest = mzxid
                versions.setdefault(mzxid, set()).add(version)
        elif op == "confirm":
            memo.confirmed(mzxid, version)
            if mzxid == newest:
                versions[mzxid].add(version)
        elif op == "expire":
            memo.expire()
        elif op == "vouch":
            memo.vouch()
        else:
            memo.forget()
            floor = max(floor, newest if newest is not None else -1)
            newest = None
        assert memo.mzxid == newest
        current = memo.current()
        if current is not None:
            doc, got_version, got_mzxid = current
            assert got_mzxid == newest and doc is docs[got_mzxid]
            assert got_version in versions[got_mzxid]
