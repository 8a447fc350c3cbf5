"""``python -m autoscaler``: the autoscaler's command line (a composition root, no logic).

Subcommands:

* ``serve`` (the default when none is given) - the autoscaler service (:mod:`autoscaler.server`):
  gRPC on 8081 (stat push, decision feed, control), upstream's stat websocket on 8080, Prometheus
  on 9090 (``METRICS_PROMETHEUS_PORT``), the debug endpoint on 8008; see ``serve --help``.
* ``replay FILE`` - replay conformance scenarios (``-`` = stdin) and print one JSON line of
  answers per scenario (:mod:`autoscaler.replay`).

To add a subcommand, register it in :func:`build_parser` with ``set_defaults(func=...)``.
"""
from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import os
import sys
from collections.abc import Sequence

__all__ = ["build_parser", "main", "with_default_command"]

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


def _duration(text: str) -> float:
    from autoscaler.goparse import SECOND, GoParseError, parse_duration
    try:
        return parse_duration(text) / SECOND
    except GoParseError as e:
        raise argparse.ArgumentTypeError(f"{text!r} is not a Go duration such as 600s ({e})")


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        port = -1
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port in [0, 65535]")
    return port


def _serve(args: argparse.Namespace) -> int:
    from autoscaler import logs
    from autoscaler.config import ConfigError
    from autoscaler.configfile import ConfigFileError
    from autoscaler.server import AutoscalerServer, ServerOptions

    logs.configure(args.log_level, args.log_format)
    options = ServerOptions(
        host=args.bind, grpc_port=args.grpc_port, websocket_port=args.websocket_port,
        metrics_port=args.metrics_port, debug_port=args.debug_port, config_path=args.config,
        scale_target=args.scale_target, scrape_targets_path=args.scrape_targets,
        progress_deadline=args.progress_deadline, burst_decisions=not args.no_burst_decisions,
        resync_period=args.scale_resync)
    try:
        server = AutoscalerServer(options)
    except (ConfigError, ConfigFileError, ValueError) as e:
        print(f"autoscaler: configuration error: {e}", file=sys.stderr)
        return 1

    async def run() -> int:
        try:
            await server.start()
        except OSError as e:
            print(f"autoscaler: cannot listen: {e}", file=sys.stderr)
            await server.stop(0)
            return 1
        server.install_signal_handlers()
        gc.collect()
        gc.freeze()
        await server.stopped.wait()
        await server.stop()
        return 0

    try:
        import uvloop
        return int(uvloop.run(run()))
    except ImportError:  # pragma: no cover
        return asyncio.run(run())


def _add_serve_flags(p: argparse.ArgumentParser) -> None:
    env = os.environ
    p.add_argument("--config", default="", metavar="FILE",
                   help="config-autoscaler data map (YAML or JSON, or a whole ConfigMap); "
                        "reloaded when it changes, an invalid update is logged and ignored")
    p.add_argument("--bind", default="0.0.0.0", help="listen address (default: %(default)s)")
    p.add_argument("--grpc-port", type=_port, default=8081,
                   help="StatIngest, DecisionFeed, AutoscalerControl (default: %(default)s)")
    p.add_argument("--websocket-port", type=_port, default=8080,
                   help="upstream's stat websocket, as activators dial it (default: %(default)s)")
    p.add_argument("--metrics-port", type=_port,
                   default=_port(env.get("METRICS_PROMETHEUS_PORT", "9090")),
                   help="Prometheus /metrics (default: METRICS_PROMETHEUS_PORT or 9090)")
    p.add_argument("--debug-port", type=_port, default=8008,
                   help="/debug/revisions/<ns>/<rev>, /debug/status (default: %(default)s)")
    p.add_argument("--scale-target", default="log", metavar="TARGET",
                   help="where replicas go: log (dry run) or grpc://host:port "
                        "(ScaleTarget.Scale of the local runtime) (default: %(default)s)")
    p.add_argument("--scrape-targets", default="", metavar="FILE",
                   help="pods to scrape on :9090 per revision (YAML/JSON "
                        "'namespace/revision: [address, ...]'), reloaded when it changes")
    p.add_argument("--progress-deadline", type=_duration, default=600.0, metavar="DURATION",
                   help="config-deployment progress-deadline; activation times out after it "
                        "plus 30s (default: 600s)")
    p.add_argument("--scale-resync", type=_duration, default=30.0, metavar="DURATION",
                   help="send every revision's replicas to the scale target again this often, "
                        "to heal a target that lost its state (default: 30s)")
    p.add_argument("--no-burst-decisions", action="store_true",
                   help="decide only at the 2 s tick and on pokes, as upstream (by default a "
                        "revision whose current second crosses its panic level is decided at "
                        "once)")
    p.add_argument("--log-format", choices=["json", "text"], default="json",
                   help="process log format (default: %(default)s)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m autoscaler",
        description="Knative's KPA autoscaler, bit-exact with upstream and vectorised.")
    parser.add_argument("--log-level", default=None,
                        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
                        help="logging level (default: INFO for serve, WARNING otherwise)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    s = sub.add_parser("serve", help="run the autoscaler service (the default)",
                       description="The KPA autoscaler service: stats in (gRPC push, :9090 "
                                   "scrape, upstream websocket), decisions out (scale target, "
                                   "DecisionFeed).")
    _add_serve_flags(s)
    s.set_defaults(func=_serve)
    p = sub.add_parser("replay", help="replay conformance scenarios and print the answers",
                       description="Replay decider and window scenarios (JSON lines, see "
                                   "shared/conformance/README.md) through the production "
                                   "decider and windows; print one JSON line per scenario.")
    p.add_argument("file", metavar="FILE", help="scenario file, one JSON object per line; - = stdin")
    p.set_defaults(func=_replay)
    return parser


def with_default_command(argv: Sequence[str]) -> list[str]:
    """``argv`` with ``serve`` inserted after the global options when no subcommand is given."""
    argv = list(argv)
    i = 0
    while i < len(argv) and (argv[i] == "--log-level" or argv[i].startswith("--log-level=")):
        i += 2 if argv[i] == "--log-level" else 1
    if i >= len(argv) or argv[i] not in ("serve", "replay", "-h", "--help"):
        argv.insert(min(i, len(argv)), "serve")
    return argv


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(with_default_command(sys.argv[1:] if argv is None else argv))
    if args.log_level is None:
        args.log_level = "INFO" if args.command == "serve" else "WARNING"
    if args.command != "serve":
        logging.basicConfig(level=args.log_level,
                            format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return int(args.func(args))

if __name__ == "__main__":
    sys.exit(main())
