"""The ``cti`` command: serve, demo, replay, bench, simulate, db, seed-demo, segments,
import, merge, outbox."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TextIO, TypeVar

from cti import replay as replay_mod
from cti import settings as settings_mod

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

    from crm_sync.phones import PhoneNormalizer
    from crm_sync.segments import Rules

T = TypeVar("T")


def _replay(args: argparse.Namespace) -> int:
    try:
        result = replay_mod.replay_file(args.file, args.pbx)
    except OSError as exc:
        print(f"cti replay: cannot read {args.file}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    for record in result.records:
        if args.json:
            print(json.dumps(record.to_json(), ensure_ascii=False))
        else:
            print(replay_mod.summary_line(record))
    for problem in result.problems:
        print(f"cti replay: skipped input ({problem.kind}): {problem.detail}", file=sys.stderr)
    if result.unfinished:
        print(
            f"cti replay: {result.unfinished} call(s) still in progress at end of file",
            file=sys.stderr,
        )
    return 0


def _bench(args: argparse.Namespace) -> int:
    from cti_bench.run import run

    try:
        agents = [int(part) for part in args.agents.split(",") if part.strip()]
    except ValueError:
        print(f"cti bench: --agents {args.agents!r}: not numbers like 100,1000", file=sys.stderr)
        return 2
    if args.copies > 0:
        run(args.copies)
    agents = [count for count in agents if count > 0]
    if agents and args.pop_seconds > 0:
        from cti_bench.pop import run_pop

        run_pop(agents, args.pop_seconds, args.pop_rate)
    if args.ivr_sessions > 0 and args.ivr_seconds > 0:
        from cti_bench.ivr import run_ivr

        run_ivr(args.ivr_sessions, args.ivr_seconds)
    if args.wallboard:
        from cti_bench.board import run_board

        run_board()
    pg_url = os.environ.get("BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")
    if args.outbox_rate > 0 and args.outbox_seconds > 0 and not args.no_postgres:
        from cti_bench.outbox import run_outbox

        run_outbox(pg_url, args.outbox_rate, args.outbox_seconds)
    if args.customers:
        from cti_bench.run import run_lookups

        run_lookups(args.customers, pg_url=None if args.no_postgres else pg_url)
    if args.import_customers > 0 and not args.no_postgres:
        from cti_bench.imports import run_import

        run_import(args.import_customers, pg_url)
    if args.soak:
        from cti_bench.soak import run_soak

        run_soak(args.soak_agents, args.soak_rate, args.soak_minutes)
    if args.saturation:
        from cti_bench.saturation import run_saturation

        try:
            rates = [float(part) for part in args.saturation_rates.split(",") if part.strip()]
        except ValueError:
            rates = []
        if not rates or any(rate <= 0 for rate in rates):
            print(
                f"cti bench: --saturation-rates {args.saturation_rates!r}: not positive "
                "numbers like 25,50,100",
                file=sys.stderr,
            )
            return 2
        run_saturation(args.saturation_agents, rates, args.saturation_step)
    return 0


def _demo(args: argparse.Namespace) -> int:
    from cti_app.demo import demo

    _logging("WARNING")
    return _run_service(
        lambda: demo(
            port=args.port,
            rate=args.rate,
            seed_value=args.seed,
            speed=args.speed,
            duration=args.duration,
            web_port=args.web_port,
            agi_port=args.agi_port,
            database_url=args.url
            or os.environ.get("DATABASE_URL")
            or settings_mod.DEMO_DATABASE_URL,
        )
    )


def _simulate(args: argparse.Namespace) -> int:
    from cti_app.demo import simulate

    _logging("WARNING")
    return _run_service(
        lambda: simulate(
            port=args.port, rate=args.rate, seed=args.seed, speed=args.speed, duration=args.duration
        )
    )


def _serve(args: argparse.Namespace) -> int:
    from crm_sync.segments import SegmentRulesError, rules_from
    from cti.console import ConsoleSink
    from cti_app.stack import Ready, run_stack
    from ivr.menus import MenuError, load_menus
    from screenpop.auth import Accounts, AccountsError

    try:
        settings = settings_mod.load(args.config)
        accounts = Accounts.load(settings.web.accounts_file) if settings.web.accounts_file else None
        if settings.ivr.menus_dir:
            load_menus(settings.ivr.menus_dir)  # a broken menu stops us here, not mid-call
        rules_from(settings.segments.rules_file)  # and so do broken segment rules
    except (settings_mod.SettingsError, AccountsError, MenuError, SegmentRulesError) as exc:
        print(f"cti serve: {exc}", file=sys.stderr)
        return 2
    _logging(settings.log_level, settings.log_format)

    def ready(at: Ready) -> None:
        page = at.agent_page
        where = f"agent page on {page}" if page else "no agent page ([web] accounts_file not set)"
        ivr = f"IVR on agi://{at.agi[0]}:{at.agi[1]}/" if at.agi else "no IVR ([ivr] menus_dir)"
        logging.getLogger("cti").info(
            "cti serve: following %d PBX(s); %s; %s", len(settings.pbxs), where, ivr
        )

    return _run_service(
        lambda: run_stack(settings, accounts=accounts, sinks=[ConsoleSink()], on_ready=ready)
    )


def _run_service(main: Callable[[], Coroutine[Any, Any, None]]) -> int:
    """Run until Ctrl-C or SIGTERM; a port we cannot listen on ends the process with its
    reason (a PBX that refuses us is its client's to retry: cti.ami)."""
    refused: list[BaseException] = []
    try:
        asyncio.run(_until_stopped(main))
    except* KeyboardInterrupt:
        pass
    except* OSError as group:  # a port to listen on is taken
        refused.extend(group.exceptions)
    for exc in refused:
        print(f"cti: {exc}", file=sys.stderr)
    return 1 if refused else 0


async def _until_stopped(main: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """``main()`` until SIGTERM (systemd's stop, ``docker stop``, ``kill``) or Ctrl-C, which
    cancel it the same way: pages are told 1001 "going away", calls being written get their
    last attempt, pauses being sent reach Asterisk, and the process exits 0. Without this,
    SIGTERM's default action would end the process on the spot, as a kill -9 does."""
    task = asyncio.current_task()
    assert task is not None
    stopping = asyncio.Event()

    def stop() -> None:
        if not stopping.is_set():
            logging.getLogger("cti").info("cti: SIGTERM received, stopping")
        stopping.set()
        task.cancel()

    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop)
    try:
        await main()
    except asyncio.CancelledError:
        if not stopping.is_set():
            raise
    finally:
        loop.remove_signal_handler(signal.SIGTERM)


def _store(args: argparse.Namespace) -> settings_mod.StoreSettings | None:
    """The store settings (file, environment), with ``--url`` on top; None after printing
    why they could not be read."""
    try:
        store = settings_mod.load(args.config).store
    except settings_mod.SettingsError as exc:
        print(f"cti {args.command}: {exc}", file=sys.stderr)
        return None
    return replace(store, database_url=args.url) if args.url else store


def _shown(url: str) -> str:
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "(unparsable URL)"


def _upgrade(command: str, url: str) -> bool:
    """Bring the schema up to date; False after printing why it failed."""
    from sqlalchemy.exc import SQLAlchemyError

    from crm_sync.migrate import upgrade

    try:
        upgrade(url)
    except (SQLAlchemyError, OSError) as exc:
        print(
            f"cti {command}: cannot upgrade the database at {_shown(url)}: {exc}", file=sys.stderr
        )
        return False
    return True


def _with_store(
    command: str,
    store: settings_mod.StoreSettings,
    work: Callable[[AsyncEngine, PhoneNormalizer], Awaitable[T]],
) -> T | None:
    """Run ``work`` on an engine for the store; None after printing a database failure."""
    from sqlalchemy.exc import SQLAlchemyError

    from crm_sync.db import create_engine
    from crm_sync.phones import PhoneNormalizer

    async def run() -> T:
        engine = create_engine(store.database_url)
        try:
            return await work(engine, PhoneNormalizer(store.default_region))
        finally:
            await engine.dispose()

    try:
        return asyncio.run(run())
    except (SQLAlchemyError, OSError) as exc:
        print(
            f"cti {command}: database error at {_shown(store.database_url)}: {exc}", file=sys.stderr
        )
        return None


def _db_upgrade(args: argparse.Namespace) -> int:
    store = _store(args)
    if store is None or not _upgrade("db upgrade", store.database_url):
        return 2
    print(f"database at {_shown(store.database_url)} is up to date")
    return 0


def _db_set_pin(args: argparse.Namespace) -> int:
    """The PIN comes from the terminal (asked twice) or one line of stdin, never from the
    command line: arguments show in ``ps``."""
    from crm_sync.store import CustomerStore, StoreUnavailable
    from ivr.store import IvrStore

    store = _store(args)
    if store is None or not _upgrade("db set-pin", store.database_url):
        return 2
    if sys.stdin.isatty():
        pin = getpass.getpass("PIN: ")
        if getpass.getpass("PIN again: ") != pin:
            print("cti db set-pin: the two PINs differ", file=sys.stderr)
            return 2
    else:
        pin = sys.stdin.readline().strip()

    async def set_pin(engine: AsyncEngine, phones: PhoneNormalizer) -> bool:
        customers = CustomerStore(engine, phones)
        ivr = IvrStore(engine, customers, phones, clock=lambda: datetime.now(UTC))
        await ivr.set_pin(args.customer_id, pin)
        return True

    try:
        done = _with_store("db set-pin", store, set_pin)
    except (ValueError, StoreUnavailable) as exc:
        print(f"cti db set-pin: {exc}", file=sys.stderr)
        return 2
    if done is None:
        return 2
    print(f"PIN set for customer {args.customer_id}")
    return 0


def _seed_demo(args: argparse.Namespace) -> int:
    from cti_app.seed import seed_demo

    rules = _rules(args)
    store = _store(args)
    if rules is None or store is None or not _upgrade(args.command, store.database_url):
        return 2
    report = _with_store(
        args.command,
        store,
        lambda engine, phones: seed_demo(
            engine,
            customers=args.customers,
            seed=args.seed,
            now=datetime.now(UTC),
            phones=phones,
            simulator_rate=args.rate,
            rules=rules,
        ),
    )
    if report is None:
        return 2
    print(report.describe())
    return 0


def _rules(args: argparse.Namespace) -> Rules | None:
    """The segment rules (``--rules``, else ``[segments] rules_file``); None after printing
    why they could not be read."""
    from crm_sync.segments import SegmentRulesError, rules_from

    try:
        path = getattr(args, "rules", None) or settings_mod.load(args.config).segments.rules_file
        return rules_from(path)
    except (settings_mod.SettingsError, SegmentRulesError) as exc:
        print(f"cti {args.command}: {exc}", file=sys.stderr)
        return None


def _segments(args: argparse.Namespace) -> int:
    """``recompute``: the customers new data made stale, or with ``--all`` every customer
    (after the rules changed; time moves some too). Exit 2: bad rules or database."""
    from sqlalchemy.ext.asyncio import async_sessionmaker

    from crm_sync.segmenting import recompute_all, recompute_stale

    rules = _rules(args)
    store = _store(args)
    if rules is None or store is None or not _upgrade(args.command, store.database_url):
        return 2

    async def work(engine: AsyncEngine, _phones: PhoneNormalizer) -> str:
        sessions = async_sessionmaker(engine, expire_on_commit=False)
        if args.all:
            r = await recompute_all(sessions, rules, now=datetime.now(UTC))
            return (
                f"{r.checked} customers checked, {r.moved} had moved; {r.recomputed} "
                f"recomputed in {r.seconds:.2f} s"
            )
        started = time.perf_counter()
        done = await recompute_stale(sessions, rules, now=datetime.now(UTC))
        return f"{done} stale customers recomputed in {time.perf_counter() - started:.2f} s"

    line = _with_store(args.command, store, work)
    if line is None:
        return 2
    print(line)
    return 0


def _import(args: argparse.Namespace) -> int:
    """Exit status: 0 all rows imported (or ignored as stale), 1 some rows rejected, 2 nothing
    could be done."""
    from crm_sync.importer import ImportFileError, import_csv

    store = _store(args)
    if store is None or not _upgrade(args.command, store.database_url):
        return 2
    bar = _ProgressBar(sys.stderr)
    try:
        report = _with_store(
            args.command,
            store,
            lambda engine, phones: import_csv(
                engine,
                args.file,
                phones=phones,
                now=datetime.now(UTC),
                kind=args.kind,
                progress=bar,
            ),
        )
    except ImportFileError as exc:
        print(f"cti import: {exc}", file=sys.stderr)
        return 2
    finally:
        bar.finish()
    if report is None:
        return 2
    print(
        f"{report.accepted} accepted ({report.inserted} new, {report.updated} updated, "
        f"{report.unchanged} unchanged), "
        + (f"{len(report.ignored)} ignored, " if report.ignored else "")
        + f"{len(report.rejected)} rejected, of {report.rows} rows in {report.seconds:.2f} s"
    )
    for row in sorted((*report.rejected, *report.ignored), key=lambda r: r.line):
        print(f"line {row.line}: {row.reason}")
    return 1 if report.rejected else 0


def _merge(args: argparse.Namespace) -> int:
    """Exit status: 0 merged, 2 refused (unknown customer, same one, person and company) or
    nothing could be done."""
    from crm_sync.inbound import write
    from crm_sync.merges import MergeError, MergeResult, merge_customers

    store = _store(args)
    if store is None or not _upgrade(args.command, store.database_url):
        return 2
    by = args.by or _login()

    async def work(engine: AsyncEngine, _phones: PhoneNormalizer) -> MergeResult:
        from sqlalchemy.ext.asyncio import async_sessionmaker

        return await write(
            async_sessionmaker(engine, expire_on_commit=False),
            lambda session: merge_customers(
                session, args.survivor, args.merged, source="admin", by=by, now=datetime.now(UTC)
            ),
        )

    try:
        result = _with_store(args.command, store, work)
    except MergeError as exc:
        print(f"cti merge: {exc}", file=sys.stderr)
        return 2
    if result is None:
        return 2
    moved = result.moved
    print(
        f"customer {result.merged_id} ({result.merged_name!r}, external id "
        f"{result.merged_external_id or 'none'}) merged into {result.survivor_id}: "
        f"{moved['phones']} phone(s), {sum(moved['interactions'].values())} timeline "
        f"entr(ies), {moved['call_scores']} survey score(s), {moved['contacts']} contact(s) "
        f"moved; merge {result.merge_id}, the CRM is told through the outbox"
    )
    return 0


def _login() -> str:
    try:
        return getpass.getuser()
    except (OSError, KeyError):  # no user name in the environment or the password database
        return "admin"


def _outbox(args: argparse.Namespace) -> int:
    """``status``, ``list`` and ``retry``: the admin's view of what the CRM has not heard."""
    from crm_sync.outbox import Outbox

    store = _store(args)
    if store is None or not _upgrade(args.command, store.database_url):
        return 2

    async def work(engine: AsyncEngine, _phones: PhoneNormalizer) -> list[str]:
        from sqlalchemy.ext.asyncio import async_sessionmaker

        outbox = Outbox(async_sessionmaker(engine, expire_on_commit=False))
        if args.outbox_command == "retry":
            ids = None if args.all_dead else args.ids
            revived = await outbox.retry(ids, datetime.now(UTC))
            return [f"{revived} dead row(s) sent again"]
        if args.outbox_command == "list":
            return [
                f"{r.id}\t{r.topic}\t{r.key}\tcustomer {r.customer_id or '-'}\t"
                f"{r.attempts} attempt(s)\t{r.created_at:%Y-%m-%d %H:%M:%S}\t{r.last_error or ''}"
                for r in await outbox.rows(args.state, args.limit)
            ]
        counts = await outbox.counts()
        age = (
            ""
            if counts.oldest_pending is None
            else (f", oldest pending {counts.oldest_pending:%Y-%m-%d %H:%M:%S} UTC")
        )
        return [f"{counts.pending} pending, {counts.delivered} delivered, {counts.dead} dead{age}"]

    if args.outbox_command == "retry" and not (args.all_dead or args.ids):
        print("cti outbox retry: name row ids, or --all-dead", file=sys.stderr)
        return 2
    lines = _with_store(args.command, store, work)
    if lines is None:
        return 2
    for line in lines:
        print(line)
    return 0


class _ProgressBar:
    """``[#######.......] 1200/3000  40%`` on one line, redrawn when the percentage moves."""

    def __init__(self, stream: TextIO, width: int = 30) -> None:
        self.stream = stream
        self.width = width
        self.shown: int | None = None

    def __call__(self, done: int, total: int) -> None:
        percent = 100 * done // total if total else 100
        if percent == self.shown:
            return
        self.shown = percent
        filled = self.width * percent // 100
        bar = "#" * filled + "." * (self.width - filled)
        self.stream.write(f"\r[{bar}] {done}/{total} {percent:3d}%")
        self.stream.flush()

    def finish(self) -> None:
        if self.shown is not None:
            self.stream.write("\n")
            self.stream.flush()


def _logging(level: str, form: str = "text") -> None:
    """Log to stderr, one record per line whatever a caller's name holds (cti.logs)."""
    from cti.logs import formatter

    handler = logging.StreamHandler()
    handler.setFormatter(formatter(form))
    logging.basicConfig(level=level.upper(), handlers=[handler])


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cti", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    rep = sub.add_parser("replay", help="replay a recorded AMI stream and print one line per call")
    rep.add_argument("file", help="raw AMI text as recorded (LF or CRLF)")
    rep.add_argument("--json", action="store_true", help="one JSON object per call")
    rep.add_argument("--pbx", help="PBX name for the calls (default: the stream's SystemName)")
    rep.set_defaults(func=_replay)

    serve = sub.add_parser("serve", help="follow the configured PBXs and print call events")
    serve.add_argument("--config", help="TOML settings file (default: $CTI_CONFIG)")
    serve.set_defaults(func=_serve)

    for name, text, port in (
        ("demo", "PBX simulator + the whole product: agent page, store, call events", 0),
        ("simulate", "only the PBX simulator (real AMI on 127.0.0.1)", 5038),
    ):
        cmd = sub.add_parser(name, help=text)
        cmd.add_argument(
            "--port", type=int, default=port, help=f"AMI port (default {port or 'any free'})"
        )
        cmd.add_argument("--rate", type=float, default=4.0, help="calls per minute (default 4)")
        cmd.add_argument(
            "--speed", type=float, default=1.0, help="time runs this many times faster"
        )
        cmd.add_argument("--seed", type=int, default=1, help="random seed of the call mix")
        cmd.add_argument("--duration", type=float, help="stop after this many seconds")
        cmd.set_defaults(func=_demo if name == "demo" else _simulate)
        if name == "demo":
            cmd.add_argument("--web-port", type=int, default=8080, help="agent page port (0: any)")
            cmd.add_argument(
                "--agi-port", type=int, default=4573, help="the IVR's FastAGI port (0: any)"
            )
            cmd.add_argument(
                "--url",
                help=f"database (default $DATABASE_URL or {settings_mod.DEMO_DATABASE_URL})",
            )

    bench = sub.add_parser("bench", help="AMI throughput, screen-pop latency and lookup benchmark")
    bench.add_argument(
        "--copies",
        type=int,
        default=60,
        help="copies of the captures to replay (0: skip the AMI figures)",
    )
    bench.add_argument(
        "--customers",
        type=int,
        default=1_000_000,
        help="customers for the lookup figures (0: skip)",
    )
    bench.add_argument("--no-postgres", action="store_true", help="lookup figures on SQLite only")
    bench.add_argument(
        "--agents",
        default="100,1000",
        help="connected agents for the pop figures, comma-separated (default 100,1000; "
        "0 or empty: skip)",
    )
    bench.add_argument(
        "--pop-seconds",
        type=float,
        default=25.0,
        help="measured seconds of calls per pop figure (default 25; 0: skip)",
    )
    bench.add_argument(
        "--pop-rate", type=float, default=20.0, help="calls per second for the pop figures"
    )
    bench.add_argument(
        "--ivr-sessions",
        type=int,
        default=500,
        help="concurrent FastAGI sessions for the IVR figure (default 500; 0: skip)",
    )
    bench.add_argument(
        "--ivr-seconds",
        type=float,
        default=30.0,
        help="measured seconds of the IVR figure (default 30; 0: skip)",
    )
    bench.add_argument(
        "--outbox-rate",
        type=float,
        default=2000.0,
        help="outcomes per second for the outbox figure, on PostgreSQL (default 2000; 0: skip)",
    )
    bench.add_argument(
        "--outbox-seconds", type=float, default=10.0, help="seconds of outbox load (default 10)"
    )
    bench.add_argument(
        "--no-wallboard",
        dest="wallboard",
        action="store_false",
        help="skip the wallboard recompute figure (200 queues, 2,000 agents)",
    )
    bench.add_argument(
        "--import-customers",
        type=int,
        default=1_000_000,
        help="customers of the bulk import figure, a CSV through `cti import` into "
        "PostgreSQL (default 1,000,000; 0: skip)",
    )
    bench.add_argument(
        "--soak",
        action="store_true",
        help="also run the soak last: the pop set-up held for minutes, the product's memory "
        "and open files sampled (not run by default)",
    )
    bench.add_argument(
        "--soak-agents", type=int, default=1000, help="connected agents of the soak (1000)"
    )
    bench.add_argument(
        "--soak-rate", type=float, default=50.0, help="calls per second of the soak (50)"
    )
    bench.add_argument(
        "--soak-minutes", type=float, default=10.0, help="minutes of calls of the soak (10)"
    )
    bench.add_argument(
        "--saturation",
        action="store_true",
        help="also run the saturation search last: the call rate stepped up on one product "
        "until pop p99 passes 100 ms, then twice that rate for 30 s and a normal rate for "
        "60 s (about 4 minutes; not run by default)",
    )
    bench.add_argument(
        "--saturation-agents",
        type=int,
        default=500,
        help="connected agents of the saturation search (500)",
    )
    bench.add_argument(
        "--saturation-rates",
        default="25,50,100,150,200,300",
        help="offered calls per second, one step each, comma-separated (25,50,100,150,200,300)",
    )
    bench.add_argument(
        "--saturation-step",
        type=float,
        default=10.0,
        help="seconds of calls per saturation step (10)",
    )
    bench.set_defaults(func=_bench)

    store = argparse.ArgumentParser(add_help=False)
    store.add_argument(
        "--url", help="database URL (default: [store] database_url, or $DATABASE_URL)"
    )
    store.add_argument("--config", help="TOML settings file (default: $CTI_CONFIG)")

    db = sub.add_parser("db", help="customer store schema")
    db_sub = db.add_subparsers(dest="db_command", required=True)
    db_sub.add_parser(
        "upgrade", parents=[store], help="create or migrate the schema to the latest version"
    ).set_defaults(func=_db_upgrade)
    set_pin = db_sub.add_parser(
        "set-pin",
        parents=[store],
        help="set a customer's IVR PIN, read from the terminal or stdin (4-8 digits)",
    )
    set_pin.add_argument("customer_id", type=int, help="the customer's number (store id)")
    set_pin.set_defaults(func=_db_set_pin)

    seed = sub.add_parser(
        "seed-demo", parents=[store], help="replace the demo customers (upgrades the schema)"
    )
    seed.add_argument("--customers", type=int, default=3000, help="how many (default 3000)")
    seed.add_argument(
        "--seed",
        type=int,
        default=1,
        help="random seed; give the demo's --seed so that its callers are known (default 1)",
    )
    seed.add_argument("--rate", type=float, default=4.0, help="the --rate of that demo (default 4)")
    seed.add_argument("--rules", help="segment rules file (default: [segments] rules_file)")
    seed.set_defaults(func=_seed_demo)

    segments = sub.add_parser("segments", help="customer value, lifecycle and loyalty segments")
    segments_sub = segments.add_subparsers(dest="segments_command", required=True)
    recompute = segments_sub.add_parser(
        "recompute",
        parents=[store],
        help="recompute the customers whose orders or survey answers changed",
    )
    recompute.add_argument(
        "--all",
        action="store_true",
        help="check every customer: after a change of the rules (time moves some too)",
    )
    recompute.add_argument("--rules", help="rules file (default: [segments] rules_file)")
    recompute.set_defaults(func=_segments)

    outbox = sub.add_parser("outbox", help="what the external CRM has not heard yet")
    outbox_sub = outbox.add_subparsers(dest="outbox_command", required=True)
    outbox_sub.add_parser(
        "status", parents=[store], help="rows pending, delivered and dead"
    ).set_defaults(func=_outbox)
    listing = outbox_sub.add_parser("list", parents=[store], help="the newest rows in a state")
    listing.add_argument(
        "--state", choices=("dead", "pending", "delivered"), default="dead", help="(default dead)"
    )
    listing.add_argument("--limit", type=int, default=50, help="at most this many (default 50)")
    listing.set_defaults(func=_outbox)
    retry = outbox_sub.add_parser(
        "retry", parents=[store], help="send dead rows again, from a fresh attempt count"
    )
    retry.add_argument("ids", nargs="*", type=int, help="row ids (from `cti outbox list`)")
    retry.add_argument("--all-dead", action="store_true", help="every dead row")
    retry.set_defaults(func=_outbox)

    imp = sub.add_parser(
        "import",
        parents=[store],
        help="import customers, orders, tickets or notes from CSV (exit 1: rows rejected, "
        "2: bad file or database)",
        description="Header row, any order. customers: external_id, kind, name (required), "
        "company_external_id, email, phones (;-separated), address, owner, language, tier, "
        "lifecycle, tags (;-separated), balance, currency, updated_at. orders, tickets, "
        "notes: external_id, customer_external_id, occurred_at, title (required), body; "
        "orders status, amount; tickets status, owner, due_at; notes owner. Re-importing "
        "updates by external_id; columns in crm_sync/importer.py.",
    )
    imp.add_argument(
        "--kind",
        choices=("customers", "orders", "tickets", "notes"),  # crm_sync.importer.KINDS
        default="customers",
        help="what the file holds (default customers)",
    )
    imp.add_argument("file", help="UTF-8 CSV with a header row")
    imp.set_defaults(func=_import)

    merge = sub.add_parser(
        "merge",
        parents=[store],
        help="fold a duplicate customer into another, recorded and told to the CRM",
        description="Moves the phones, timeline, survey scores and contacts of MERGED to "
        "SURVIVOR, deletes MERGED and records the merge; later CRM data for MERGED's "
        "external id lands on SURVIVOR.",
    )
    merge.add_argument("survivor", type=int, help="the customer that stays (store id)")
    merge.add_argument("merged", type=int, help="the duplicate that goes (store id)")
    merge.add_argument("--by", help="who merges, for the record (default: your login)")
    merge.set_defaults(func=_merge)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
