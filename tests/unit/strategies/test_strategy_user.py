"""Finding user strategies: classes in works/, entry points, and the checks at start-up."""

from __future__ import annotations

from importlib.metadata import EntryPoint
from pathlib import Path

import pytest

from tests.strategy_cases import ALL, T
from xconsumer import cli
from xconsumer.config import DEFAULT_STRATEGIES, parse_config
from xconsumer.errors import ConfigError, WorksError, XConsumerError
from xconsumer.strategies import STRATEGIES, ConsistentHash, Member, round_robin, validate_plan
from xconsumer.strategies import user as user_mod
from xconsumer.strategies.user import (
    ENTRY_POINT_GROUP,
    available_strategies,
    runner_for,
    strategy_names,
    works_strategies,
)
from xconsumer.works import discover

STRATEGY_WORKS = Path(__file__).resolve().parents[2] / "strategy_works"
HEADER = "from xconsumer.strategies import Plan, Strategy\n\n"
CALL = ("    def __call__(self, tasks, members, *, leader, leader_works=True, previous=None):\n"
        "        return Plan({})\n")


def works(tmp_path: Path, **modules: str):
    root = tmp_path / "works"
    root.mkdir()
    (root / "__init__.py").write_text("")
    for name, source in modules.items():
        (root / f"{name}.py").write_text(HEADER + source)
    return discover(root)


def test_the_test_works_package_offers_its_strategies():
    registry = discover(STRATEGY_WORKS)
    assert set(works_strategies(registry)) == {"reverse_names", "raising", "gives_to_ghost",
                                               "sleepy"}
    found = works_strategies(registry)["reverse_names"]
    assert found.origin.startswith("strategy_works/strategies.py:")
    assert found.origin.endswith("(ReverseNames)")
    table, user = available_strategies(registry, "reverse_names")
    assert user == {"reverse_names", "raising", "gives_to_ghost", "sleepy"}
    assert {"round_robin", "sticky", "consistent_hash"} <= set(table)


def test_a_base_class_without_a_name_is_not_a_strategy(tmp_path: Path):
    registry = works(tmp_path, base=f"class Base(Strategy):\n{CALL}\n\n"
                                   "class Mine(Base):\n    name = 'mine'\n")
    assert list(works_strategies(registry)) == ["mine"]


def test_a_class_imported_into_another_module_is_found_once(tmp_path: Path):
    registry = works(tmp_path, a=f"class Mine(Strategy):\n    name = 'mine'\n{CALL}",
                     b="from works.a import Mine\n")
    assert list(works_strategies(registry)) == ["mine"]


@pytest.mark.parametrize(("modules", "expected"), [
    ({"a": f"class A(Strategy):\n    name = 'same'\n{CALL}",
      "b": f"class B(Strategy):\n    name = 'same'\n{CALL}"},
     r"strategy 'same' is defined twice: works/a.py:3 \(A\) and works/b.py:3 \(B\)"),
    ({"a": f"class A(Strategy):\n    name = 'sticky'\n{CALL}"},
     r"strategy works/a.py:3 \(A\) is named 'sticky', like a built-in strategy"),
    ({"a": f"class A(Strategy):\n    name = 7\n{CALL}"},
     r"`name` must be a non-empty string, got 7"),
    ({"a": f"class A(Strategy):\n    name = 'a'\n    def __init__(self, x):\n"
           f"        pass\n{CALL}"},
     r"cannot create strategy works/a.py:3 \(A\): TypeError: .* \(a strategy class is "
     r"created once, with no arguments\)"),
])
def test_bad_strategy_classes_fail_the_start_with_one_line(tmp_path: Path, modules, expected):
    registry = works(tmp_path, **modules)
    with pytest.raises(WorksError, match=expected) as info:
        works_strategies(registry)
    assert "\n" not in str(info.value)


def test_entry_points_are_listed_and_only_the_wanted_one_is_loaded(monkeypatch):
    eps = [EntryPoint("ep_rr", "xconsumer.strategies.round_robin:round_robin",
                      ENTRY_POINT_GROUP),
           EntryPoint("ep_class", "tests.strategy_works.strategies:ReverseNames",
                      ENTRY_POINT_GROUP),
           EntryPoint("broken", "no_such_module_anywhere:thing", ENTRY_POINT_GROUP)]
    monkeypatch.setattr(user_mod, "entry_points", lambda group: [
        e for e in eps if e.group == group])
    assert {"ep_rr", "ep_class", "broken"} <= set(strategy_names(None))
    table, user = available_strategies(None, "ep_rr")
    assert table["ep_rr"] is round_robin and user == {"ep_rr"}
    table, user = available_strategies(None, "ep_class")
    assert type(table["ep_class"]).__name__ == "ReverseNames"
    assert "broken" not in table  # listed, never imported unless it is the one configured
    with pytest.raises(WorksError, match="cannot load strategy entry point broken = "
                                         "no_such_module_anywhere:thing"):
        available_strategies(None, "broken")


