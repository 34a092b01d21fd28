"""Throwaway PostgreSQL cluster for the test suite.

The tests start their own short-lived PostgreSQL server from the server
binaries installed on the machine (``initdb``, ``pg_ctl``, ``postgres``).
Everything lives in one temporary directory that is removed on ``stop()``:

* ``<base>/data`` -- the cluster's data directory (created by ``initdb``),
* ``<base>/sock`` -- the Unix-socket directory,
* ``<base>/log``  -- the server log written by ``pg_ctl -l``.

The server listens on TCP ``127.0.0.1`` on a free port, trusts every local
connection, and runs with durability switched off (``fsync=off`` etc.) since
its data is disposable.

PostgreSQL's binaries refuse to run as root.  When this module runs as root
(as it does in CI) every server command is run as the ``postgres`` OS user
through ``runuser -u postgres --`` (the user is created with ``useradd`` when
it does not exist), and the temporary directory is handed to that user.  Run
as any other user, the binaries are run directly.

Typical use::

    with PostgresCluster() as pg:
        engine = sqlalchemy.create_engine(pg.url)
        ...
        pg.server_stop()    # simulate a database outage
        pg.server_start()   # same port, same data

Only the standard library is needed, plus ``psycopg`` (version 3) for the
readiness check and for creating databases.
"""

from __future__ import annotations

import atexit
import glob
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Any, Sequence

__all__ = [
    "PostgresCluster",
    "PostgresUnavailable",
    "find_binaries",
    "DEFAULT_DATABASE",
    "SUPERUSER",
]

#: Database created by :meth:`PostgresCluster.start`.
DEFAULT_DATABASE = "hub_test"
#: Superuser role created by ``initdb`` (authentication is ``trust``).
SUPERUSER = "postgres"
#: OS user that runs the server binaries when this process is root.
OS_USER = "postgres"
#: Listen address of the server.
HOST = "127.0.0.1"

_START_TIMEOUT = 60  # seconds, passed to ``pg_ctl -t``
_STOP_TIMEOUT = 60
_INITDB_TIMEOUT = 120
_REQUIRED = ("initdb", "pg_ctl")
_SERVER_OPTIONS = (
    "-c", "fsync=off",
    "-c", "synchronous_commit=off",
    "-c", "full_page_writes=off",
    "-c", "max_connections=200",
)


class PostgresUnavailable(RuntimeError):
    """A throwaway PostgreSQL cluster could not be created, started or used.

    Raised when the server binaries are missing, when ``initdb`` or
    ``pg_ctl start`` fails, or when the started server does not accept
    connections.  The message carries the failing command's output and/or
    the tail of the server log.
    """


# ---------------------------------------------------------------------------
# Locating the binaries
# ---------------------------------------------------------------------------

def _version_key(path: str) -> tuple[int, ...]:
    """Sort key for ``/usr/lib/postgresql/<version>/bin`` (numeric version)."""
    version = Path(path).parent.name
    return tuple(int(part) for part in re.findall(r"\d+", version)) or (0,)


def _candidate_dirs() -> list[str]:
    """Directories to search for the binaries, in order of preference."""
    dirs: list[str] = []
    for entry in os.environ.get("PATH", "").split(os.pathsep):
        if entry:
            dirs.append(entry)
    dirs.append("/usr/local/bin")
    dirs.extend(
        sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=_version_key, reverse=True)
    )
    seen: set[str] = set()
    unique: list[str] = []
    for entry in dirs:
        key = os.path.abspath(entry)
        if key not in seen:
            seen.add(key)
            unique.append(entry)
    return unique


def _executable(directory: str, name: str) -> str | None:
    """Path of ``directory/name`` if it is an executable file, else None."""
    path = os.path.join(directory, name)
    if os.path.isfile(path) and os.access(path, os.X_OK):
        return path
    return None


def find_binaries() -> dict[str, str] | None:
    """Locate the PostgreSQL server binaries ``initdb`` and ``pg_ctl``.

    Directories are searched in this order: every ``PATH`` entry, then
    ``/usr/local/bin``, then ``/usr/lib/postgresql/*/bin`` with the newest
    version first.  The first directory containing *both* executables wins,
    so the two always come from the same installation.

    Returns:
        ``{"initdb": <path>, "pg_ctl": <path>}`` (plus ``"postgres"`` when
        the server executable sits in the same directory), or ``None`` when
        no directory holds both binaries.

    Raises:
        Nothing.
    """
    for directory in _candidate_dirs():
        found = {name: _executable(directory, name) for name in _REQUIRED}
        if all(found.values()):
            result = {name: str(path) for name, path in found.items()}
            server = _executable(directory, "postgres")
            if server:
                result["postgres"] = server
            return result
    return None


