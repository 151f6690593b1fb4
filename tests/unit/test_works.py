"""Handler discovery by reflection, on works packages built on the fly (no ZooKeeper)."""

from __future__ import annotations

import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from loguru import logger

from tests.util import wait_until
from xconsumer.errors import WorksError
from xconsumer.works import Handler, SlotContextProtocol, candidate_names, discover

SHIPPED_WORKS = Path(__file__).resolve().parents[2] / "works"
HELD_SLEEP = 60.0  # a FakeCtx(hold=True) sleep: ended by the stop long before this


@pytest.fixture(autouse=True)
def _isolate_works_imports() -> Iterator[None]:
    """Each test imports its own `works`; leave the process as we found it for other tests."""
    saved_modules = {n: m for n, m in sys.modules.items() if n == "works" or n.startswith("works.")}
    saved_path = list(sys.path)
    yield
    for name in [n for n in sys.modules if n == "works" or n.startswith("works.")]:
        del sys.modules[name]
    sys.modules.update(saved_modules)
    sys.path[:] = saved_path


def make_works(root: Path, files: dict[str, str]) -> Path:
    works = root / "works"
    works.mkdir(parents=True)
    files = {"__init__.py": "", **files}
    for rel, text in files.items():
        target = works / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(textwrap.dedent(text))
    return works


class FakeCtx:
    """Minimal SlotContextProtocol: `sleep` really waits, but wakes up at once when stopped.

    It notes every `sleep` (True: slept its full time, False: cut short by a stop), so a test
    can tell a handler that returned because of the stop from one that slept on, whatever
    the machine's speed. With `hold`, every sleep lasts until the stop: a test can then stop
    the handler mid-wait for certain.
    """

    def __init__(self, hold: bool = False) -> None:
        self.hold = hold
        self.task = "t1"
        self.slot = 0
        self.node = "node-a"
        self.generation = 1
        self.fence = 7
        self.stop_event = threading.Event()
        self.sleeping = threading.Event()  # set once the handler waits in ctx.sleep
        self.slept: list[bool] = []
        self.logger = logger.bind(node=self.node, task=self.task, slot=self.slot)

    @property
    def stopping(self) -> bool:
        return self.stop_event.is_set()

    def sleep(self, seconds: float) -> bool:
        self.sleeping.set()
        full = not self.stop_event.wait(HELD_SLEEP if self.hold else seconds)
        self.slept.append(full)
        return full


@pytest.fixture
def messages() -> Iterator[list[str]]:
    captured: list[str] = []
    sink = logger.add(lambda m: captured.append(m.record["message"]), level="DEBUG")
    yield captured
    logger.remove(sink)


# --- naming -------------------------------------------------------------------------------


def test_candidate_names() -> None:
    assert candidate_names("test01") == ("RunTest01", "Runtest01")
    assert candidate_names("fooBar") == ("RunFooBar", "RunfooBar")
    assert candidate_names("Test01") == ("RunTest01",)
    with pytest.raises(WorksError):
        candidate_names("")


def test_resolve_accepts_both_spellings(tmp_path: Path) -> None:
    works = make_works(tmp_path, {"a.py": "def Runtest02(ctx): return 2\n"})
    reg = discover(works)
    assert reg.resolve("test02").name == "Runtest02"
    assert reg.has("test02") and not reg.has("test03")


# --- where handlers are found ---------------------------------------------------------------


def test_work_class_method_found(tmp_path: Path) -> None:
    works = make_works(
        tmp_path,
        {
            "example.py": """
                class Work:
                    def __init__(self):
                        self.calls = 0

                    def RunTest01(self, ctx):
                        self.calls += 1
                        return ("t01", ctx, self.calls)

                    def _RunHidden(self, ctx):
                        pass

                    def helper(self):
                        pass
            """
        },
    )
    reg = discover(works)
    assert reg.names() == ["RunTest01"]
    handler = reg.resolve("test01")
    assert handler.origin == "works/example.py:Work.RunTest01"
    assert handler.takes_ctx
    assert handler("CTX") == ("t01", "CTX", 1)
    assert handler("CTX")[2] == 2  # one shared instance


