"""The mutation list must stay applicable: every snippet occurs exactly once in its file.

The full mutation run (bin/mutants) takes minutes and is not part of CI; this fast check is,
so an edit that moves or rewrites a guarded line fails here instead of turning its mutant
into one that silently plants nothing."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.mutation.mutants import MUTANTS, Mutant

REPO = Path(__file__).resolve().parents[2]


def test_mutant_ids_are_unique_and_enough() -> None:
    ids = [m.id for m in MUTANTS]
    assert len(ids) == len(set(ids))
    assert len(ids) >= 15


@pytest.mark.parametrize("mutant", MUTANTS, ids=lambda m: m.id)
def test_each_mutant_applies_exactly_once(mutant: Mutant) -> None:
    text = (REPO / mutant.file).read_text()
    assert text.count(mutant.original) == 1, f"{mutant.id}: snippet not found exactly once"
    assert mutant.replacement != mutant.original
    assert mutant.tests and mutant.why
    for test in mutant.tests:
        if not test.startswith("-k "):
            assert (REPO / test.split("::")[0]).is_file(), test
