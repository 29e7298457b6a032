"""A threaded HTTP/1.1 server on 127.0.0.1 around :class:`~.api.SimulatedAPI`.

Keep-alive connections, one thread per connection, ``TCP_NODELAY`` and single-write responses (so small responses do
not wait on Nagle/delayed-ACK), which keeps the server out of the way of benchmarks doing thousands of requests.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from .api import SimulatedAPI

_REASONS = {
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    404: "Not Found",
    429: "Too Many Requests",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
}


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: SimServer

    def setup(self) -> None:
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def _serve(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        if length:
            self.rfile.read(length)
        status, headers, body = self.server.api.handle(self.command, self.path, (), self.headers.items())
        head = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Unknown')}"]
        head += [f"{k}: {v}" for k, v in headers]
        head.append(f"content-length: {len(body)}")
        if self.close_connection:
            head.append("connection: close")
        self.wfile.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body)
        self.wfile.flush()

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _serve

    def log_message(self, format: str, *args: Any) -> None:
        return


class SimServer(ThreadingHTTPServer):
    """The HTTP server; ``base_url`` is ``http://HOST:PORT/v1``."""

    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 512

    def __init__(self, api: SimulatedAPI, host: str = "127.0.0.1", port: int = 0) -> None:
        """Bind (``port=0`` picks a free port); call :meth:`serve_forever` or use :func:`serve`."""
        super().__init__((host, port), _Handler)
        self.api = api

    @property
    def base_url(self) -> str:
        """``http://HOST:PORT/v1``."""
        host, port = self.server_address[:2]
        return f"http://{host!s}:{port}/v1"


@contextmanager
def serve(
    api: SimulatedAPI, host: str = "127.0.0.1", port: int = 0, server_class: type[SimServer] | None = None
) -> Iterator[str]:
    """Serve ``api`` on a background thread for the duration of the ``with`` block.

    Example:
        >>> with serve(SimulatedAPI(Organization(seed=1))) as base_url:
        ...     httpx.get(f"{base_url}/organization/projects", headers={"Authorization": f"Bearer {key}"})

    Args:
        api: the handler to serve (its ``counters`` count the requests).
        host: interface to bind.
        port: port (0 = any free port).
        server_class: a :class:`SimServer` subclass (tests that silence some errors).

    Yields:
        The base URL, ``http://127.0.0.1:PORT/v1``.
    """
    server = (server_class or SimServer)(api, host, port)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server.base_url
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


__all__ = ["SimServer", "serve"]
