"""The ``cti`` command: serve, demo, replay, bench, simulate."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

from cti import replay as replay_mod
from cti import settings as settings_mod
from cti.ami import AmiAuthError, AmiProtocolError


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
    from cti.bench import run

    run(args.copies)
    return 0


def _demo(args: argparse.Namespace) -> int:
    from cti.demo import demo

    _logging("WARNING")
    return _run_service(
        lambda: demo(
            port=args.port, rate=args.rate, seed=args.seed, speed=args.speed, duration=args.duration
        )
    )


def _simulate(args: argparse.Namespace) -> int:
    from cti.demo import simulate

    _logging("WARNING")
    return _run_service(
        lambda: simulate(
            port=args.port, rate=args.rate, seed=args.seed, speed=args.speed, duration=args.duration
        )
    )


def _serve(args: argparse.Namespace) -> int:
    from cti.console import ConsoleSink
    from cti.service import CtiService

    try:
        settings = settings_mod.load(args.config)
    except settings_mod.SettingsError as exc:
        print(f"cti serve: {exc}", file=sys.stderr)
        return 2
    _logging(settings.log_level)
    return _run_service(lambda: CtiService(settings, [ConsoleSink()]).run())


def _run_service(main: Callable[[], Coroutine[Any, Any, None]]) -> int:
    """Run until Ctrl-C; a PBX that refuses us for good ends the process with its reason."""
    refused: list[BaseException] = []
    try:
        asyncio.run(main())
    except* KeyboardInterrupt:
        pass
    except* (AmiAuthError, AmiProtocolError) as group:
        refused.extend(group.exceptions)
    for exc in refused:
        print(f"cti: {exc}", file=sys.stderr)
    return 1 if refused else 0


def _logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )


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
        ("demo", "PBX simulator + service in one process, printing call events", 0),
        ("simulate", "only the PBX simulator (real AMI on 127.0.0.1)", 5038),
    ):
        cmd = sub.add_parser(name, help=text)
        cmd.add_argument(
            "--port", type=int, default=port, help=f"AMI port (default {port or 'any free'})"
        )
        cmd.add_argument("--rate", type=float, default=12.0, help="calls per minute (default 12)")
        cmd.add_argument(
            "--speed", type=float, default=1.0, help="time runs this many times faster"
        )
        cmd.add_argument("--seed", type=int, default=1, help="random seed of the call mix")
        cmd.add_argument("--duration", type=float, help="stop after this many seconds")
        cmd.set_defaults(func=_demo if name == "demo" else _simulate)

    bench = sub.add_parser("bench", help="AMI throughput and latency benchmark")
    bench.add_argument("--copies", type=int, default=60, help="copies of the captures to replay")
    bench.set_defaults(func=_bench)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
