"""Log output: plain text for people, JSON lines for log shippers; secrets never written.

:func:`setup` installs the one handler the command line uses (standard error).
``text`` is the classic line (UTC time, level, logger, message). ``json`` writes
one object per line::

    {"time": "2026-11-24T03:10:05.112+00:00", "level": "INFO", "logger": "collector.collect.jobs",
     "message": "job trades market=spot symbols=3 rows=18 ms=21", "job": "trades",
     "dataset": "trades", "market": "spot", "symbols": 3, "rows": 18, "duration_ms": 21,
     "errors": 0}

with each of :data:`FIELDS` that the record carries (call sites pass them with
``extra=``) and ``exc``, the traceback, for an exception. Both formats pass
through :class:`RedactingFormatter`, which replaces the API key and secret
wherever they would appear in the written line.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import sys
import time
from collections.abc import Iterable
from typing import Any, TextIO

#: Structured fields a record may carry (``log.info(..., extra={"rows": 3})``), in the
#: order they appear in a JSON line.
FIELDS = (
    "job",
    "dataset",
    "market",
    "symbol",
    "endpoint",
    "status",
    "kind",
    "symbols",
    "rows",
    "files",
    "duration_ms",
    "errors",
    "error",
)
FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"
REDACTED = "<redacted>"
#: Shorter "secrets" are not real keys, and replacing them would garble every line
#: (the quarantine's rule too).
MIN_SECRET_LENGTH = 8
#: Libraries whose INFO lines are per request; they log warnings and up only.
NOISY = ("httpx", "httpcore", "apscheduler", "uvicorn", "uvicorn.error")


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time (UTC ISO), level, logger, message, the
    :data:`FIELDS` present, and ``exc`` (and ``stack``) when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                entry[name] = value
        if record.exc_info and not record.exc_text:
            # Cached on the record, as logging.Formatter does, for other handlers.
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            entry["exc"] = record.exc_text
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        # ASCII only: control and bidi characters the exchange sent arrive escaped.
        return json.dumps(entry, ensure_ascii=True, default=str)


#: Characters a text log line never carries raw: C0 and C1 controls (ESC starts a
#: terminal sequence, CR rewrites the line, LF forges a new one) and the bidirectional
#: overrides that make text read backwards.
_UNSAFE = frozenset(
    [*range(0x00, 0x20), *range(0x7F, 0xA0), *range(0x202A, 0x202F), *range(0x2066, 0x206A)]
)


def escape_controls(text: str, *, keep_newlines: bool = False) -> str:
    """``text`` with every control character written as an escape (``\\x1b``,
    ``\\u202e``), so exchange-provided text cannot move the cursor, clear a terminal or
    forge a log line. ``keep_newlines``: newlines stay (a traceback's lines)."""
    if not any(ord(char) in _UNSAFE for char in text):
        return text
    out = []
    for char in text:
        code = ord(char)
        if code not in _UNSAFE or (keep_newlines and char == "\n"):
            out.append(char)
        elif code < 0x100:
            out.append(f"\\x{code:02x}")
        else:
            out.append(f"\\u{code:04x}")
    return "".join(out)


class SafeTextFormatter(logging.Formatter):
    """The text line with control characters escaped in the message (which may quote
    what the exchange sent) and in tracebacks (whose own newlines stay)."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        record.message = escape_controls(record.message)
        return super().formatMessage(record)

    def formatException(self, ei: Any) -> str:
        # Each traceback line starts with "| ": an exception message with a newline in
        # it (text the exchange sent) cannot start a line that looks like a record.
        text = escape_controls(super().formatException(ei), keep_newlines=True)
        return "\n".join(f"| {line}" for line in text.split("\n"))


def text_formatter() -> logging.Formatter:
    formatter = SafeTextFormatter(TEXT_FORMAT)
    formatter.converter = time.gmtime  # log times in UTC
    return formatter


class RedactingFormatter(logging.Formatter):
    """Wraps a formatter and replaces each secret in its output by ``<redacted>``.

    It works on the finished line rather than as a ``logging.Filter`` on the record: a
    filter runs before formatting, and would miss a secret in a traceback or in a
    field's JSON-escaped form. Secrets shorter than :data:`MIN_SECRET_LENGTH` are ignored.
    """

    def __init__(self, inner: logging.Formatter, secrets: Iterable[str | None] = ()) -> None:
        super().__init__()
        self.inner = inner
        forms: set[str] = set()
        for secret in secrets:
            if secret and len(secret) >= MIN_SECRET_LENGTH:
                # As written, and as JSON writes it inside a string (escaped quotes, ...).
                forms |= {
                    secret,
                    json.dumps(secret)[1:-1],
                    json.dumps(secret, ensure_ascii=False)[1:-1],
                }
        self._forms = sorted(forms, key=len, reverse=True)

    def format(self, record: logging.LogRecord) -> str:
        text = self.inner.format(record)
        for form in self._forms:
            text = text.replace(form, REDACTED)
        return text


def setup(
    level: str = "info",
    fmt: str = "text",
    *,
    secrets: Iterable[str | None] = (),
    stream: TextIO | None = None,
) -> logging.Handler:
    """Send every log record of ``level`` and up to ``stream`` (standard error) as ``fmt``
    (``text`` or ``json``), with ``secrets`` redacted; replaces the root logger's handlers.

    For the command line, once at start-up; returns the handler.
    """
    if fmt not in FORMATS:
        raise ValueError(f"log format {fmt!r}: expected one of {', '.join(FORMATS)}")
    handler = logging.StreamHandler(stream or sys.stderr)
    inner = JsonFormatter() if fmt == "json" else text_formatter()
    handler.setFormatter(RedactingFormatter(inner, secrets))
    root = logging.getLogger()
    for old in root.handlers[:]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(getattr(logging, level.upper()))
    for noisy in NOISY:
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
    # Skipped and missed runs are reported by the daemon in plainer words, once a minute.
    logging.getLogger("apscheduler.scheduler").setLevel(logging.ERROR)
    return handler
