"""A private, throwaway PostgreSQL cluster, for tests that stop or restart the server.

The shared server on port 5432 serves every parallel test, so no test may restart it. This
cluster lives in a temporary directory, listens on 127.0.0.1 on a free port with trust auth,
and keeps PostgreSQL's default fsync settings. initdb refuses to run as root, so as root the
PostgreSQL binaries run as the ``postgres`` OS user (``runuser -u postgres --``).
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from tests.support.servers import Server

#: Where Debian/Ubuntu install the server binaries, one directory per major version.
DEBIAN_BINDIRS = "/usr/lib/postgresql/*/bin"
#: Environment variable naming the directory with initdb and pg_ctl, if set.
BINDIR_ENV = "DBQUEUE_TEST_PG_BINDIR"


class PrivatePostgresUnavailable(Exception):
    """A private cluster cannot be created here (no binaries, no ``postgres`` user, ...)."""


class PrivatePostgresError(Exception):
    """A PostgreSQL command failed; the message includes its output and the server log."""


def find_bindir() -> Path:
    """The directory holding initdb and pg_ctl: $DBQUEUE_TEST_PG_BINDIR, Debian's, or PATH."""
    if os.environ.get(BINDIR_ENV):
        candidates = [Path(os.environ[BINDIR_ENV])]
    else:
        versions = sorted(
            Path("/").glob(DEBIAN_BINDIRS.lstrip("/")),
            key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
            reverse=True,
        )
        found = shutil.which("initdb")
        candidates = [*versions, *([Path(found).parent] if found else [])]
    for bindir in candidates:
        if (bindir / "initdb").is_file() and (bindir / "pg_ctl").is_file():
            return bindir
    raise PrivatePostgresUnavailable(
        "private PostgreSQL cluster unavailable: initdb and pg_ctl not found in "
        f"${BINDIR_ENV}, {DEBIAN_BINDIRS} or PATH"
    )


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PrivatePostgres:
    """A PostgreSQL cluster of our own in a temporary directory.

    ``PrivatePostgres.create()`` finds the binaries, runs initdb and starts the server;
    :meth:`destroy` stops it and deletes the directory. ``timings`` records how long each
    start, stop and restart took, in seconds.
    """

    user = "postgres"
    host = "127.0.0.1"

    def __init__(self, bindir: Path, root: Path) -> None:
        self.bindir = bindir
        self.root = root
        self.datadir = root / "data"
        self.logfile = root / "server.log"
        self.port = 0
        self.timings: list[tuple[str, float]] = []

    @classmethod
    def create(cls, bindir: Path | None = None) -> PrivatePostgres:
        """Initialise and start a new cluster; raises PrivatePostgresUnavailable if impossible."""
        bindir = bindir or find_bindir()
        run_as = os_user_prefix()
        root = Path(tempfile.mkdtemp(prefix="dbqueue-pg-"))
        if run_as:
            shutil.chown(root, "postgres", "postgres")
        cluster = cls(bindir, root)
        try:
            cluster.initdb()
            cluster.start()
        except BaseException:
            cluster.destroy()
            raise
        return cluster

    @property
    def server(self) -> Server:
        """This cluster as a :class:`Server` (for admin connections and fresh databases)."""
        return Server(
            "postgresql", "private PostgreSQL", self.host, self.port, self.user, "postgres"
        )

    @property
    def url(self) -> str:
        """A psycopg SQLAlchemy URL for the ``postgres`` database of this cluster."""
        return self.server.url()

    def initdb(self) -> None:
        """Create the data directory: trust auth, UTF-8, listening on 127.0.0.1 only."""
        self._run(
            "initdb",
            "-D",
            str(self.datadir),
            "-U",
            self.user,
            "--auth=trust",
            "--encoding=UTF8",
            "--locale=C",
        )
        self.port = free_port()
        with open(self.datadir / "postgresql.conf", "a") as conf:
            conf.write(
                "\n# dbqueue tests\n"
                f"port = {self.port}\n"
                f"listen_addresses = '{self.host}'\n"
                f"unix_socket_directories = '{self.root}'\n"
            )

    def start(self, timeout: float = 60.0) -> None:
        """Start the server and wait until it accepts connections.

        If the port was taken in the meantime (before the first start only), pick another.
        """
        for attempt in range(3):
            try:
                self._pg_ctl("start", "-t", str(int(timeout)), "-l", str(self.logfile))
                return
            except PrivatePostgresError as exc:
                if attempt == 2 or "could not bind" not in str(exc) or self._started_before():
                    raise
                self._set_port(free_port())

    def stop(self, mode: str = "fast", timeout: float = 60.0) -> None:
        """Stop the server: ``smart``, ``fast`` (disconnect clients) or ``immediate`` (crash)."""
        self._pg_ctl("stop", "-m", mode, "-t", str(int(timeout)))

    def restart(self, mode: str = "fast", timeout: float = 60.0) -> None:
        """Stop (``mode`` as for :meth:`stop`) and start again on the same port."""
        self._pg_ctl("restart", "-m", mode, "-t", str(int(timeout)), "-l", str(self.logfile))

    def is_running(self) -> bool:
        """Whether ``pg_ctl status`` sees a running server."""
        try:
            self._run("pg_ctl", "status", "-D", str(self.datadir))
        except PrivatePostgresError:
            return False
        return True

    def ensure_running(self) -> None:
        """Start the server if a previous test left it stopped."""
        if not self.is_running():
            self.start()

    def log(self) -> str:
        """The server log so far."""
        try:
            return self.logfile.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def destroy(self) -> None:
        """Stop the server without ceremony and delete its directory."""
        if (self.datadir / "postmaster.pid").exists():
            try:
                self.stop("immediate")
            except PrivatePostgresError:
                pass
        shutil.rmtree(self.root, ignore_errors=True)

    def _started_before(self) -> bool:
        return any(action in ("start", "restart") for action, _ in self.timings)

    def _set_port(self, port: int) -> None:
        conf = self.datadir / "postgresql.conf"
        text = re.sub(r"(?m)^port = \d+$", f"port = {port}", conf.read_text())
        conf.write_text(text)
        self.port = port

    def _pg_ctl(self, action: str, *args: str) -> None:
        started = time.monotonic()
        self._run("pg_ctl", action, "-w", "-D", str(self.datadir), *args)
        self.timings.append((action, time.monotonic() - started))

    def _run(self, program: str, *args: str) -> str:
        argv = [*os_user_prefix(), str(self.bindir / program), *args]
        result = subprocess.run(
            argv, cwd=self.root, capture_output=True, text=True, check=False, timeout=120
        )
        if result.returncode != 0:
            raise PrivatePostgresError(
                f"{' '.join(argv)} exited with {result.returncode}:\n{result.stdout}"
                f"{result.stderr}\nserver log:\n{self.log()[-5000:]}"
            )
        return result.stdout


def os_user_prefix() -> list[str]:
    """``runuser -u postgres --`` when running as root (initdb refuses root), else nothing."""
    if os.geteuid() != 0:
        return []
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        raise PrivatePostgresUnavailable(
            "private PostgreSQL cluster unavailable: running as root and there is no "
            "'postgres' OS user to run initdb as"
        ) from None
    runuser = shutil.which("runuser")
    if runuser is None:
        raise PrivatePostgresUnavailable(
            "private PostgreSQL cluster unavailable: running as root and runuser is missing"
        )
    return [runuser, "-u", "postgres", "--"]
