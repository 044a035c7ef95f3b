"""A PostgreSQL of the test's own: ``initdb`` and ``postgres`` in a temporary folder, on a
free loopback port, that the test may stop and start again (fault tests, issue 21).

The machine's shared server (127.0.0.1:5432, ``TEST_DATABASE_URL``) is never touched: other
tests and CI use it, and stopping it would fail them. This server listens on 127.0.0.1 only, on
a port of its own, with its Unix socket in its own folder, trust authentication for the
superuser ``postgres``, and no fsync (the data is thrown away; speed matters on a loaded
two-core machine). It is always stopped (immediate mode) and its folder removed at the end,
also when the test fails; the server is the test process's child with a parent-death signal,
so a killed test run (even by SIGKILL) leaves no server behind.

Binaries: ``initdb`` and ``pg_ctl`` on ``PATH``, else the newest Debian
``/usr/lib/postgresql/<version>/bin``. When none is found the test is skipped with the reason,
or failed under CI (``CI`` set), as ``tests/conftest.py`` does for the shared services, so a
green CI run really ran the fault.

Root: PostgreSQL refuses to run as root (``initdb`` and ``postgres`` exit with "cannot be run
as root"). When this process is root, every server command runs as the unprivileged system
user ``postgres`` (Debian's package creates it) through ``setpriv``, and the
temporary folder is given to that user; the test still reaches the server over TCP, so only
the server's own files belong to ``postgres``. Without such a user the test is skipped (failed
under CI) with the reason.
"""

from __future__ import annotations

import asyncio
import glob
import os
import pwd
import re
import shutil
import signal
import socket
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import asyncpg
import pytest

from cti.children import preexec

SUPERUSER = "postgres"
RUN_AS = "postgres"  # the unprivileged user that runs the server when we are root
COMMAND_TIMEOUT = 90.0  # initdb and a start on a loaded two-core machine


class PostgresMissing(Exception):
    """No PostgreSQL binaries, or no user to run them as."""


def find_bindir() -> Path:
    """The folder holding ``initdb``, ``pg_ctl`` and ``postgres``. Raises PostgresMissing."""
    on_path = shutil.which("pg_ctl")
    candidates = [Path(on_path).resolve().parent] if on_path else []

    def version(path: str) -> tuple[int, ...]:
        found = re.search(r"/postgresql/([\d.]+)/", path)
        return tuple(int(p) for p in found[1].split(".")) if found else ()

    debian = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=version, reverse=True)
    candidates += [Path(d) for d in debian]
    for folder in candidates:
        if all(os.access(folder / name, os.X_OK) for name in ("initdb", "pg_ctl", "postgres")):
            return folder
    raise PostgresMissing(
        "no PostgreSQL binaries (initdb, pg_ctl, postgres) on PATH or in "
        "/usr/lib/postgresql/*/bin (apt-get install postgresql)"
    )


