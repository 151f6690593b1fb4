"""Run a real ZooKeeper (Debian's package) as a plain child process for development and tests.

Tests and fault drills need a server they fully own: one they can stop, SIGKILL, pause and
restart on the same port and data, without systemd or Docker. Everything here is addressed by
PID, never by process name, so parallel runs on one machine cannot hurt each other.
"""

from __future__ import annotations

import argparse
import atexit
import logging
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from pathlib import Path
from types import TracebackType
from typing import Any, NoReturn

from kazoo.client import KazooClient
from loguru import logger

from xconsumer.errors import XConsumerError
from xconsumer.procfs import wait_stopped

JAVA_DIR = Path("/usr/share/java")
CLASSPATH_ENV = "XCONSUMER_ZK_CLASSPATH"
MAIN_CLASS = "org.apache.zookeeper.server.quorum.QuorumPeerMain"
_LOG4J = """log4j.rootLogger=INFO, CONSOLE
log4j.appender.CONSOLE=org.apache.log4j.ConsoleAppender
log4j.appender.CONSOLE.layout=org.apache.log4j.PatternLayout
log4j.appender.CONSOLE.layout.ConversionPattern=%d{ISO8601} - %-5p [%t:%C{1}@%L] - %m%n
log4j.logger.org.apache.zookeeper.server.NIOServerCnxn=ERROR
"""
# NIOServerCnxn logs a stack trace at WARN for every client that disconnects; in a test run
# that is most of the log, and it pushes the useful lines out of the tail shown on failure.
# Readiness probes connect while the server is still refusing clients; kazoo would log every
# refused attempt, which is expected noise here.
_PROBE_LOG = logging.getLogger("xconsumer.zkserver.probe")
_PROBE_LOG.setLevel(logging.CRITICAL)
# Servers we own and have not detached, stopped at interpreter exit so a crashed test run does
# not leave JVMs behind.
_LIVE: weakref.WeakSet[ZooKeeperServer] = weakref.WeakSet()


def find_classpath() -> str:
    """Classpath of the installed ZooKeeper; the env override serves non-Debian installs."""
    override = os.environ.get(CLASSPATH_ENV)
    if override:
        return override
    jar = JAVA_DIR / "zookeeper.jar"
    if not jar.is_file():
        raise XConsumerError(f"ZooKeeper is not installed (no {jar}): run `bin/zk install`")
    # The Debian jar's manifest pulls in its other dependencies; these two only give it a
    # logging backend, so the server still runs (silently) without them.
    extra = [JAVA_DIR / "slf4j-log4j12.jar", JAVA_DIR / "log4j-1.2.jar"]
    return ":".join(str(p) for p in [jar, *extra] if p.is_file())


def _find_java() -> str:
    home = os.environ.get("JAVA_HOME")
    java = str(Path(home) / "bin" / "java") if home else shutil.which("java")
    if not java or not Path(java).is_file():
        raise XConsumerError("Java is not installed (no `java` on PATH): run `bin/zk install`")
    return java


def install(*, quiet: bool = False) -> None:
    """Install ZooKeeper and Java with apt, so a fresh CI machine needs only this one step."""
    packages = [] if (JAVA_DIR / "zookeeper.jar").is_file() else ["zookeeper"]
    if not shutil.which("java"):
        packages.append("default-jre-headless")
    if not packages:
        logger.info("ZooKeeper and Java are already installed")
        return
    if not shutil.which("apt-get"):
        raise XConsumerError(
            "cannot install ZooKeeper: apt-get not found; install ZooKeeper 3.5+ and Java "
            f"yourself and set {CLASSPATH_ENV}"
        )
    prefix: list[str] = []
    if os.geteuid() != 0:
        sudo = shutil.which("sudo")
        if not sudo:
            raise XConsumerError("installing ZooKeeper needs root: rerun `bin/zk install` as root")
        prefix = [sudo, "-n"]
    # sudo resets the environment, so the variable goes through `env`, not os.environ.
    apt = [*prefix, "env", "DEBIAN_FRONTEND=noninteractive", "apt-get"]
    for cmd in ([*apt, "update", "-q"], [*apt, "install", "-y", "-q", *packages]):
        logger.info("running {}", " ".join(cmd))
        out = subprocess.run(cmd, capture_output=quiet, text=True, stdin=subprocess.DEVNULL)
        if out.returncode != 0:
            lines = [ln for ln in (out.stderr or "").splitlines() if ln.strip()]
            why = f": {lines[-1].strip()}" if lines else ""
            raise XConsumerError(f"`{' '.join(cmd)}` failed (exit {out.returncode}){why}")
    find_classpath()
    _find_java()


