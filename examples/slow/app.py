"""A CPU-bound user container: every request burns CPU, one request at a time.

``GET /`` computes for ``WORK_MS`` milliseconds of CPU (default 100; ``?ms=N`` per request)
and answers how long it took. The server is single-threaded, as many real CPU-bound apps
are, which is why its manifest sets ``containerConcurrency: 1``: the queue-proxy then holds
extra requests instead of letting them pile up in the app, and the autoscaler adds pods.
Standard library only.
"""
from __future__ import annotations

import hashlib
import os
import time
from http.server import BaseHTTPRequestHandler, HTTPServer
from urllib.parse import parse_qs, urlsplit


def burn(seconds: float) -> int:
    """Hash until ``seconds`` of CPU time are used; returns the rounds done."""
    end = time.process_time() + seconds
    digest = b"kdp"
    rounds = 0
    while time.process_time() < end:
        for _ in range(200):
            digest = hashlib.sha256(digest).digest()
        rounds += 200
    return rounds


class Slow(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        q = parse_qs(urlsplit(self.path).query)
        ms = float(q.get("ms", [os.environ.get("WORK_MS", "100")])[0])
        t0 = time.perf_counter()
        rounds = burn(min(ms, 10_000.0) / 1000.0)
        body = f"burned {ms:.0f} ms of CPU ({rounds} rounds) in {1000 * (time.perf_counter() - t0):.0f} ms\n".encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


def main() -> None:
    HTTPServer(("127.0.0.1", int(os.environ.get("PORT", "8080"))), Slow).serve_forever()


if __name__ == "__main__":
    main()