def test_module_function_found_and_non_handlers_ignored(tmp_path: Path) -> None:
    works = make_works(
        tmp_path,
        {
            "jobs.py": """
                Run = 1
                RunNumber = 3
                def RunSlow(ctx=None): return "slow"
                def run_lower(ctx): pass
                def _RunPrivate(ctx): pass
            """
        },
    )
    reg = discover(works)
    assert reg.names() == ["RunSlow"]
    assert reg.handlers["RunSlow"].origin == "works/jobs.py:RunSlow"
    assert reg.handlers["RunSlow"].takes_ctx  # optional positional still counts


def test_function_in_init_found(tmp_path: Path) -> None:
    works = make_works(tmp_path, {"__init__.py": "def RunInit(ctx): return ctx * 2\n"})
    reg = discover(works)
    assert reg.resolve("init")(21) == 42
    assert reg.handlers["RunInit"].origin == "works/__init__.py:RunInit"


def test_subpackage_and_reexport_are_not_duplicates(tmp_path: Path) -> None:
    works = make_works(
        tmp_path,
        {
            "__init__.py": "from works.sub.deep import RunDeep\n",
            "sub/__init__.py": "",
            "sub/deep.py": "from works.helpers import VALUE\ndef RunDeep(*args): return VALUE\n",
            "helpers.py": "VALUE = 5\n",
        },
    )
    reg = discover(works)
    assert reg.names() == ["RunDeep"]
    assert reg.handlers["RunDeep"].origin == "works/sub/deep.py:RunDeep"
    assert reg.resolve("deep")(None) == 5


def test_duplicate_handler_names_both_places(tmp_path: Path) -> None:
    works = make_works(
        tmp_path,
        {
            "a.py": "class Work:\n    def RunX(self, ctx): pass\n",
            "b.py": "def RunX(ctx): pass\n",
        },
    )
    with pytest.raises(WorksError) as err:
        discover(works)
    assert str(err.value) == (
        "handler RunX is defined twice: works/a.py:2 (Work.RunX) and works/b.py:1 (RunX)"
    )


# --- signatures ---------------------------------------------------------------------------


def test_handler_without_argument_is_called_without_ctx(tmp_path: Path) -> None:
    works = make_works(tmp_path, {"go.py": "def RunHello(): return 'hi'\n"})
    handler = discover(works).resolve("hello")
    assert isinstance(handler, Handler)
    assert handler.takes_ctx is False
    assert handler(object()) == "hi"


def test_handler_with_two_required_arguments_rejected(tmp_path: Path) -> None:
    works = make_works(tmp_path, {"a.py": "def RunX(ctx, other): pass\n"})
    with pytest.raises(WorksError, match=r"RunX in works/a.py takes 2 required arguments"):
        discover(works)


# --- import failures ----------------------------------------------------------------------


def test_import_error_names_file_line_and_cause(tmp_path: Path) -> None:
    works = make_works(tmp_path, {"broken.py": "X = 1\n\nimport nope\n"})
    with pytest.raises(WorksError) as err:
        discover(works)
    assert str(err.value) == (
        "cannot import works/broken.py (line 3): ModuleNotFoundError: No module named 'nope'"
    )
    assert isinstance(err.value.__cause__, ModuleNotFoundError)


def test_runtime_error_in_helper_names_the_failing_file(tmp_path: Path) -> None:
    works = make_works(
        tmp_path,
        {"a.py": "import works.b\n", "b.py": "\ndef f():\n    return undefined\nf()\n"},
    )
    with pytest.raises(WorksError) as err:
        discover(works)
    assert "cannot import works/a.py (works/b.py line 3): NameError" in str(err.value)
    assert isinstance(err.value.__cause__, NameError)


def test_syntax_error_names_file_and_line(tmp_path: Path) -> None:
    works = make_works(tmp_path, {"bad.py": "x = 1\ny = 2\ndef oops(:\n"})
    with pytest.raises(WorksError) as err:
        discover(works)
    assert str(err.value).startswith("cannot import works/bad.py (line 3): SyntaxError")
    assert isinstance(err.value.__cause__, SyntaxError)


