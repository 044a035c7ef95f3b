"""The ``cti`` command: serve, demo, replay, bench, simulate."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from cti import replay as replay_mod


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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cti", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    rep = sub.add_parser("replay", help="replay a recorded AMI stream and print one line per call")
    rep.add_argument("file", help="raw AMI text as recorded (LF or CRLF)")
    rep.add_argument("--json", action="store_true", help="one JSON object per call")
    rep.add_argument("--pbx", help="PBX name for the calls (default: the stream's SystemName)")
    rep.set_defaults(func=_replay)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
