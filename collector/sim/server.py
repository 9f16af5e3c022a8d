"""Serving the simulator: in a background thread (tests, ``run --sim``) or in the foreground.

The socket is bound before uvicorn starts, so port 0 picks a free port and
:attr:`SimServer.base_url` is known as soon as :meth:`SimServer.start` returns.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
from typing import Any

import uvicorn

from collector.sim.app import create_app
from collector.sim.market import SimExchange

log = logging.getLogger(__name__)


def _bind(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    # Accepted connections inherit this: without it, a response written as headers then
    # body waits ~40 ms for the client's delayed ACK (Nagle), on every request.
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind((host, port))
    sock.listen(128)
    sock.setblocking(False)
    return sock


def _server(exchange: SimExchange, **app_options: Any) -> uvicorn.Server:
    config = uvicorn.Config(
        create_app(exchange, **app_options),
        log_level="warning",
        access_log=False,
        lifespan="off",
    )
    return uvicorn.Server(config)


class SimServer:
    """The simulator on 127.0.0.1 in a background thread. Also a context manager.

    ``app_options`` are :func:`~collector.sim.app.create_app`'s (``weight_limit``,
    ``weight_window``, ``faults``, ...)."""

    def __init__(
        self, exchange: SimExchange, host: str = "127.0.0.1", port: int = 0, **app_options: Any
    ) -> None:
        self.exchange = exchange
        self.host = host
        self._socket = _bind(host, port)
        self.port = int(self._socket.getsockname()[1])
        self._server = _server(exchange, **app_options)
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> SimServer:
        self._thread = threading.Thread(
            target=lambda: asyncio.run(self._server.serve(sockets=[self._socket])),
            name="jex-sim",
            daemon=True,
        )
        self._thread.start()
        while not self._server.started:
            if not self._thread.is_alive():
                raise RuntimeError("the simulator failed to start")
            self._thread.join(0.01)
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._socket.close()

    def __enter__(self) -> SimServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def run_forever(exchange: SimExchange, host: str, port: int, **app_options: Any) -> None:
    """Serve in the foreground until Ctrl-C or SIGTERM (uvicorn handles both)."""
    sock = _bind(host, port)
    try:
        asyncio.run(_server(exchange, **app_options).serve(sockets=[sock]))
    finally:
        sock.close()
