"""A user container for the runtime's tests: answers on $PORT, and misbehaves on request.

* ``GET /`` answers ``ok <K_REVISION>``; ``?sleep=S`` waits S seconds first;
* ``GET /crash`` exits the process at once (status 1), mid-request;
* env ``CRASH_AT_START=<msg>``: prints ``msg`` to stderr and exits 3 before listening;
* env ``GRANDCHILD=1``: starts ``sleep 300`` and prints ``grandchild <pid>`` first.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:  # noqa: N802
        url = urlsplit(self.path)
        if url.path == "/crash":
            os._exit(1)
        q = parse_qs(url.query)
        if "sleep" in q:
            time.sleep(float(q["sleep"][0]))
        body = f"ok {os.environ.get('K_REVISION', '')}\n".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


def main() -> None:
    if os.environ.get("CRASH_AT_START"):
        print(os.environ["CRASH_AT_START"], file=sys.stderr, flush=True)
        sys.exit(3)
    if os.environ.get("GRANDCHILD"):
        child = subprocess.Popen(["sleep", "300"])
        print(f"grandchild {child.pid}", flush=True)
    server = ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), Handler)
    server.daemon_threads = True
    server.serve_forever()


if __name__ == "__main__":
    main()
