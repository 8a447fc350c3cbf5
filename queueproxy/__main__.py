"""``python -m queueproxy``: the composition root. Reads upstream's env, builds, runs."""
from __future__ import annotations

import asyncio
import gc
import os
import sys

from queueproxy.config import Config, ConfigError
from queueproxy.logging_setup import configure_logging
from queueproxy.readiness import ProbeConfigError


def main() -> int:
    try:
        config = Config.from_env(os.environ)
    except ConfigError as e:
        print(f"queue-proxy: configuration error: {e}", file=sys.stderr)
        return 1
    try:
        configure_logging(config.logging_config, config.logging_level, "queueproxy",
                          f"{config.namespace}/{config.revision}", pod=config.pod_name)
    except ConfigError as e:
        print(f"queue-proxy: configuration error: {e}", file=sys.stderr)
        return 1
    try:
        import uvloop
        run = uvloop.run
    except ImportError:  # pragma: no cover
        run = asyncio.run
    try:
        return run(_serve(config))
    except (ProbeConfigError, ConfigError) as e:
        print(f"queue-proxy: configuration error: {e}", file=sys.stderr)
        return 1


async def _serve(config: Config) -> int:
    from queueproxy.server import QueueProxy

    qp = QueueProxy(config)
    await qp.start()
    qp.install_signal_handlers()
    # Everything built so far lives for the whole process: keep it out of the cyclic
    # collector's way so collections on the request path stay short.
    gc.collect()
    gc.freeze()
    await qp.stopped.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
