"""Reading a response body within bounds: a size cap per endpoint, counted on the declared
length, on the wire and again on the decoded bytes (a gzip bomb is stopped while it is
being inflated, in steps of :data:`DECODE_STEP`)."""

from __future__ import annotations

import zlib
from collections.abc import Iterator, Mapping
from typing import Any

import httpx

from collector.exchange.response import Response, response_of, snippet

#: Body size caps, in decoded bytes, when ``exchange.max_response_size`` says nothing
#: else. The largest documented responses are a 1000-kline page (about 250 KB) and the
#: instrument lists (about 0.5 KB per symbol): 16 MiB is 60 times the first, and the
#: instrument lists get room for over 100,000 symbols.
DEFAULT_MAX_RESPONSE_BYTES = 16 * 1024 * 1024
MAX_RESPONSE_BYTES_BY_ENDPOINT: Mapping[str, int] = {
    "exchangeInfo": 64 * 1024 * 1024,
    "optionInfo": 64 * 1024 * 1024,
    "contractInfo": 64 * 1024 * 1024,
}
#: Decoded bytes produced per step of decompression: memory stays bounded however well
#: the body compresses (deflate inflates up to about 1000 times).
DECODE_STEP = 64 * 1024
#: What a quarantine file gets of a body that broke a bound (it keeps less: its own cap).
QUARANTINE_SAMPLE_BYTES = 1024 * 1024


class BodyRefused(Exception):
    """The body broke a bound; ``kind`` is the quarantine's."""

    def __init__(self, message: str, kind: str) -> None:
        self.kind = kind
        super().__init__(message)


class Inflater:
    """Incremental gzip or deflate decoding that never produces more than
    :data:`DECODE_STEP` bytes at once."""

    def __init__(self, encoding: str) -> None:
        self.encoding = encoding
        # gzip: the gzip header; deflate: the zlib header, or raw deflate as some servers
        # send (decided by the first bytes, as httpx does).
        wbits = zlib.MAX_WBITS | 16 if encoding in ("gzip", "x-gzip") else zlib.MAX_WBITS
        self._inflate = zlib.decompressobj(wbits)
        self._undecided = encoding == "deflate"
        self._head = b""

    def decode(self, data: bytes) -> Iterator[bytes]:
        if self._undecided:
            self._head += data
            if len(self._head) < 2:
                return
            data, self._head, self._undecided = self._head, b"", False
            if not is_zlib_header(data[:2]):
                self._inflate = zlib.decompressobj(-zlib.MAX_WBITS)
        while not self._inflate.eof:
            piece = self._inflate.decompress(data, DECODE_STEP)
            if piece:
                yield piece
            data = self._inflate.unconsumed_tail
            if not data and len(piece) < DECODE_STEP:
                return  # input used up, no output pending

    def flush(self) -> Iterator[bytes]:
        if self._undecided and self._head:  # a one-byte body
            self._undecided = False
            yield from self.decode(self._head)
        yield from self.decode(b"")
        if not self._inflate.eof:
            raise zlib.error("the compressed body ends early")


def is_zlib_header(head: bytes) -> bool:
    """Whether two bytes start a zlib stream (RFC 1950: deflate, checksum of the pair)."""
    return head[0] & 0x0F == 8 and (head[0] << 8 | head[1]) % 31 == 0


class BodyReader:
    """Reads a streamed response's body into memory, at most ``limit`` decoded bytes, and
    raises :class:`BodyRefused` beyond: on the declared length, the bytes on the wire
    and the decoded bytes, each checked as they come."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._data = bytearray()

    @property
    def received(self) -> int:
        return len(self._data)

    def body(self) -> bytes:
        return bytes(self._data)

    def head(self, size: int = QUARANTINE_SAMPLE_BYTES) -> bytes:
        return bytes(self._data[:size])

    def partial(
        self, response: httpx.Response, received_at: int, context: dict[str, Any]
    ) -> Response:
        """What arrived of a body that broke a bound: its first part, for the quarantine."""
        return response_of(None, response, self.head(), received_at, None, context)

    def _too_large(self, what: str) -> BodyRefused:
        return BodyRefused(
            f"response larger than {self.limit} bytes ({what}; exchange.max_response_size)",
            "too_large",
        )

    async def read(self, response: httpx.Response) -> None:
        declared = response.headers.get("Content-Length", "")
        if declared.isdigit() and int(declared) > self.limit:
            raise self._too_large(f"Content-Length {declared[:30]}")
        try:
            content = response.content  # a response made in memory (httpx.MockTransport)
        except httpx.ResponseNotRead:
            pass
        else:
            self._add(content)
            return
        encodings = [
            e.strip().lower()
            for e in response.headers.get("Content-Encoding", "").split(",")
            if e.strip() and e.strip().lower() != "identity"
        ]
        if len(encodings) > 1 or not set(encodings) <= {"gzip", "x-gzip", "deflate"}:
            raise BodyRefused(
                f"unsupported Content-Encoding {snippet(', '.join(encodings).encode(), 60)} "
                "(the client asks for gzip or deflate)",
                "invalid_json",
            )
        inflater = Inflater(encodings[0]) if encodings else None
        on_wire = 0
        try:
            async for chunk in response.aiter_raw():
                on_wire += len(chunk)
                if on_wire > self.limit:
                    raise self._too_large(f"{on_wire} bytes on the wire so far")
                for piece in inflater.decode(chunk) if inflater else (chunk,):
                    self._add(piece)
            for piece in inflater.flush() if inflater else ():
                self._add(piece)
        except zlib.error as exc:
            raise BodyRefused(
                f"the {inflater.encoding if inflater else ''} body cannot be decoded: {exc}",
                "invalid_json",
            ) from None

    def _add(self, piece: bytes) -> None:
        room = self.limit - len(self._data)
        if len(piece) > room:
            self._data += piece[:room]
            raise self._too_large("decoded")
        self._data += piece
