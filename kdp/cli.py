"""The ``kdp`` command line."""
from __future__ import annotations

import argparse
import sys

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="kdp", description="Knative Serving's data plane in Python")
    sub = ap.add_subparsers(dest="command", required=True)
    sub.add_parser("demo", help="run the local demo")
    args = ap.parse_args(argv)
    if args.command == "demo":
        from kdp import qpdemo
        return qpdemo.run()
    return 2  # pragma: no cover (argparse enforces the choices)


if __name__ == "__main__":
    sys.exit(main())
