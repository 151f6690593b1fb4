"""Fixtures: one real PostgreSQL server per test session (see server.py), and a fresh
database for each test, so tests never see each other's rows."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.postgres.server import INSTALL_HINT, PostgresServer, find_bindir, psycopg_module
from tests.util import missing_tool


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    psycopg_module()
    bindir = find_bindir()
    if bindir is None:
        missing_tool(f"PostgreSQL is not installed (no initdb found; {INSTALL_HINT})")
    # Not pytest's tmp_path: its parents are private to the user running pytest, and the
    # server's user must reach its directory.
    tmp = Path(tempfile.mkdtemp(prefix="xconsumer-pg-"))
    server = PostgresServer(bindir, tmp)
    try:
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture
def pg_dsn(postgres_server: PostgresServer) -> str:
    """A fresh, empty database of this test only."""
    return postgres_server.create_database()
