"""A tiny user container: answers "Hello <TARGET>!" on any path, on $PORT.

Standard library only. Optional query parameters let demos shape the load:
``?sleep=0.2`` waits before answering, ``?work=0.05`` burns that much CPU.
"""
from __future__ import annotations

import os
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit


class Hello(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Buffer each response and send it in one write: headers and body written separately meet
    # Nagle's algorithm and the client's delayed ACK on a kept-alive connection (+40 ms each).
    wbufsize = -1

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        q = parse_qs(urlsplit(self.path).query)
        if "sleep" in q:
            time.sleep(min(float(q["sleep"][0]), 30.0))
        if "work" in q:
            end = time.process_time() + min(float(q["work"][0]), 10.0)
            n = 0
            while time.process_time() < end:
                n += 1
        body = f"Hello {os.environ.get('TARGET', 'World')}!\n".encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_POST = do_GET

    def log_message(self, format: str, *args: object) -> None:
        pass


class Server(ThreadingHTTPServer):
    request_queue_size = 1024  # a burst through a queue-proxy opens many connections at once
    daemon_threads = True


def main() -> None:
    Server(("127.0.0.1", int(os.environ.get("PORT", "8080"))), Hello).serve_forever()


if __name__ == "__main__":
    main()