def test_the_node_gets_consistent_hash_with_the_configured_load_factor():
    table, user = available_strategies(None, "round_robin", hash_load_factor=1.5)
    assert table["consistent_hash"] == ConsistentHash(1.5) and user == frozenset()


def test_an_unknown_name_is_a_config_error_listing_the_known_ones():
    registry = discover(STRATEGY_WORKS)
    with pytest.raises(ConfigError) as info:
        runner_for(registry, "revers_names", timeout=2, hash_load_factor=1.25,
                   source="app.toml")
    message = str(info.value)
    assert message.startswith("app.toml: [assignment] strategy: unknown assignment strategy "
                              "'revers_names' (known: balanced, consistent_hash, gives_to_ghost, ")
    assert "reverse_names" in message and "\n" not in message


def test_the_runner_plans_with_the_user_strategy():
    r = runner_for(discover(STRATEGY_WORKS), "reverse_names", timeout=2, hash_load_factor=1.25)
    ms = [Member("a", 0, ALL), Member("b", 1, ALL)]
    plan, error = r.run("reverse_names", [T("x", "a", 3)], ms, leader="a")
    assert error is None and [s.key for s in plan.nodes["b"]] == ["x/0", "x/2"]


# --- config and CLI ------------------------------------------------------------------------


def test_the_config_knows_the_same_built_ins():
    """config.py does not import the strategies (it is read by tools that never plan)."""
    assert set(DEFAULT_STRATEGIES) == set(STRATEGIES)


def test_new_assignment_keys_and_their_checks():
    config = parse_config("[assignment]\nstrategy_timeout = 0.5\nhash_load_factor = 1\n")
    assert (config.assignment.strategy_timeout, config.assignment.hash_load_factor) == (0.5, 1.0)
    defaults = parse_config("").assignment
    assert (defaults.strategy_timeout, defaults.hash_load_factor) == (2.0, 1.25)
    with pytest.raises(ConfigError, match=r"hash_load_factor must be a number >= 1"):
        parse_config("[assignment]\nhash_load_factor = 0.9\n")
    with pytest.raises(ConfigError, match=r"strategy_timeout must be a number > 0"):
        parse_config("[assignment]\nstrategy_timeout = 0\n")
    # Names are only checked against a list when one is given (the CLI's `run` gives the
    # built-ins plus the works package's strategies).
    assert parse_config('[assignment]\nstrategy = "mine"\n', strategies=None) \
        .assignment.strategy == "mine"


def cli_run(tmp_path: Path, strategy: str, capsys) -> tuple[int, str]:
    config = tmp_path / "app.toml"
    config.write_text(f'[assignment]\nstrategy = "{strategy}"\n[admin]\nenabled = false\n'
                      '[[task]]\nname = "s"\nworkName = "spin"\nworkerNum = 1\n')
    code = cli.main(["run", "--config", str(config), "--works", str(STRATEGY_WORKS),
                     "--log-level", "ERROR"])
    return code, capsys.readouterr().err


def test_the_cli_checks_the_name_against_the_works_strategies(tmp_path: Path, capsys,
                                                              monkeypatch):
    code, err = cli_run(tmp_path, "reverse_nams", capsys)
    assert code == 2
    assert err.startswith(f"xconsumer: error: {tmp_path / 'app.toml'}: [assignment] strategy "
                          "must be one of 'balanced', 'consistent_hash', 'gives_to_ghost', "
                          "'raising', ")
    assert err.endswith("got 'reverse_nams'; did you mean reverse_names?\n")

    class Reached(XConsumerError):
        exit_code = 9

    def fake_node(config, registry, **_):
        raise Reached(config.assignment.strategy)

    monkeypatch.setattr("xconsumer.node.Node", fake_node)
    code, err = cli_run(tmp_path, "reverse_names", capsys)
    assert (code, err.strip()) == (9, "xconsumer: error: reverse_names")


def test_the_readme_example_is_a_valid_strategy(tmp_path: Path):
    """The example users copy must be discovered and plan validly."""
    readme = (Path(__file__).resolve().parents[3] / "README.md").read_text()
    section = readme[readme.index("### Strategies from user code"):]
    code = section[section.index("```python\n") + 10:section.index("```\n", 10)]
    root = tmp_path / "works"
    root.mkdir()
    (root / "__init__.py").write_text("")
    (root / "strategies.py").write_text(code)
    strategies = works_strategies(discover(root))
    assert list(strategies) == ["least_named"]
    ms = [Member("b", 0, ALL), Member("a", 1, ALL, draining=True), Member("c", 2, ALL)]
    tasks = [T("x", "a", 3), T("y", "zz", 1)]
    plan = strategies["least_named"].strategy(tasks, ms, leader="b")
    assert validate_plan(plan, tasks, ms, "b", True) == []
    assert [s.key for s in plan.nodes["b"]] == ["x/0", "x/2"]