def test_error_in_package_init(tmp_path: Path) -> None:
    works = make_works(tmp_path, {"__init__.py": "raise RuntimeError('boom')\n"})
    with pytest.raises(WorksError, match=r"works/__init__.py \(line 1\): RuntimeError: boom"):
        discover(works)
    assert "works" not in sys.modules


def test_missing_dir_and_missing_init(tmp_path: Path) -> None:
    with pytest.raises(WorksError, match="does not exist"):
        discover(tmp_path / "nowhere")
    (tmp_path / "works").mkdir()
    with pytest.raises(WorksError, match="__init__.py"):
        discover(tmp_path / "works")


def test_default_dir_is_works_in_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make_works(tmp_path, {"a.py": "def RunHere(): pass\n"})
    monkeypatch.chdir(tmp_path)
    assert discover().names() == ["RunHere"]


# --- registry -----------------------------------------------------------------------------


def test_resolve_unknown_lists_available(tmp_path: Path) -> None:
    works = make_works(
        tmp_path,
        {
            "a.py": "class Work:\n    def RunTest01(self, ctx): pass\n",
            "b.py": "def RunSlow(): pass\n",
        },
    )
    with pytest.raises(WorksError) as err:
        discover(works).resolve("test09")
    assert str(err.value) == (
        "no handler for workName 'test09': expected a function RunTest09 (or Runtest09) in a "
        "module of works/ or a method of its Work class; found: RunSlow, RunTest01"
    )


def test_two_works_dirs_in_one_process(tmp_path: Path) -> None:
    first = make_works(tmp_path / "one", {"jobs.py": "def RunOne(): return 1\n"})
    second = make_works(tmp_path / "two", {"jobs.py": "def RunTwo(): return 2\n"})
    assert discover(first).names() == ["RunOne"]
    reg = discover(second)
    assert reg.names() == ["RunTwo"]
    assert reg.path == second.resolve()
    assert Path(sys.modules["works.jobs"].__file__ or "").parent == second.resolve()
    assert discover(first).resolve("one")(None) == 1


# --- the shipped example package ----------------------------------------------------------


def test_shipped_works_package() -> None:
    reg = discover(SHIPPED_WORKS)
    assert reg.names() == ["RunCountdown", "RunHello", "RunOutbox", "RunPoller", "RunTest01"]
    assert reg.handlers["RunTest01"].origin == "works/examples.py:Work.RunTest01"
    assert reg.handlers["RunHello"].takes_ctx is False
    assert isinstance(FakeCtx(), SlotContextProtocol)


def _run_with_stop(handler: Handler) -> None:
    """Runs the handler in a thread, stops it while it waits in ctx.sleep, and checks that it
    returned without waiting again: prompt on any machine, without timing it."""
    ctx = FakeCtx(hold=True)
    thread = threading.Thread(target=handler, args=(ctx,), daemon=True)
    thread.start()
    wait_until(ctx.sleeping.is_set, 10, message=f"{handler.name} never waited in ctx.sleep")
    ctx.stop_event.set()
    thread.join(timeout=10.0)  # a bound for a hung handler, not a speed requirement
    assert not thread.is_alive(), f"{handler.name} ignored the stop request"
    assert ctx.slept == [False], f"{handler.name} waited again after the stop: {ctx.slept}"


def test_shipped_handlers_run_and_stop_promptly(messages: list[str]) -> None:
    reg = discover(SHIPPED_WORKS)
    reg.resolve("test01")(FakeCtx())
    assert any("fence 7" in m for m in messages)
    reg.resolve("hello")(FakeCtx())
    assert any("hello" in m for m in messages)

    _run_with_stop(reg.resolve("countdown"))
    assert any("countdown interrupted" in m for m in messages)
    _run_with_stop(reg.resolve("poller"))
    assert any("poller stopping" in m for m in messages)

    stopped = FakeCtx()
    stopped.stop_event.set()
    reg.resolve("countdown")(stopped)
    reg.resolve("poller")(stopped)
    assert True not in stopped.slept  # already stopped: neither waited at all


def test_shipped_countdown_completes_when_not_stopped(messages: list[str]) -> None:
    discover(SHIPPED_WORKS).resolve("countdown")(FakeCtx())
    assert messages[-1] == "countdown finished"
