"""A hostile exchange for tests: a real HTTP server on 127.0.0.1 in front of an upstream
(usually the simulator) that answers chosen requests with crafted bytes.

Every request is proxied to ``upstream`` (path, query and the ``X-JEX-APIKEY`` header;
the upstream's status, body and weight headers come back) unless a rule matches it.
A rule matches when its glob (:func:`fnmatch.fnmatchcase`) matches the request path
(``/api/v1/spot/klines``); a glob that holds a ``?`` is matched against the path and
the query as the client sent them, so ``/api/v1/spot/klines?*symbol=BTCUSDT*`` picks
one symbol (``?`` stays fnmatch's one-character wildcard, which matches the ``?`` too).
Rules are tried newest first; a rule applies ``times`` times
(``None``: forever), then stops matching. Each method returns its :class:`Rule`, whose
``served`` counts the requests it answered::

    with SimServer(SimExchange(seed=7)) as sim, HostileServer(sim.base_url) as hostile:
        hostile.trickle("/api/v1/spot/klines", interval=0.5)      # headers, then 1 byte / 0.5 s
        hostile.endless("/api/v1/*/depth?*symbol=BTCUSDT*")       # chunked, never ends
        hostile.large("/api/v1/exchangeInfo", 200 * 2**20, times=1)  # 200 MiB, Content-Length
        hostile.gzip_bomb("/api/v1/contract/depth", 2**30)        # ~1 MB gzip, 1 GiB inflated
        hostile.respond("/api/v1/time", {"serverTime": True})     # JSON (or bytes), any status
        hostile.respond("/api/v1/spot/trades", b"", status=418, headers={"Retry-After": "inf"})
        hostile.redirect("/api/v1/ping", "http://elsewhere.test/steal")
        hostile.mutate("/api/v1/spot/historicalTrades", lambda trades: trades[:1])
        settings = fast_settings(hostile.base_url, tmp_path)

Kinds of answer (``Rule.kind``):

- ``trickle``: status and headers (no length: the body lasts until the connection
  closes), then ``body`` one byte every ``interval`` seconds, then spaces, until the
  client hangs up;
- ``endless``: a chunked body of ``chunk`` repeated, until the client hangs up (or
  ``total`` bytes, then the end: a safety net for a client without a size cap);
- ``large``: a ``size``-byte body with its ``Content-Length`` (``declare=False``:
  chunked, so only the bytes themselves tell), valid JSON (``[`` spaces ``]``);
- ``gzip_bomb``: ``Content-Encoding: gzip``, a body that inflates to ``size`` bytes of
  valid JSON (``[`` spaces ``]``; cached per size);
- ``respond``: ``body`` (bytes or str as they are, anything else as JSON) with
  ``status`` and ``headers``;
- ``redirect``: ``status`` (302) with ``Location``;
- ``mutate``: the upstream's answer, its JSON passed through ``change(payload)``; the
  result is sent as JSON (bytes as they are); the upstream's status and weight headers
  are kept.

``requests`` lists ``(path_and_query, rule kind or "proxy")`` of every request, for
assertions; :meth:`HostileServer.clear` drops every rule. Responses close their
connection (``Connection: close``), so no rule's answer is left on a reused connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import functools
import json
import threading
import zlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

#: The headers of the upstream's answer that are passed on (the weight it counted).
PASSED_ON = ("content-type", "x-mbx-used-weight", "x-mbx-used-weight-1m", "retry-after")
_REASONS = {200: "OK", 301: "Moved Permanently", 302: "Found", 418: "I'm a teapot"}
_REASONS |= {429: "Too Many Requests", 500: "Internal Server Error"}


@dataclass
class Rule:
    """One crafted answer for the requests ``pattern`` matches; see the module docstring."""

    pattern: str
    kind: str
    times: int | None = None
    options: dict[str, Any] = field(default_factory=dict)
    served: int = 0

    def matches(self, path: str, query: str) -> bool:
        if self.times is not None and self.served >= self.times:
            return False
        target = f"{path}?{query}" if "?" in self.pattern else path
        return fnmatch.fnmatchcase(target, self.pattern)


@functools.lru_cache(maxsize=4)
def gzip_bomb_body(size: int) -> bytes:
    """A gzip body that inflates to ``size`` bytes: ``[``, spaces, ``]``."""
    deflate = zlib.compressobj(9, zlib.DEFLATED, zlib.MAX_WBITS | 16)
    spaces = b" " * (1 << 20)
    parts = [deflate.compress(b"[")]
    left = size - 2
    while left > 0:
        parts.append(deflate.compress(spaces[: min(left, len(spaces))]))
        left -= len(spaces)
    parts += [deflate.compress(b"]"), deflate.flush()]
    return b"".join(parts)


class HostileServer:
    """The server, in a thread of its own; a context manager. ``base_url`` is known once
    started."""

    def __init__(self, upstream: str, host: str = "127.0.0.1") -> None:
        self.upstream = upstream.rstrip("/")
        self.host = host
        self.port = 0
        self.requests: list[tuple[str, str]] = []
        self._rules: list[Rule] = []
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.base_events.Server | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._stopped: asyncio.Event | None = None
        self._connections: set[asyncio.Task[None]] = set()

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    # -- rules -------------------------------------------------------------------------------

    def _add(self, pattern: str, kind: str, times: int | None, **options: Any) -> Rule:
        rule = Rule(pattern, kind, times, options)
        with self._lock:
            self._rules.insert(0, rule)
        return rule

    def trickle(
        self,
        pattern: str,
        *,
        interval: float = 1.0,
        body: bytes = b'[{"price": "1.0", "qty": "2.0", "time": 1',
        status: int = 200,
        times: int | None = None,
    ) -> Rule:
        return self._add(pattern, "trickle", times, interval=interval, body=body, status=status)

    def endless(
        self,
        pattern: str,
        *,
        chunk: bytes = b"[" + b"1," * 32_768,
        total: int | None = None,
        times: int | None = None,
    ) -> Rule:
        return self._add(pattern, "endless", times, chunk=chunk, total=total)

    def large(
        self, pattern: str, size: int, *, declare: bool = True, times: int | None = None
    ) -> Rule:
        return self._add(pattern, "large", times, size=size, declare=declare)

    def gzip_bomb(self, pattern: str, size: int = 1 << 30, *, times: int | None = None) -> Rule:
        gzip_bomb_body(size)  # made now, not while a client waits
        return self._add(pattern, "gzip_bomb", times, size=size)

    def respond(
        self,
        pattern: str,
        body: Any,
        *,
        status: int = 200,
        headers: dict[str, str] | None = None,
        times: int | None = None,
    ) -> Rule:
        return self._add(pattern, "respond", times, body=body, status=status, headers=headers)

    def redirect(
        self, pattern: str, location: str, *, status: int = 302, times: int | None = None
    ) -> Rule:
        return self._add(pattern, "redirect", times, location=location, status=status)

    def mutate(
        self, pattern: str, change: Callable[[Any], Any], *, times: int | None = None
    ) -> Rule:
        return self._add(pattern, "mutate", times, change=change)

    def clear(self) -> None:
        with self._lock:
            self._rules.clear()

    def served(self, kind: str | None = None) -> list[str]:
        """The requests answered by a rule (of ``kind``), as ``path?query``."""
        return [
            target
            for target, how in list(self.requests)
            if how != "proxy" and (kind is None or how == kind)
        ]

    def _rule_for(self, path: str, query: str) -> Rule | None:
        with self._lock:
            for rule in self._rules:
                if rule.matches(path, query):
                    rule.served += 1
                    return rule
        return None

    # -- the server ----------------------------------------------------------------------------

    def start(self) -> HostileServer:
        self._thread = threading.Thread(target=self._serve, name="hostile", daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the hostile server did not start")
        return self

    def stop(self) -> None:
        if self._loop is not None and self._stopped is not None:
            self._loop.call_soon_threadsafe(self._stopped.set)
        if self._thread is not None:
            self._thread.join(timeout=10)

    def __enter__(self) -> HostileServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _serve(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopped = asyncio.Event()
        self._upstream = httpx.AsyncClient(
            base_url=self.upstream, timeout=30, headers={"Accept-Encoding": "identity"}
        )
        self._server = await asyncio.start_server(self._accept, self.host, 0)
        self.port = self._server.sockets[0].getsockname()[1]
        self._ready.set()
        try:
            await self._stopped.wait()
        finally:
            self._server.close()
            for task in list(self._connections):
                task.cancel()
            await asyncio.gather(*self._connections, return_exceptions=True)
            await self._upstream.aclose()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        try:
            await self._handle(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass  # the client hung up: what a hostile answer expects
        except asyncio.CancelledError:
            pass  # the server stops; ending quietly keeps asyncio from logging it
        finally:
            self._connections.discard(task)
            writer.close()
            with contextlib.suppress(ConnectionError, asyncio.CancelledError):
                await writer.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        request_line, *header_lines = head.decode("latin-1").split("\r\n")
        _, target, _ = request_line.split(" ", 2)
        headers = {}
        for line in header_lines:
            if ":" in line:
                name, value = line.split(":", 1)
                headers[name.strip().lower()] = value.strip()
        path, _, query = target.partition("?")
        rule = self._rule_for(path, query)
        self.requests.append((target, rule.kind if rule else "proxy"))
        if rule is None:
            await self._proxy(writer, target, headers)
            return
        options = rule.options
        if rule.kind == "trickle":
            await self._trickle(writer, options)
        elif rule.kind == "endless":
            await self._endless(writer, options)
        elif rule.kind == "large":
            await self._large(writer, options)
        elif rule.kind == "gzip_bomb":
            body = gzip_bomb_body(options["size"])
            await _send(writer, 200, body, {"Content-Encoding": "gzip"})
        elif rule.kind == "respond":
            await _send(writer, options["status"], _as_bytes(options["body"]), options["headers"])
        elif rule.kind == "redirect":
            await _send(writer, options["status"], b"", {"Location": options["location"]})
        elif rule.kind == "mutate":
            await self._proxy(writer, target, headers, change=options["change"])

    async def _proxy(
        self,
        writer: asyncio.StreamWriter,
        target: str,
        headers: dict[str, str],
        change: Callable[[Any], Any] | None = None,
    ) -> None:
        forward = {k: v for k, v in headers.items() if k == "x-jex-apikey"}
        upstream = await self._upstream.get(target, headers=forward)
        body = upstream.content
        if change is not None:
            body = _as_bytes(change(json.loads(body)))
        passed = {k: v for k, v in upstream.headers.items() if k.lower() in PASSED_ON}
        await _send(writer, upstream.status_code, body, passed)

    async def _trickle(self, writer: asyncio.StreamWriter, options: dict[str, Any]) -> None:
        writer.write(_head(options["status"]))  # no length: the body ends when we hang up
        await writer.drain()
        for index in range(10**9):
            body = options["body"]
            writer.write(body[index : index + 1] if index < len(body) else b" ")
            await writer.drain()
            await asyncio.sleep(options["interval"])

    async def _endless(self, writer: asyncio.StreamWriter, options: dict[str, Any]) -> None:
        writer.write(_head(200, {"Transfer-Encoding": "chunked"}))
        chunk, total, sent = options["chunk"], options["total"], 0
        while total is None or sent < total:
            writer.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            sent += len(chunk)
            await writer.drain()
        writer.write(b"0\r\n\r\n")
        await writer.drain()

    async def _large(self, writer: asyncio.StreamWriter, options: dict[str, Any]) -> None:
        size, declare = options["size"], options["declare"]
        framing = {"Content-Length": str(size)} if declare else {"Transfer-Encoding": "chunked"}
        writer.write(_head(200, framing))
        async for piece in _spaces_json(size):
            writer.write(piece if declare else b"%x\r\n%s\r\n" % (len(piece), piece))
            await writer.drain()
        if not declare:
            writer.write(b"0\r\n\r\n")
            await writer.drain()


async def _spaces_json(size: int) -> AsyncIterator[bytes]:
    """``size`` bytes of valid JSON, ``[`` spaces ``]``, in pieces of 64 KiB."""
    spaces = b" " * 65_536
    yield b"["
    left = size - 2
    while left > 0:
        yield spaces[: min(left, len(spaces))]
        left -= len(spaces)
    yield b"]"


def _as_bytes(body: Any) -> bytes:
    if isinstance(body, bytes):
        return body
    if isinstance(body, str):
        return body.encode("utf-8")
    return json.dumps(body).encode("utf-8")


def _head(status: int, headers: dict[str, str] | None = None) -> bytes:
    lines = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Status')}", "Connection: close"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


async def _send(
    writer: asyncio.StreamWriter, status: int, body: bytes, headers: dict[str, str] | None
) -> None:
    given = {k.lower() for k in (headers or {})}
    extra = {} if "content-length" in given else {"Content-Length": str(len(body))}
    if "content-type" not in given and body:
        extra["Content-Type"] = "application/json"
    writer.write(_head(status, {**(headers or {}), **extra}) + body)
    await writer.drain()
