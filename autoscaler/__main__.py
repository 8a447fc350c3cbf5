"""``python -m autoscaler``: the autoscaler's command line (a composition root, no logic).

Subcommands:

* ``replay FILE`` - replay conformance scenarios (``-`` = stdin) and print one JSON line of
  answers per scenario (:mod:`autoscaler.replay`).

The service itself will be the ``serve`` subcommand and the default when none is given;
until it exists, running without a subcommand prints the usage and exits with status 2.
To add a subcommand, register it in :func:`build_parser` with ``set_defaults(func=...)``.
"""
from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

__all__ = ["build_parser", "main"]

logger = logging.getLogger("autoscaler")


def _replay(args: argparse.Namespace) -> int:
    from autoscaler import replay

    try:
        if args.file == "-":
            replay.run(sys.stdin, sys.stdout)
        else:
            with open(args.file, encoding="utf-8") as src:
                replay.run(src, sys.stdout)
    except OSError as e:
        print(f"autoscaler replay: {e}", file=sys.stderr)
        return 1
    except replay.ReplayError as e:
        print(f"autoscaler replay: {args.file}: {e}", file=sys.stderr)
        return 1
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m autoscaler",
        description="Knative's KPA autoscaler, bit-exact with upstream and vectorised.")
    parser.add_argument("--log-level", default="WARNING",
                        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
                        help="logging level (default: %(default)s)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    p = sub.add_parser("replay", help="replay conformance scenarios and print the answers",
                       description="Replay decider and window scenarios (JSON lines, see "
                                   "shared/conformance/README.md) through the production "
                                   "decider and windows; print one JSON line per scenario.")
    p.add_argument("file", metavar="FILE", help="scenario file, one JSON object per line; - = stdin")
    p.set_defaults(func=_replay)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    func = getattr(args, "func", None)
    if func is None:  # the service (serve) becomes the default here
        parser.print_usage(sys.stderr)
        return 2
    return int(func(args))


if __name__ == "__main__":
    sys.exit(main())
