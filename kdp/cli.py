"""The ``kdp`` command line: ``up``, ``status``, ``apply``, ``simulate`` and ``demo``."""
from __future__ import annotations

import argparse
import sys

__all__ = ["main"]


def build_parser() -> argparse.ArgumentParser:
    from kdp import simulate_cmd, up

    ap = argparse.ArgumentParser(prog="kdp", description="Knative Serving's data plane in Python")
    sub = ap.add_subparsers(dest="command", required=True)
    up.add_parsers(sub)
    simulate_cmd.add_parser(sub)
    demo = sub.add_parser("demo", help="run the local demo: kdp up with the hello example under a load pattern")
    demo.add_argument("--queue-proxy-only", action="store_true",
                      help="the short queue-proxy tour instead (one pod, no autoscaler)")
    demo.add_argument("--out", default="demo-out", help="where the plot and the timeline go (default: %(default)s)")
    demo.set_defaults(func=_demo)
    return ap


def _demo(args: argparse.Namespace) -> int:
    if args.queue_proxy_only:
        from kdp import qpdemo
        return qpdemo.run()
    from kdp import demo
    return demo.run(args.out)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