def _run_prefix() -> tuple[list[str], pwd.struct_passwd | None]:
    """What to put before a server command, and the user it runs as (None: ourselves).
    As root: ``setpriv`` to the unprivileged user, with the parent-death signal set again
    after the change of user (the kernel clears it on a change of credentials)."""
    if os.geteuid() != 0:
        return [], None
    try:
        user = pwd.getpwnam(RUN_AS)
    except KeyError as exc:
        raise PostgresMissing(
            f"running as root and there is no user {RUN_AS!r} to run PostgreSQL as "
            "(initdb refuses root)"
        ) from exc
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        raise PostgresMissing("running as root and no setpriv to run PostgreSQL unprivileged")
    return [
        setpriv, f"--reuid={RUN_AS}", f"--regid={user.pw_gid}", "--init-groups",
        "--pdeathsig=KILL", "--",
    ], user  # fmt: skip


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class OwnPostgres:
    """One private server. ``url`` is a plain SQLAlchemy URL (``postgresql://...``, as the
    product's ``[store] database_url`` takes it; ``crm_sync.db.async_url`` adds asyncpg)."""

    def __init__(self, folder: Path, bindir: Path, database: str = "cti") -> None:
        self.folder = folder
        self.bindir = bindir
        self.database = database
        self.data = folder / "data"
        self.socket_dir = folder / "socket"
        self.log = folder / "server.log"
        self.port = free_port()
        self.prefix, self.user = _run_prefix()
        self.server: asyncio.subprocess.Process | None = None
        self.running = False

    @property
    def url(self) -> str:
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{self.database}"

    @property
    def asyncpg_url(self) -> str:
        return f"postgresql+asyncpg://{SUPERUSER}@127.0.0.1:{self.port}/{self.database}"

    async def _run(self, *args: str, check: bool = True) -> str:
        process = await asyncio.create_subprocess_exec(
            *self.prefix,
            *args,
            cwd=self.folder,  # readable by the server's user (our cwd may not be)
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            preexec_fn=preexec(),
        )
        try:
            async with asyncio.timeout(COMMAND_TIMEOUT):
                out, _ = await process.communicate()
        except TimeoutError:
            process.kill()
            await process.wait()
            raise RuntimeError(f"{args[0]} took over {COMMAND_TIMEOUT:g} s") from None
        text = out.decode(errors="replace")
        if check and process.returncode != 0:
            raise RuntimeError(
                f"{' '.join(args)} exited {process.returncode}:\n{text}{self._tail()}"
            )
        return text

    def _tail(self) -> str:
        try:
            return "\nserver log:\n" + self.log.read_text(errors="replace")[-3000:]
        except OSError:
            return ""

    async def create(self) -> None:
        """initdb, configure, start, and create the database."""
        self.socket_dir.mkdir()
        if self.user is not None:
            for path in (self.folder, self.socket_dir):
                os.chown(path, self.user.pw_uid, self.user.pw_gid)
        await self._run(
            str(self.bindir / "initdb"),
            "-D", str(self.data),
            "-U", SUPERUSER,
            "--auth=trust",
            "-E", "UTF8",
            "--no-locale",
            "--no-sync",
        )  # fmt: skip
        settings = {
            "listen_addresses": "'127.0.0.1'",
            "port": str(self.port),
            "unix_socket_directories": f"'{self.socket_dir}'",
            "fsync": "off",
            "synchronous_commit": "off",
            "full_page_writes": "off",
            "max_connections": "50",
            "shared_buffers": "32MB",
        }
        # appended by the server's own user: the data folder is theirs and 0700
        lines = "".join(f"{k} = {v}\n" for k, v in settings.items())
        conf = self.data / "postgresql.conf"
        await self._run("sh", "-c", f'cat >> "{conf}" <<"EOF"\n{lines}EOF\n')
        await self.start()
        await self._run(
            str(self.bindir / "createdb"), "-h", "127.0.0.1", "-p", str(self.port),
            "-U", SUPERUSER, self.database,
        )  # fmt: skip

    async def start(self) -> None:
        """Start the server (again) on the same port; returns once it accepts connections.
        It is this process's child (``postgres`` itself, not ``pg_ctl``'s daemon), killed by
        the kernel if the test run dies, even by SIGKILL: no server outlives its test."""
        with self.log.open("ab") as log:
            self.server = await asyncio.create_subprocess_exec(
                *self.prefix, str(self.bindir / "postgres"), "-D", str(self.data),
                cwd=self.folder, stdin=asyncio.subprocess.DEVNULL, stdout=log, stderr=log,
                preexec_fn=preexec(),
            )  # fmt: skip
        async with asyncio.timeout(COMMAND_TIMEOUT):
            while not await self._accepts():
                if self.server.returncode is not None:
                    raise RuntimeError(f"postgres exited {self.server.returncode}{self._tail()}")
                await asyncio.sleep(0.1)
        self.running = True

    async def _accepts(self) -> bool:
        """Whether it takes queries (a listening socket is not enough: "the database system
        is starting up" comes first)."""
        try:
            conn = await asyncpg.connect(
                host="127.0.0.1", port=self.port, user=SUPERUSER, database="postgres", timeout=2
            )
        except (OSError, asyncpg.PostgresError, TimeoutError):
            return False
        await conn.close()
        return True

    async def stop(self, mode: str = "fast") -> None:
        """Stop the server: ``fast`` (sessions are ended, a clean shut-down: SIGINT) or
        ``immediate`` (like a crash: SIGQUIT); returns once it is down."""
        server = self.server
        if server is not None and server.returncode is None:
            server.send_signal(signal.SIGINT if mode == "fast" else signal.SIGQUIT)
            async with asyncio.timeout(COMMAND_TIMEOUT):
                await server.wait()
        self.server = None
        self.running = False

    async def destroy(self) -> None:
        """Stop it if it runs (immediate, then SIGKILL) and remove its folder."""
        try:
            await self.stop("immediate")
        except TimeoutError:
            if self.server is not None:
                self.server.kill()
                await self.server.wait()
        self.running = False
        await asyncio.to_thread(shutil.rmtree, self.folder, True)


def _missing(reason: str) -> None:
    """Skip with the reason; under CI fail instead (see tests/conftest.py)."""
    if os.environ.get("CI"):
        pytest.fail(f"CI needs its own PostgreSQL: {reason}")
    print(f"skipped: {reason}")
    pytest.skip(reason)


@asynccontextmanager
async def own_postgres(database: str = "cti") -> AsyncIterator[OwnPostgres]:
    """A running private server with an empty database ``database``; always removed after."""
    try:
        bindir = find_bindir()
        _run_prefix()
    except PostgresMissing as exc:
        _missing(str(exc))
        raise  # not reached: skip/fail raise
    folder = Path(tempfile.mkdtemp(prefix="cti-own-pg-"))
    server = OwnPostgres(folder, bindir, database)
    try:
        await server.create()
        yield server
    finally:
        await server.destroy()


@pytest.fixture
async def own_pg() -> AsyncIterator[OwnPostgres]:
    """The fixture form of :func:`own_postgres`."""
    async with own_postgres() as server:
        yield server