# Ports picked for servers we start lie below the kernel's ephemeral range (from which it
# hands out port-0 binds and the local ports of outgoing connections), from this one up.
PICK_FLOOR = 10000
_EPHEMERAL_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")


def _ephemeral_start() -> int:
    try:
        return int(_EPHEMERAL_RANGE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768  # Linux's default


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """`count` distinct ports free on `host` now, below the kernel's ephemeral range.

    A server may be stopped and started again on its port (a restart, a test's outage). In
    between, the port must not go to another process: any other program's port-0 bind (a
    node's admin server, another test's server) or outgoing connection gets a port from the
    ephemeral range only, so a port below it stays ours unless someone picks it by number.
    Without /proc, or with no such port free, the kernel picks (bind to port 0)."""
    floor, top = PICK_FLOOR, _ephemeral_start()
    rng = random.SystemRandom()
    ports: list[int] = []
    tries = 0
    while len(ports) < count and top - floor > count * 4 and tries < 200 * count:
        tries += 1
        port = rng.randrange(floor, top)
        if port not in ports and not port_in_use(host, port):
            ports.append(port)
    while len(ports) < count:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind((host, 0))
            port = int(s.getsockname()[1])
        if port not in ports:
            ports.append(port)
    return ports


def free_port(host: str = "127.0.0.1") -> int:
    """A port free on `host` now, for a server of ours (see free_ports)."""
    return free_ports(1, host)[0]


def port_in_use(host: str, port: int) -> bool:
    # SO_REUSEADDR so a port in TIME_WAIT (right after our own stop) counts as free, like it
    # does for ZooKeeper itself; only a live listener makes the bind fail.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return True
        return False


def four_letter_word(host: str, port: int, word: str, timeout: float = 2.0) -> str:
    """Send a 4lw command; the timeout matters because a starting server may never answer."""
    with socket.create_connection((host, port), timeout=timeout) as s:
        s.settimeout(timeout)
        s.sendall(word.encode())
        chunks = []
        while chunk := s.recv(4096):
            chunks.append(chunk)
    return b"".join(chunks).decode(errors="replace")


def _kazoo_ready(hosts: str, timeout: float) -> bool:
    client = KazooClient(
        hosts=hosts,
        timeout=max(timeout, 1.0),
        connection_retry={"max_tries": -1, "delay": 0.05, "max_delay": 0.1},
        logger=_PROBE_LOG,
    )
    try:
        client.start(timeout=timeout)
        return True
    except Exception:
        return False
    finally:
        client.stop()
        client.close()


class _StartedInWith:
    """`with X() as x`: start on entry (closing again if the start fails), close on exit."""

    def start(self, timeout: float = 30.0) -> Any:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Any:
        try:
            return self.start()
        except BaseException:
            self.close()
            raise

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None,
                 tb: TracebackType | None) -> None:  # fmt: skip
        self.close()


