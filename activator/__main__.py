"""``python -m activator``: the composition root. Reads upstream's env (plus KDP_* knobs), runs."""
from __future__ import annotations

import asyncio
import gc
import logging
import os
import sys

from activator.config import ActivatorConfig, ConfigError


def main() -> int:
    try:
        config = ActivatorConfig.from_env(os.environ)
    except ConfigError as e:
        print(f"activator: configuration error: {e}", file=sys.stderr)
        return 1
    logging.basicConfig(level=os.environ.get("KDP_LOG_LEVEL", "INFO").upper(),
                        format='{"level":"%(levelname)s","ts":"%(asctime)s","logger":"%(name)s","msg":"%(message)s"}')
    try:
        import uvloop
        run = uvloop.run
    except ImportError:  # pragma: no cover
        run = asyncio.run
    return run(_serve(config))


async def _serve(config: ActivatorConfig) -> int:
    from activator.server import Activator

    act = Activator(config)
    await act.start()
    act.install_signal_handlers()
    gc.collect()
    gc.freeze()
    await act.stopped.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
