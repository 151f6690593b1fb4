"""Discovery of the hooks beside the handlers: `Keys<Name>()`, `Assign<Name>(ctx, slots)`,
`Revoke<Name>(ctx, slots)` (no ZooKeeper)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.unit.test_works import _isolate_works_imports, make_works  # noqa: F401
from xconsumer.errors import WorksError
from xconsumer.strategies import Member
from xconsumer.works import Handler, WorksRegistry, discover


def test_hooks_are_found_as_module_functions_and_work_methods(tmp_path: Path) -> None:
    works = make_works(tmp_path, {
        "orders.py": """
            def RunOrders(ctx): return "run"
            def KeysOrders(): return ["p0", "p1"]
            def AssignOrders(ctx, slots): return ("assign", ctx, slots)
        """,
        "klass.py": """
            class Work:
                def Revokeorders(self, ctx, slots): return ("revoke", ctx, slots)
                def AssignOther(self, ctx, slots=None): return "other"
        """,
    })
    reg = discover(works)
    assert reg.names() == ["RunOrders"]  # hooks are not runnable handlers
    assert reg.hook_names() == ["AssignOrders", "AssignOther", "KeysOrders", "Revokeorders"]
    assert set(reg.handlers) == {"RunOrders", "AssignOrders", "AssignOther", "KeysOrders",
                                 "Revokeorders"}
    keys = reg.hook("Keys", "orders")
    assert keys is not None and keys() == ["p0", "p1"]
    assign = reg.hook("Assign", "orders")
    assert assign is not None and assign("C", [1]) == ("assign", "C", [1])
    assert assign.origin == "works/orders.py:AssignOrders"
    revoke = reg.hook("Revoke", "orders")  # the exact spelling, like Run + workName
    assert revoke is not None and revoke("C", [2]) == ("revoke", "C", [2])
    assert revoke.origin == "works/klass.py:Work.Revokeorders"
    assert reg.hook("Revoke", "other") is None
    assert reg.hook("Assign", "other") is not None


def test_a_node_with_only_a_hook_cannot_run_the_work(tmp_path: Path) -> None:
    works = make_works(tmp_path, {"a.py": "def AssignX(ctx, slots): pass\n"
                                          "def KeysX(): return []\n"})
    reg = discover(works)
    assert not reg.has("x")
    with pytest.raises(WorksError, match="no handler for workName 'x'.*found: none"):
        reg.resolve("x")
    assert not Member("a", 0, frozenset(reg.names())).can_run("x")
    assert not Member("a", 0, frozenset(reg.handlers)).can_run("x")


def test_duplicate_hooks_name_both_places(tmp_path: Path) -> None:
    works = make_works(tmp_path, {
        "a.py": "class Work:\n    def AssignX(self, ctx, slots): pass\n",
        "b.py": "\ndef AssignX(ctx, slots): pass\n",
    })
    with pytest.raises(WorksError) as err:
        discover(works)
    assert str(err.value) == ("handler AssignX is defined twice: works/a.py:2 (Work.AssignX) "
                              "and works/b.py:2 (AssignX)")


@pytest.mark.parametrize(("source", "message"), [
    ("def KeysX(ctx): pass\n", "KeysX in works/a.py:1 must take no arguments"),
    ("\ndef AssignX(ctx): pass\n",
     "AssignX in works/a.py:2 must take two arguments (ctx, slots)"),
    ("def RevokeX(ctx, slots, more): pass\n",
     "RevokeX in works/a.py:1 must take two arguments (ctx, slots)"),
    ("def RevokeX(ctx, slots, *, how): pass\n",
     "RevokeX in works/a.py:1 must take two arguments (ctx, slots)"),
])
def test_a_hook_with_the_wrong_signature_fails_discovery_with_file_and_line(
        tmp_path: Path, source: str, message: str) -> None:
    works = make_works(tmp_path, {"a.py": source})
    with pytest.raises(WorksError, match=message.replace("(", r"\(").replace(")", r"\)")):
        discover(works)


def test_variadic_and_defaulted_hooks_are_accepted(tmp_path: Path) -> None:
    works = make_works(tmp_path, {"a.py": "def AssignX(*args): return args\n"
                                          "def RevokeX(ctx, slots, extra=1): return extra\n"
                                          "def KeysX(limit=3): return list(range(limit))\n"})
    reg = discover(works)
    assert reg.hook("Assign", "x")("c", ["s"]) == ("c", ["s"])
    assert reg.hook("Revoke", "x")("c", ["s"]) == 1
    assert reg.hook("Keys", "x")() == [0, 1, 2]


def test_classes_and_lookalikes_are_not_hooks(tmp_path: Path) -> None:
    works = make_works(tmp_path, {"a.py": """
        from collections.abc import KeysView
        class Assignment:
            def __init__(self, a, b, c): pass
        Revoked = 3
        def RunX(ctx): pass
    """})
    reg = discover(works)
    assert reg.hook_names() == []
    assert reg.names() == ["RunX"]


def test_a_registry_from_plain_functions_checks_and_keeps_hooks() -> None:
    def run(ctx):
        return ctx

    def assign(ctx, slots):
        return len(slots)

    reg = WorksRegistry({"RunA": run, "AssignA": assign, "KeysA": lambda: ["k"]}, Path("app"))
    assert isinstance(reg.handlers["AssignA"], Handler)
    assert reg.names() == ["RunA"]
    assert reg.resolve("a")(5) == 5
    assert reg.hook("Assign", "a")(None, [1, 2]) == 2
    assert reg.hook("Keys", "a")() == ["k"]
    with pytest.raises(WorksError, match="AssignB in .* must take two arguments"):
        WorksRegistry({"AssignB": run}, Path("app"))
    with pytest.raises(ValueError, match="unknown hook prefix"):
        reg.hook("Start", "a")