# ---------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------

def _is_root() -> bool:
    """True when this process runs with effective uid 0."""
    return hasattr(os, "geteuid") and os.geteuid() == 0


def _ensure_os_user() -> tuple[int, int]:
    """Return (uid, gid) of the ``postgres`` OS user, creating it if needed.

    Only called as root.  Raises PostgresUnavailable if the user is missing
    and cannot be created.
    """
    import pwd

    try:
        entry = pwd.getpwnam(OS_USER)
    except KeyError:
        useradd = shutil.which("useradd") or "/usr/sbin/useradd"
        proc = subprocess.run(
            [useradd, "--system", "--no-create-home", OS_USER],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            check=False,
        )
        try:
            entry = pwd.getpwnam(OS_USER)
        except KeyError:
            raise PostgresUnavailable(
                f"running as root and OS user {OS_USER!r} does not exist; "
                f"creating it failed (exit {proc.returncode}): {proc.stdout.strip()}"
            ) from None
    return entry.pw_uid, entry.pw_gid


def _world_traversable(path: str) -> bool:
    """True if every ancestor of ``path`` (inclusive) has the o+x bit."""
    current = Path(path).resolve()
    for part in [current, *current.parents]:
        try:
            if not part.stat().st_mode & 0o001:
                return False
        except OSError:
            return False
    return True


def _free_port() -> int:
    """Ask the kernel for a currently free TCP port on 127.0.0.1."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def _tail(path: Path, lines: int = 40) -> str:
    """Last ``lines`` lines of a text file, or a note if it cannot be read."""
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        return f"<no log at {path}: {exc}>"
    return "\n".join(text.splitlines()[-lines:])


def _pid_alive(pid: int) -> bool:
    """True if a process with this pid exists (and is not a zombie we own)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # reap it if it happens to be our child
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return False
    except ChildProcessError:
        pass
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as fh:
            return fh.read().rsplit(")", 1)[-1].split()[0] != "Z"
    except OSError:
        return True


# ---------------------------------------------------------------------------
# The cluster
# ---------------------------------------------------------------------------