class ZooKeeperServer(_StartedInWith):
    """One ZooKeeper JVM owned by this process (standalone, or a member of an ensemble)."""

    def __init__(
        self,
        *,
        port: int = 0,
        host: str = "127.0.0.1",
        data_dir: Path | None = None,
        tick_time_ms: int = 100,
        min_session_timeout_ms: int = 200,
        max_session_timeout_ms: int = 60000,
        heap: str = "128m",
        log_path: Path | None = None,
        my_id: int | None = None,
        peers: list[tuple[int, int, int]] | None = None,
    ) -> None:
        # The port is fixed once so restart() comes back where clients expect it.
        self.port = port or free_port(host)
        self.host = host
        self._data_dir = Path(data_dir).resolve() if data_dir else None
        self._owns_data_dir = data_dir is None
        self.tick_time_ms = tick_time_ms
        self.min_session_timeout_ms = min_session_timeout_ms
        self.max_session_timeout_ms = max_session_timeout_ms
        self.heap = heap
        self._log_path = Path(log_path).resolve() if log_path else None
        self.my_id = my_id
        self.peers = list(peers or [])
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def hosts(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def data_dir(self) -> Path:
        if self._data_dir is None:  # created lazily so an unused server leaves no temp dir
            self._data_dir = Path(tempfile.mkdtemp(prefix="xconsumer-zk-"))
        return self._data_dir

    @property
    def log_path(self) -> Path:
        return self._log_path or self.data_dir / "zookeeper.log"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def _write_config(self) -> Path:
        d = self.data_dir
        d.mkdir(parents=True, exist_ok=True)
        lines = [
            f"tickTime={self.tick_time_ms}",
            "initLimit=20",
            "syncLimit=10",
            f"dataDir={d}",
            f"clientPort={self.port}",
            f"clientPortAddress={self.host}",
            f"minSessionTimeout={self.min_session_timeout_ms}",
            f"maxSessionTimeout={self.max_session_timeout_ms}",
            "admin.enableServer=false",
            "4lw.commands.whitelist=*",
            # A dev/test server: no fsync per write and small log preallocation keep it fast
            # and light; data still survives stop/kill because the OS keeps the pages.
            "forceSync=no",
            "preAllocSize=1024",
            # After a SIGKILL before the first snapshot, refuse-to-start is not helpful here.
            "snapshot.trust.empty=true",
        ]
        for peer_id, peer_port, election_port in self.peers:
            lines.append(f"server.{peer_id}={self.host}:{peer_port}:{election_port}")
        if self.my_id is not None:
            (d / "myid").write_text(f"{self.my_id}\n")
        (d / "log4j.properties").write_text(_LOG4J)
        cfg = d / "zoo.cfg"
        cfg.write_text("\n".join(lines) + "\n")
        return cfg

    def _spawn(self) -> None:
        """Launch the JVM without waiting: ensemble members only serve once a quorum is up."""
        if self.running:
            return
        classpath, java = find_classpath(), _find_java()
        if port_in_use(self.host, self.port):
            raise XConsumerError(f"cannot start ZooKeeper: port {self.hosts} is already in use")
        cfg = self._write_config()
        cmd = [
            java, f"-Xmx{self.heap}", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1",
            "-Dzookeeper.root.logger=INFO,CONSOLE",
            f"-Dlog4j.configuration=file:{cfg.parent / 'log4j.properties'}",
            "-cp", classpath, MAIN_CLASS, str(cfg),
        ]  # fmt: skip
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            log.write(f"--- xconsumer: starting ZooKeeper on {self.hosts} ---\n".encode())
            log.flush()
            self._proc = subprocess.Popen(
                cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                cwd=self.data_dir, start_new_session=True,
            )  # fmt: skip
        _LIVE.add(self)
        logger.debug("ZooKeeper {} spawned as pid {}", self.hosts, self._proc.pid)

    def _wait_ready(self, deadline: float, timeout: float) -> None:
        while True:
            assert self._proc is not None
            code = self._proc.poll()
            if code is not None:
                self._proc = None
                _LIVE.discard(self)
                raise XConsumerError(self._failure(f"exited during startup with code {code}"))
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self.kill()
                raise XConsumerError(self._failure(f"was not ready within {timeout:g}s"))
            # Cheap check first (kazoo is slow to give up on a closed port). A bind test rather
            # than a connect, which the server would log as a failed client.
            if not port_in_use(self.host, self.port):
                time.sleep(min(0.05, remaining))
                continue
            if _kazoo_ready(self.hosts, min(1.0, remaining)):
                return

    def _failure(self, what: str) -> str:
        # First line stands alone (the CLI prints only it); the log tail follows for tests.
        return (
            f"ZooKeeper on {self.hosts} {what} (log: {self.log_path})\n"
            f"--- last log lines ---\n{self.log_tail(20)}"
        )

    def start(self, timeout: float = 30.0) -> ZooKeeperServer:
        if self.running:
            return self
        started = time.monotonic()
        self._spawn()
        self._wait_ready(started + timeout, timeout)
        logger.info("ZooKeeper ready at {} (pid {}, {:.2f}s)", self.hosts, self.pid,
                    time.monotonic() - started)  # fmt: skip
        return self

    def _signal(self, sig: signal.Signals) -> None:
        if self._proc is not None and self._proc.poll() is None:
            os.kill(self._proc.pid, sig)

    def stop(self, timeout: float = 10.0) -> None:
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            self._signal(signal.SIGCONT)  # a paused JVM cannot act on SIGTERM
            self._signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                logger.warning("ZooKeeper pid {} ignored SIGTERM; killing it", proc.pid)
                self._signal(signal.SIGKILL)
                proc.wait()
        self._proc = None
        _LIVE.discard(self)

    def kill(self) -> None:
        """SIGKILL: the crash case, which fault tests need to tell apart from a clean stop."""
        proc = self._proc
        if proc is None:
            return
        self._signal(signal.SIGKILL)
        proc.wait()
        self._proc = None
        _LIVE.discard(self)

    def restart(self, timeout: float = 30.0) -> ZooKeeperServer:
        self.stop()
        return self.start(timeout)

    def pause(self, timeout: float = 10.0) -> None:
        """SIGSTOP: the server looks alive on TCP but answers nothing, like a long GC pause.
        Returns once every thread of the JVM is stopped: one can answer after the signal
        was sent (see procfs)."""
        proc = self._proc
        if proc is None or proc.poll() is not None:
            return
        self._signal(signal.SIGSTOP)
        if not wait_stopped(proc.pid, timeout):
            raise XConsumerError(f"ZooKeeper (pid {proc.pid}) was sent SIGSTOP but did not "
                                 f"stop within {timeout:g}s")

    def resume(self) -> None:
        self._signal(signal.SIGCONT)

    def detach(self) -> None:
        """Let the server outlive this process (the CLI's `start`)."""
        self._proc = None
        self._owns_data_dir = False
        _LIVE.discard(self)

    def close(self) -> None:
        self.stop()
        if self._owns_data_dir and self._data_dir is not None:
            shutil.rmtree(self._data_dir, ignore_errors=True)
            self._data_dir = None

    def mode(self, timeout: float = 1.0) -> str | None:
        """`leader`, `follower`, `standalone`, or None when not serving."""
        try:
            out = four_letter_word(self.host, self.port, "srvr", timeout)
        except OSError:
            return None
        return next((ln.split(":", 1)[1].strip() for ln in out.splitlines()
                     if ln.startswith("Mode:")), None)  # fmt: skip

    def log_tail(self, lines: int = 50) -> str:
        try:
            with open(self.log_path, "rb") as f:
                f.seek(0, os.SEEK_END)
                f.seek(max(0, f.tell() - 400 * lines - 4096))
                data = f.read()
        except OSError:
            return "(no log)"
        return "\n".join(data.decode(errors="replace").splitlines()[-lines:])


class ZooKeeperEnsemble(_StartedInWith):
    """A loopback quorum, for tests where one member dies and clients must carry on."""

    def __init__(self, *, size: int = 3, **server_kwargs: Any) -> None:
        taken = {"port", "data_dir", "log_path", "my_id", "peers"} & server_kwargs.keys()
        if taken:
            raise TypeError(f"ZooKeeperEnsemble picks {sorted(taken)} itself")
        host = server_kwargs.get("host", "127.0.0.1")
        ports = free_ports(3 * size, host)
        peers = [(i + 1, ports[size + i], ports[2 * size + i]) for i in range(size)]
        self.members = [
            ZooKeeperServer(port=ports[i], my_id=i + 1, peers=peers, **server_kwargs)
            for i in range(size)
        ]

    @property
    def hosts(self) -> str:
        return ",".join(m.hosts for m in self.members)

    def leader(self) -> ZooKeeperServer | None:
        return next((m for m in self.members if m.running and m.mode() == "leader"), None)

    def start(self, timeout: float = 30.0) -> ZooKeeperEnsemble:
        started = time.monotonic()
        deadline = started + timeout
        try:
            for m in self.members:
                m._spawn()
            for m in self.members:
                m._wait_ready(deadline, timeout)
            while not (self.leader() and _kazoo_ready(self.hosts, 1.0)):
                if time.monotonic() > deadline:
                    raise XConsumerError(f"ZooKeeper ensemble {self.hosts} has no leader "
                                         f"after {timeout:g}s")  # fmt: skip
                time.sleep(0.05)
        except BaseException:
            self.stop()
            raise
        logger.info("ZooKeeper ensemble ready at {} ({:.2f}s)", self.hosts,
                    time.monotonic() - started)  # fmt: skip
        return self

    def stop(self) -> None:
        for m in self.members:
            m.stop()

    def close(self) -> None:
        for m in self.members:
            m.close()


@atexit.register
def _stop_leftovers() -> None:
    for server in list(_LIVE):
        server.stop(timeout=5)


# ---- CLI ---------------------------------------------------------------------------------


def _read_pid(pidfile: Path) -> int | None:
    try:
        return int(pidfile.read_text().strip())
    except (OSError, ValueError):
        return None


def _zk_alive(pid: int) -> bool:
    """Alive and still ZooKeeper: the pid may have been reused, or be an unreaped zombie."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    proc = Path("/proc") / str(pid)
    if not Path("/proc/self").exists():
        return True
    try:
        state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
        cmdline = (proc / "cmdline").read_bytes()
    except (OSError, IndexError):
        return False
    return state != "Z" and MAIN_CLASS.encode() in cmdline


def _configured_port(run_dir: Path) -> str:
    try:
        for line in (run_dir / "zoo.cfg").read_text().splitlines():
            if line.startswith("clientPort="):
                return line.split("=", 1)[1].strip()
    except OSError:
        pass
    return "?"


def _running_line(run_dir: Path, pid: int) -> str:
    return f"ZooKeeper running at 127.0.0.1:{_configured_port(run_dir)} (pid {pid})"


def _cli_start(run_dir: Path, port: int, timeout: float) -> int:
    pidfile = run_dir / "zk.pid"
    pid = _read_pid(pidfile)
    if pid and _zk_alive(pid):
        print(_running_line(run_dir, pid))
        return 0
    server = ZooKeeperServer(port=port, data_dir=run_dir)
    server.start(timeout)
    assert server.pid is not None
    pidfile.write_text(f"{server.pid}\n")
    print(_running_line(run_dir, server.pid))
    server.detach()
    return 0


def _cli_stop(run_dir: Path, timeout: float) -> int:
    pidfile = run_dir / "zk.pid"
    pid = _read_pid(pidfile)
    if not pid or not _zk_alive(pid):
        pidfile.unlink(missing_ok=True)
        print("ZooKeeper is not running")
        return 0
    os.kill(pid, signal.SIGCONT)
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
        os.kill(pid, sig)
        deadline = time.monotonic() + wait
        while _zk_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if not _zk_alive(pid):
            pidfile.unlink(missing_ok=True)
            print(f"ZooKeeper stopped (pid {pid})")
            return 0
    raise XConsumerError(f"ZooKeeper pid {pid} survived SIGKILL")


def _cli_status(run_dir: Path) -> int:
    pid = _read_pid(run_dir / "zk.pid")
    if pid and _zk_alive(pid):
        print(_running_line(run_dir, pid))
        return 0
    print("ZooKeeper is not running")
    return 1


def _cli_run(run_dir: Path, port: int, timeout: float) -> int:
    pidfile = run_dir / "zk.pid"
    pid = _read_pid(pidfile)
    if pid and _zk_alive(pid):
        raise XConsumerError(f"ZooKeeper already runs from {run_dir} (pid {pid}): `bin/zk stop`")
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    server = ZooKeeperServer(port=port, data_dir=run_dir)
    try:
        server.start(timeout)
        pidfile.write_text(f"{server.pid}\n")
        print(_running_line(run_dir, server.pid or 0) + "; Ctrl-C stops it", flush=True)
        while not stop.wait(0.2):
            code = server._proc.poll() if server._proc else 0
            if code in (0, 128 + signal.SIGTERM):  # `bin/zk stop` from another shell
                break
            if code is not None:
                raise XConsumerError(f"ZooKeeper exited with code {code} (log: {server.log_path})")
    finally:
        server.close()
        pidfile.unlink(missing_ok=True)
    print("ZooKeeper stopped")
    return 0


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one line, like every other zk error
        self.exit(2, f"zk: {message} (see bin/zk --help)\n")


def main(argv: list[str] | None = None) -> int:
    parser = _Parser(prog="bin/zk", description="Local ZooKeeper for development and tests.")
    parser.add_argument("command", choices=["install", "start", "stop", "status", "run"])
    parser.add_argument("--port", type=int, default=2181, help="client port (default 2181)")
    parser.add_argument("--dir", type=Path, default=Path(".run/zk"),
                        help="data dir holding zk.pid and the log (default .run/zk)")  # fmt: skip
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds to wait")
    parser.add_argument("--quiet", action="store_true", help="install: hide apt output")
    args = parser.parse_args(argv)
    # A CLI answer is one line; library debug logging would bury it.
    logger.remove()
    logger.add(sys.stderr, level="WARNING", format="{message}")
    run_dir: Path = args.dir.resolve()
    try:
        if args.command == "install":
            install(quiet=args.quiet)
            print(f"ZooKeeper installed ({find_classpath().split(':')[0]})")
            return 0
        if args.command == "status":
            return _cli_status(run_dir)
        if args.command == "stop":
            return _cli_stop(run_dir, args.timeout)
        run_dir.mkdir(parents=True, exist_ok=True)
        if args.command == "start":
            return _cli_start(run_dir, args.port, args.timeout)
        return _cli_run(run_dir, args.port, args.timeout)
    except XConsumerError as e:
        print(f"zk: {str(e).splitlines()[0]}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("zk: interrupted", file=sys.stderr)
        return 130
    except OSError as e:
        print(f"zk: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
