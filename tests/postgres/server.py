"""A real PostgreSQL server for the outbox example's tests.

The server is Debian's `postgresql` package run as a plain process (bin/setup --tests
installs it when missing): initdb into a fresh temporary directory, `postgres` listening on
127.0.0.1 only, on a free port, with its socket in that directory, so it never meets a
system cluster. PostgreSQL refuses to run as root; as root the server runs as the package's
`postgres` user, in a directory that user owns. It is stopped by its PID: SIGINT (fast
shutdown), then SIGKILL if it has not exited in time.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.util import missing_tool, wait_until
from xconsumer.zkserver import free_port

INSTALL_HINT = "bin/setup --tests installs Debian's postgresql package"
STOP_TIMEOUT = 20.0


def find_bindir() -> Path | None:
    """The newest installed server version's bin directory (Debian keeps the server binaries
    off PATH, one directory per major version)."""
    found = [Path(p).parent for p in glob.glob("/usr/lib/postgresql/*/bin/initdb")]
    found.sort(key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0)
    if found:
        return found[-1]
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def psycopg_module() -> Any:
    try:
        import psycopg
    except ImportError:
        missing_tool("psycopg 3 is not installed (it is in the test extras: "
                     "pip install -e '.[test]')")
    return psycopg


@dataclass
class PostgresServer:
    bindir: Path
    tmp: Path
    port: int = 0
    proc: subprocess.Popen | None = None
    user: str | None = None  # the system user the server runs as, when we are root

    @property
    def data(self) -> Path:
        return self.tmp / "data"

    @property
    def log_path(self) -> Path:
        return self.tmp / "postgres.log"

    def dsn(self, dbname: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{dbname}"

    def _as_server_user(self) -> dict[str, Any]:
        if self.user is None:
            return {}
        pw = pwd.getpwnam(self.user)
        return {"user": pw.pw_uid, "group": pw.pw_gid, "extra_groups": [],
                "env": dict(os.environ, HOME=str(self.tmp), USER=self.user)}

    def start(self) -> None:
        if os.geteuid() == 0:
            try:
                pwd.getpwnam("postgres")
            except KeyError:
                missing_tool("PostgreSQL refuses to run as root and there is no 'postgres' "
                             f"user to run it as ({INSTALL_HINT}, which creates it)")
            self.user = "postgres"
            shutil.chown(self.tmp, user="postgres", group="postgres")
        init = subprocess.run(
            [str(self.bindir / "initdb"), "-D", str(self.data), "-U", "postgres",
             "--auth=trust", "-E", "UTF8", "--no-sync", "--no-instructions"],
            capture_output=True, text=True, timeout=120, **self._as_server_user())
        assert init.returncode == 0, f"initdb failed:\n{init.stdout}\n{init.stderr}"
        for _attempt in range(5):  # the free port may be taken between probe and bind
            self.port = free_port()
            if self._launch():
                return
        raise AssertionError(f"postgres did not start:\n{self.log_tail()}")

    def _launch(self) -> bool:
        cmd = [str(self.bindir / "postgres"), "-D", str(self.data), "-p", str(self.port),
               "-c", "listen_addresses=127.0.0.1", "-c", f"unix_socket_directories={self.tmp}",
               "-c", "fsync=off", "-c", "synchronous_commit=off",
               "-c", "full_page_writes=off", "-c", "max_connections=100"]
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                         cwd=self.tmp, **self._as_server_user())
        psycopg = psycopg_module()

        def ready() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                return True
            with psycopg.connect(self.dsn(), connect_timeout=2):
                return True

        wait_until(ready, 30, interval=0.05,
                   message=lambda: f"postgres not accepting connections:\n{self.log_tail()}")
        if self.proc.poll() is None:
            return True
        self.proc = None
        return False

    def log_tail(self, lines: int = 40) -> str:
        if not self.log_path.exists():
            return "(no log)"
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGINT)  # fast shutdown: roll back, disconnect, exit
        try:
            proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)

    def create_database(self) -> str:
        psycopg = psycopg_module()
        name = f"t_{uuid.uuid4().hex[:16]}"
        with psycopg.connect(self.dsn(), autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        return self.dsn(name)