class PostgresCluster:
    """A throwaway PostgreSQL cluster in a temporary directory.

    Usable as a context manager (``with PostgresCluster() as pg: ...``),
    which calls :meth:`start` on entry and :meth:`stop` on exit.  A started
    cluster is also registered with :mod:`atexit`, so a test run that
    aborts with an exception does not leave a server behind (a process
    killed with SIGKILL cannot clean up, of course).

    Attributes:
        binaries: mapping with the paths of ``initdb`` and ``pg_ctl``.
        base_dir: the temporary directory (``None`` until started).
        data_dir: ``<base_dir>/data``.
        socket_dir: ``<base_dir>/sock``.
        log_path: ``<base_dir>/log`` (server log).
        port: TCP port on 127.0.0.1 (``None`` until started).
    """

    def __init__(self, binaries: dict[str, str] | None = None) -> None:
        """Prepare (but do not start) a cluster.

        Args:
            binaries: mapping with at least ``"initdb"`` and ``"pg_ctl"``
                paths; ``None`` means :func:`find_binaries`.

        Raises:
            PostgresUnavailable: no binaries were given and none were found,
                or the given mapping lacks ``initdb``/``pg_ctl``.
        """
        if binaries is None:
            binaries = find_binaries()
            if binaries is None:
                raise PostgresUnavailable(
                    "PostgreSQL server binaries (initdb, pg_ctl) not found on PATH, "
                    "in /usr/local/bin or in /usr/lib/postgresql/*/bin"
                )
        missing = [name for name in _REQUIRED if not binaries.get(name)]
        if missing:
            raise PostgresUnavailable(f"binaries mapping lacks {', '.join(missing)}")
        self.binaries: dict[str, str] = dict(binaries)
        self.base_dir: Path | None = None
        self.port: int | None = None
        self._as_root = _is_root()
        self._owner: tuple[int, int] | None = None
        self._running = False
        self._atexit_registered = False

    # -- paths and URLs -----------------------------------------------------

    @property
    def data_dir(self) -> Path:
        """Data directory ``<base_dir>/data``; raises PostgresUnavailable if not started."""
        return self._base() / "data"

    @property
    def socket_dir(self) -> Path:
        """Unix-socket directory ``<base_dir>/sock``; raises PostgresUnavailable if not started."""
        return self._base() / "sock"

    @property
    def log_path(self) -> Path:
        """Server log file ``<base_dir>/log``; raises PostgresUnavailable if not started."""
        return self._base() / "log"

    @property
    def host(self) -> str:
        """TCP host the server listens on (always ``"127.0.0.1"``)."""
        return HOST

    @property
    def running(self) -> bool:
        """True while the server process is believed to be up."""
        return self._running

    @property
    def url(self) -> str:
        """SQLAlchemy URL of the ``hub_test`` database.

        Returns:
            ``postgresql+psycopg://postgres@127.0.0.1:PORT/hub_test``.

        Raises:
            PostgresUnavailable: the cluster has not been started.
        """
        return self.url_for(DEFAULT_DATABASE)

    def url_for(self, dbname: str) -> str:
        """SQLAlchemy URL (``postgresql+psycopg://...``) of database ``dbname``.

        Args:
            dbname: database name (not checked for existence).

        Returns:
            ``postgresql+psycopg://postgres@127.0.0.1:PORT/<dbname>``.

        Raises:
            PostgresUnavailable: the cluster has not been started.
        """
        return f"postgresql+psycopg://{SUPERUSER}@{HOST}:{self._port()}/{dbname}"

    def conninfo(self, dbname: str = DEFAULT_DATABASE) -> str:
        """libpq connection string for ``psycopg.connect``.

        Args:
            dbname: database to connect to (default ``hub_test``).

        Returns:
            ``"host=127.0.0.1 port=PORT user=postgres dbname=<dbname>"``.

        Raises:
            PostgresUnavailable: the cluster has not been started.
        """
        return f"host={HOST} port={self._port()} user={SUPERUSER} dbname={dbname}"

    def _base(self) -> Path:
        if self.base_dir is None:
            raise PostgresUnavailable("cluster not started")
        return self.base_dir

    def _port(self) -> int:
        if self.port is None:
            raise PostgresUnavailable("cluster not started")
        return self.port

    # -- lifecycle ----------------------------------------------------------

    def start(self) -> "PostgresCluster":
        """Create the cluster, start the server and create ``hub_test``.

        Steps: make a temporary directory (handed to the ``postgres`` OS
        user when running as root), ``initdb`` with trust authentication,
        UTF8 encoding and C locale, pick a free port on 127.0.0.1, start
        with ``pg_ctl -w`` (60 s timeout), wait until psycopg can connect,
        and create the database ``hub_test``.  On any failure everything
        created so far is removed again.

        Returns:
            ``self`` (so ``pg = PostgresCluster().start()`` works).

        Raises:
            PostgresUnavailable: the cluster was already started, or
                ``initdb``, the server start, the readiness check or the
                database creation failed; the message includes the command
                output and/or the server log tail.
        """
        if self.base_dir is not None:
            raise PostgresUnavailable(f"cluster already started in {self.base_dir}")
        try:
            self._make_base_dir()
            self._register_atexit()
            self._initdb()
            self._start_server(new_port=True)
            self._create_database(DEFAULT_DATABASE)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop the server (``pg_ctl stop -m immediate``) and delete all its files.

        Safe to call any number of times, before or after :meth:`start`,
        and after :meth:`server_stop`.  If ``pg_ctl`` cannot stop the server
        the postmaster is signalled directly (SIGQUIT, then SIGKILL).

        Returns:
            None.

        Raises:
            Nothing for the usual cases (errors while stopping or removing
            files are swallowed so that cleanup always completes).
        """
        if self._atexit_registered:
            atexit.unregister(self.stop)
            self._atexit_registered = False
        if self.base_dir is None:
            return
        try:
            self._stop_server(mode="immediate")
        except Exception:  # pragma: no cover - best effort
            pass
        shutil.rmtree(self.base_dir, ignore_errors=True)
        self.base_dir = None
        self.port = None
        self._running = False

    def server_stop(self, mode: str = "fast") -> None:
        """Stop the server but keep the cluster's data (simulates an outage).

        Args:
            mode: ``pg_ctl stop`` mode: ``"smart"``, ``"fast"`` (default)
                or ``"immediate"``.

        Returns:
            None.  Calling it while the server is already down does nothing.

        Raises:
            PostgresUnavailable: the cluster was never started, or the
                server could not be stopped.
        """
        self._base()
        if mode not in ("smart", "fast", "immediate"):
            raise ValueError(f"invalid pg_ctl stop mode {mode!r}")
        self._stop_server(mode=mode)

    def server_start(self) -> None:
        """Start the server again after :meth:`server_stop`, on the same port.

        Waits until the server accepts connections.  Calling it while the
        server is running does nothing.

        Returns:
            None.

        Raises:
            PostgresUnavailable: the cluster was never started (or was
                removed by :meth:`stop`), or the server failed to start
                (for instance because another process took the port).
        """
        self._base()
        if self._running and self._postmaster_pid() is not None:
            return
        self._start_server(new_port=False)

    def create_database(self, name: str) -> str:
        """Create a new, empty database in the running cluster.

        Args:
            name: database name (quoted as an SQL identifier).

        Returns:
            The SQLAlchemy URL of the new database (see :meth:`url_for`).

        Raises:
            PostgresUnavailable: the cluster is not running.
            psycopg.Error: the server rejected ``CREATE DATABASE`` (for
                instance because the database already exists).
        """
        self._port()
        if not self._running:
            raise PostgresUnavailable("server is not running")
        self._create_database(name)
        return self.url_for(name)

    def __enter__(self) -> "PostgresCluster":
        """Start the cluster (see :meth:`start`) and return it."""
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Stop the cluster and remove its files (see :meth:`stop`)."""
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self._running else ("stopped" if self.base_dir else "new")
        return f"<PostgresCluster {state} port={self.port} dir={self.base_dir}>"

    # -- internals ------------------------------------------------------------

    def _register_atexit(self) -> None:
        if not self._atexit_registered:
            atexit.register(self.stop)
            self._atexit_registered = True

    def _make_base_dir(self) -> None:
        parent: str | None = None
        if self._as_root:
            self._owner = _ensure_os_user()
            if not _world_traversable(tempfile.gettempdir()):
                # e.g. TMPDIR under /root: the postgres user could not reach it
                parent = "/tmp"
        base = Path(tempfile.mkdtemp(prefix="pgtest-", dir=parent))
        self.base_dir = base
        (base / "sock").mkdir()
        (base / "log").touch()
        if self._owner is not None:
            uid, gid = self._owner
            for path in (base, base / "sock", base / "log"):
                os.chown(path, uid, gid)
        os.chmod(base, 0o700)

    def _command(self, args: Sequence[str]) -> list[str]:
        """Prefix ``args`` with ``runuser -u postgres --`` when running as root."""
        if self._as_root:
            runuser = shutil.which("runuser") or "/usr/sbin/runuser"
            if os.path.exists(runuser):
                return [runuser, "-u", OS_USER, "--", *args]
        return list(args)

    def _env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env["LC_ALL"] = "C"
        env["LANG"] = "C"
        return env

    def _run(self, args: Sequence[str], timeout: float) -> tuple[int, str]:
        """Run a server binary; return (exit code, combined stdout/stderr).

        Output goes to a temporary file rather than a pipe so that a daemon
        inheriting the descriptors can never make us wait for EOF.
        """
        cmd = self._command(args)
        extra: dict[str, Any] = {}
        if self._as_root and cmd[0] == args[0] and self._owner is not None:
            # no runuser binary: drop privileges in the child instead
            extra = {"user": self._owner[0], "group": self._owner[1], "extra_groups": []}
        with tempfile.TemporaryFile(mode="w+", errors="replace") as out:
            try:
                proc = subprocess.run(
                    cmd,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    cwd=str(self._base()),
                    env=self._env(),
                    timeout=timeout,
                    check=False,
                    **extra,
                )
                code = proc.returncode
            except subprocess.TimeoutExpired:
                code = -1
                out.write(f"\n<timed out after {timeout} s>")
            except OSError as exc:
                code = -1
                out.write(f"\n<could not run {cmd[0]}: {exc}>")
            out.seek(0)
            return code, out.read()

    def _initdb(self) -> None:
        code, output = self._run(
            [
                self.binaries["initdb"],
                "-D", str(self.data_dir),
                "-U", SUPERUSER,
                "--auth=trust",
                "-E", "UTF8",
                "--locale=C",
                "--no-sync",
            ],
            timeout=_INITDB_TIMEOUT,
        )
        if code != 0:
            raise PostgresUnavailable(
                f"initdb failed (exit {code}) in {self.data_dir}:\n"
                f"{output.strip() or '<no output>'}"
            )

    def _server_options(self, port: int) -> str:
        opts = ["-p", str(port), "-k", str(self.socket_dir), "-h", HOST, *_SERVER_OPTIONS]
        return " ".join(shlex.quote(o) for o in opts)

    def _start_server(self, new_port: bool) -> None:
        attempts = 3 if new_port else 1
        last_error = ""
        for _ in range(attempts):
            if new_port or self.port is None:
                self.port = _free_port()
            log_offset = self._log_size()
            code, output = self._run(
                [
                    self.binaries["pg_ctl"],
                    "-D", str(self.data_dir),
                    "-l", str(self.log_path),
                    "-o", self._server_options(self.port),
                    "-t", str(_START_TIMEOUT),
                    "-w",
                    "start",
                ],
                timeout=_START_TIMEOUT + 30,
            )
            if code == 0:
                self._running = True
                self._wait_ready()
                return
            log = self._log_since(log_offset)
            last_error = (
                f"pg_ctl start failed (exit {code}) on port {self.port}:\n"
                f"{output.strip()}\n--- server log ---\n{log}"
            )
            self._kill_postmaster()  # in case it half-started (timeout)
            if "could not bind" not in log and "already in use" not in log:
                break
        raise PostgresUnavailable(last_error)

    def _log_size(self) -> int:
        try:
            return self.log_path.stat().st_size
        except OSError:
            return 0

    def _log_since(self, offset: int, lines: int = 40) -> str:
        try:
            with open(self.log_path, "rb") as fh:
                fh.seek(offset)
                text = fh.read().decode(errors="replace")
        except OSError:
            return _tail(self.log_path, lines)
        return "\n".join(text.splitlines()[-lines:]) or "<empty>"

    def _wait_ready(self, timeout: float = _START_TIMEOUT) -> None:
        """Poll until psycopg can connect to the ``postgres`` database."""
        import psycopg

        deadline = time.monotonic() + timeout
        while True:
            try:
                with psycopg.connect(self.conninfo("postgres"), connect_timeout=5) as conn:
                    conn.execute("SELECT 1")
                return
            except psycopg.OperationalError as exc:
                if time.monotonic() >= deadline:
                    raise PostgresUnavailable(
                        f"server on port {self.port} not accepting connections after "
                        f"{timeout} s: {exc}\n--- server log ---\n{_tail(self.log_path)}"
                    ) from exc
                time.sleep(0.1)

    def _create_database(self, name: str) -> None:
        import psycopg
        from psycopg import sql

        try:
            with psycopg.connect(self.conninfo("postgres"), autocommit=True) as conn:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        except psycopg.OperationalError as exc:
            raise PostgresUnavailable(
                f"could not connect to create database {name!r}: {exc}"
            ) from exc

    def _postmaster_pid(self) -> int | None:
        """PID from ``postmaster.pid`` if that process is alive, else None."""
        if self.base_dir is None:
            return None
        try:
            first = (self.data_dir / "postmaster.pid").read_text().splitlines()[0]
            pid = int(first.strip())
        except (OSError, ValueError, IndexError):
            return None
        return pid if _pid_alive(pid) else None

    def _stop_server(self, mode: str) -> None:
        if self._postmaster_pid() is None:
            self._running = False
            return
        code, output = self._run(
            [
                self.binaries["pg_ctl"],
                "-D", str(self.data_dir),
                "-m", mode,
                "-t", str(_STOP_TIMEOUT),
                "-w",
                "stop",
            ],
            timeout=_STOP_TIMEOUT + 30,
        )
        if code != 0 or self._postmaster_pid() is not None:
            self._kill_postmaster()
        self._running = False
        if self._postmaster_pid() is not None:
            raise PostgresUnavailable(
                f"could not stop server (pg_ctl exit {code}): {output.strip()}"
            )

    def _kill_postmaster(self) -> None:
        """Last resort: SIGQUIT (immediate shutdown), then SIGKILL."""
        pid = self._postmaster_pid()
        if pid is None:
            return
        for sig, wait in ((signal.SIGQUIT, 10.0), (signal.SIGKILL, 5.0)):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                return
            except PermissionError:
                return
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline:
                if not _pid_alive(pid):
                    return
                time.sleep(0.05)
