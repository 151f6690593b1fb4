"""Mutation check: does the test suite catch a bug in each safety-critical line?

    bin/mutants                 # every mutant in tests/mutation/mutants.py
    bin/mutants --only ID ...   # some of them
    bin/mutants --list          # what the list covers

The working tree is snapshotted once (tracked and untracked-but-not-ignored files, as they
are now; never the virtualenv), so edits made while the check runs do not mix into it. For
each mutant: copy that snapshot into a temporary directory, replace the mutant's snippet there
(a snippet not found exactly once is an error: the list is stale), and run its tests in
that copy with this same Python (`PYTHONPATH` and the working directory are the copy, so the
mutated package is the one imported, also by node processes the tests start). Mutants run
one after the other: the tests start ZooKeeper and node processes and time themselves;
running mutants side by side would make them flaky.

A mutant is *killed* when pytest exits 1 (a test failed). Any other exit (usage error, no
tests collected, an internal error) or a timeout is an *error*: it says nothing about the
tests, so it is never counted as killed. Before the mutants, the same tests run once on an
unmutated copy (the baseline): a test that fails there would "kill" every mutant for nothing.
Exit status: 0 only when the baseline passed and every mutant was killed.

Not part of CI (it takes minutes); run it before calling a change to a guarded line done.
tests/unit/test_mutants_list.py, which CI runs, checks that every snippet still occurs
exactly once, so the list cannot rot silently.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from tests.mutation.mutants import MUTANTS, Mutant

REPO = Path(__file__).resolve().parents[2]
TIMEOUT = 240.0  # per mutant; a hang (a guard that stops nothing) ends as "error"
PYTEST_ARGS = ["-x", "-q", "-p", "no:cacheprovider", "--durations=0"]


def repo_files(repo: Path = REPO) -> list[str]:
    """Tracked files plus untracked ones that are not ignored: what the tests see now."""
    out = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=repo,
                         check=True, capture_output=True).stdout
    return sorted({f for f in out.decode().split("\0") if f and (repo / f).is_file()})


def copy_repo(dest: Path, files: Sequence[str], repo: Path = REPO) -> None:
    for name in files:
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(repo / name, target)


def apply(mutant: Mutant, root: Path) -> None:
    """Replace the snippet in the copy; refuses a snippet that is not there exactly once."""
    path = root / mutant.file
    text = path.read_text()
    count = text.count(mutant.original)
    if count != 1:
        raise ValueError(f"{mutant.id}: snippet occurs {count} times in {mutant.file}")
    path.write_text(text.replace(mutant.original, mutant.replacement))


def pytest_args(tests: Sequence[str]) -> list[str]:
    """Node ids as they are; "-k EXPR" entries as a -k option (joined with `or`)."""
    ids = [t for t in tests if not t.startswith("-k ")]
    exprs = [t[3:] for t in tests if t.startswith("-k ")]
    return ids + (["-k", " or ".join(f"({e})" for e in exprs)] if exprs else [])


def run_tests(root: Path, tests: Sequence[str], timeout: float) -> tuple[str, float, str]:
    """("passed" | "failed" | "error", seconds, last lines of output) of pytest in `root`."""
    env = {**os.environ, "PYTHONPATH": str(root), "PYTHONDONTWRITEBYTECODE": "1"}
    env.pop("XCONSUMER_TEST_ZK", None)  # each run starts its own server
    cmd = [sys.executable, "-m", "pytest", *PYTEST_ARGS, *pytest_args(tests)]
    started = time.monotonic()
    proc = subprocess.Popen(cmd, cwd=root, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        output, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, 9)  # pytest, its ZooKeeper and node processes: one group
        output, _ = proc.communicate()
        return "error", time.monotonic() - started, f"timeout after {timeout:g}s\n{output}"
    seconds = time.monotonic() - started
    code = proc.returncode
    verdict = {0: "passed", 1: "failed"}.get(code, "error")
    tail = "\n".join(output.splitlines()[-15:])
    return verdict, seconds, f"pytest exit {code}\n{tail}"


def check_imports_copy(root: Path) -> None:
    """The mutated package must be the one imported, not the virtualenv's editable install
    of the original (which would make every mutant survive)."""
    env = {**os.environ, "PYTHONPATH": str(root)}
    out = subprocess.run([sys.executable, "-c", "import xconsumer; print(xconsumer.__file__)"],
                         cwd=root, env=env, check=True, capture_output=True, text=True).stdout
    if not Path(out.strip()).resolve().is_relative_to(root.resolve()):
        raise SystemExit(f"the copy does not import its own xconsumer ({out.strip()})")


def in_copy(snapshot: Path, mutant: Mutant | None, tests: Sequence[str],
            timeout: float) -> tuple[str, float, str]:
    """Run `tests` in a fresh copy of `snapshot` with `mutant` applied (None: unmutated)."""
    with tempfile.TemporaryDirectory(prefix="xc-mutant-") as tmp:
        root = Path(tmp) / "repo"
        shutil.copytree(snapshot, root, symlinks=True)
        check_imports_copy(root)
        if mutant is not None:
            try:
                apply(mutant, root)
            except ValueError as exc:
                return "error", 0.0, str(exc)
        return run_tests(root, tests, timeout)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bin/mutants", description=__doc__.split("\n")[0])
    parser.add_argument("--only", nargs="+", metavar="ID", help="run only these mutants")
    parser.add_argument("--list", action="store_true", help="list the mutants and exit")
    parser.add_argument("--no-baseline", action="store_true",
                        help="skip the run of the tests on the unmutated copy")
    parser.add_argument("--timeout", type=float, default=TIMEOUT,
                        help=f"seconds per mutant (default {TIMEOUT:g})")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="print pytest's last lines for every mutant, not only failures")
    args = parser.parse_args(argv)
    known = {m.id: m for m in MUTANTS}
    unknown = sorted(set(args.only or ()) - set(known))
    if unknown:
        parser.error(f"unknown mutant id(s): {', '.join(unknown)}")
    chosen = [known[i] for i in args.only] if args.only else list(MUTANTS)
    if args.list:
        for m in chosen:
            print(f"{m.id:38} {m.file:24} {m.why}")
        return 0
    # One snapshot of the working tree for the whole run: others may edit it meanwhile, and
    # every mutant (and the baseline) must see the same code.
    with tempfile.TemporaryDirectory(prefix="xc-mutants-") as tmp:
        snapshot = Path(tmp)
        copy_repo(snapshot, repo_files())
        return run_all(snapshot, chosen, args)


def run_all(snapshot: Path, chosen: Sequence[Mutant], args: argparse.Namespace) -> int:
    started = time.monotonic()
    if not args.no_baseline:
        tests = list(dict.fromkeys(t for m in chosen for t in m.tests))
        verdict, seconds, tail = in_copy(snapshot, None, tests, args.timeout * 2)
        print(f"baseline: {verdict} ({len(tests)} test ids, {seconds:.1f}s)", flush=True)
        if verdict != "passed":
            print(tail)
            print("the targeted tests must pass unmutated; fix that first")
            return 2
    results: list[tuple[Mutant, str, float]] = []
    for mutant in chosen:
        verdict, seconds, tail = in_copy(snapshot, mutant, mutant.tests, args.timeout)
        status = {"failed": "killed", "passed": "SURVIVED"}.get(verdict, "ERROR")
        results.append((mutant, status, seconds))
        print(f"{status:8} {mutant.id:38} {seconds:6.1f}s  {mutant.file}", flush=True)
        if status != "killed" or args.verbose:
            print("    " + tail.replace("\n", "\n    "), flush=True)
    killed = sum(s == "killed" for _, s, _ in results)
    survived = [m.id for m, s, _ in results if s == "SURVIVED"]
    errors = [m.id for m, s, _ in results if s == "ERROR"]
    print(f"\n{killed}/{len(results)} killed, {len(survived)} survived, {len(errors)} errors "
          f"in {time.monotonic() - started:.0f}s")
    if survived:
        print("survived: " + ", ".join(survived))
    if errors:
        print("errors: " + ", ".join(errors))
    return 0 if killed == len(results) else 1


if __name__ == "__main__":
    sys.exit(main())
