"""Quarantine: responses the collector could not read, kept as files for a human to inspect.

A payload that is not JSON, not of the documented shape, or that has records a
parser set aside, is written to::

    <archive>/_quarantine/<YYYY-MM-DD>/<HHMMSSmmm>-<endpoint>-<random>.json

(UTC date and time of writing) as one JSON object: ``kind`` (``invalid_json``,
``wrong_shape``, ``rejected_records``), ``endpoint``, ``market``, ``params``,
``status``, the response ``headers``, the raw ``body`` (text, or base64 when it is
not UTF-8; cut at ``max_body_bytes`` bytes or characters, saying so), ``error`` or the ``rejected``
records with their reasons, ``time`` (ISO) and ``time_ms``, and ``received_at``
(exchange time of the response).

It never holds a secret: request headers (where the API key travels) are not
stored, and any occurrence of the strings in ``redact`` (the key and secret) in
what is stored is replaced by ``<redacted>``. It is bounded: at most
``max_files_per_hour`` files per endpoint and hour and ``max_bytes_per_day``
bytes per UTC day (per process); what is dropped is counted and logged once per
endpoint and hour. Files are written through
:class:`~collector.storage.location.Archive`, so the archive may be a local folder or an
object store: each write is atomic (on a disk a temporary name, then a rename; on an
object store one PUT) and never fails the caller: an error is logged and the payload
lost. Several collectors (shards) may write into one quarantine: the random part keeps
their names apart.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import logging
import re
import secrets
import time
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from collector.exchange.client import Response, wall_clock_ms
from collector.metrics import Metrics
from collector.storage.location import Archive

log = logging.getLogger(__name__)

DIR_NAME = "_quarantine"
REDACTED = "<redacted>"
#: Shorter "secrets" are not real keys, and replacing them would garble every file.
MIN_SECRET_LENGTH = 8
#: Rejected records stored per file (the count of all of them is stored too).
MAX_RECORDS = 100
#: A temporary file this old (seconds) is a crash's leftover, not another collector's
#: write under way (a write takes milliseconds).
ORPHAN_AGE_S = 600.0
_TEMP_PREFIX = "."
_TEMP_SUFFIX = ".tmp"


class Quarantine:
    """Writes unreadable payloads under ``<archive>/_quarantine``. Thread-unsafe; one per
    process, used from the event loop.

    Use it as the client's hook (``JexClient(quarantine=q)``: invalid JSON) and from the
    jobs (:meth:`wrong_shape`, :meth:`rejected`).
    """

    def __init__(
        self,
        data_dir: str | Path | Archive,
        *,
        redact: Iterable[str | None] = (),
        clock_ms: Callable[[], int] = wall_clock_ms,
        max_files_per_hour: int = 60,
        max_body_bytes: int = 512 * 1024,
        max_bytes_per_day: int = 256 * 1024 * 1024,
        metrics: Metrics | None = None,
    ) -> None:
        """``data_dir``: the archive, a local folder or ``s3://bucket/prefix``."""
        self.archive = Archive.of(data_dir)
        self._secrets = sorted(
            {s for s in redact if s and len(s) >= MIN_SECRET_LENGTH}, key=len, reverse=True
        )
        self._clock_ms = clock_ms
        self.max_files_per_hour = max_files_per_hour
        self.max_body_bytes = max_body_bytes
        self.max_bytes_per_day = max_bytes_per_day
        self.written: Counter[tuple[str, str]] = Counter()  # (endpoint, kind) -> files
        self.dropped: Counter[tuple[str, str]] = Counter()
        self._hour_files: Counter[tuple[str, int]] = Counter()  # (endpoint, hour) -> files
        self._day_bytes: Counter[int] = Counter()  # day -> bytes
        self._drop_logged: set[tuple[str, int]] = set()
        self.metrics = metrics or Metrics()

    # -- what the client and the jobs call -------------------------------------------------

    def __call__(self, response: Response, error: str) -> None:
        """The client's hook: ``response`` is not valid JSON."""
        self.add(response, kind="invalid_json", error=error)

    def wrong_shape(self, response: Response, error: str) -> None:
        self.add(response, kind="wrong_shape", error=error)

    def rejected(self, response: Response, rejected: list[tuple[Any, str]]) -> None:
        self.add(response, kind="rejected_records", rejected=rejected)

    def add(
        self,
        response: Response,
        *,
        kind: str,
        error: str = "",
        rejected: list[tuple[Any, str]] | None = None,
    ) -> str | None:
        """Write one quarantine file; return where, relative to the archive
        (``_quarantine/<day>/<name>.json``), or None if dropped or failed."""
        endpoint = _file_part(response.endpoint or "unknown")
        now = self._clock_ms()
        hour, day = now // 3_600_000, now // 86_400_000
        if self._hour_files[(endpoint, hour)] >= self.max_files_per_hour:
            self._drop(endpoint, kind, hour, f"{self.max_files_per_hour} files this hour")
            return None
        if self._day_bytes[day] >= self.max_bytes_per_day:
            self._drop(endpoint, kind, hour, f"{self.max_bytes_per_day} bytes today")
            return None
        try:
            text = self._document(response, kind, error, rejected, now)
            relative = self._write(now, endpoint, text.encode("utf-8"))
        except Exception as exc:  # never fail the caller over a diagnostic file
            log.warning("could not write a quarantine file for %s: %s", endpoint, exc)
            return None
        self._prune(hour)
        self._hour_files[(endpoint, hour)] += 1
        self._day_bytes[day] += len(text)
        self.written[(endpoint, kind)] += 1
        self.metrics.quarantined(endpoint, kind)
        log.info(
            "quarantined a %s payload from %s: %s",
            kind,
            endpoint,
            f"{self.archive.uri}/{relative}",
            extra={
                "endpoint": endpoint,
                "market": response.market,
                "symbol": response.params.get("symbol"),
                "kind": kind,
                "error": self._scrub_text(error) or None,
            },
        )
        return relative

    def remove_orphans(self, *, now: float | None = None) -> int:
        """Delete temporary files a crash left behind (at least :data:`ORPHAN_AGE_S` old,
        by ``now``, epoch seconds, default the wall clock); return how many.

        Only a local archive has any: an object store's write is one PUT.
        """
        if self.archive.remote:
            return 0
        cutoff = (time.time() if now is None else now) - ORPHAN_AGE_S
        removed = 0
        for path in (self.archive.path / DIR_NAME).glob(f"*/{_TEMP_PREFIX}*{_TEMP_SUFFIX}"):
            try:
                if path.stat().st_mtime > cutoff:
                    continue  # another collector's write, under way
                path.unlink()
                removed += 1
            except FileNotFoundError:
                continue
            except OSError as exc:
                log.warning("could not remove %s: %s", path, exc)
        return removed

    # -- the file ----------------------------------------------------------------------------

    def _document(
        self,
        response: Response,
        kind: str,
        error: str,
        rejected: list[tuple[Any, str]] | None,
        now: int,
    ) -> str:
        body = self._scrub_bytes(response.body)
        cap = self.max_body_bytes
        try:
            text = body.decode("utf-8")  # the whole body: a cut could split a character
            body_text, encoding, truncated = text[:cap], "utf-8", len(text) > cap
        except UnicodeDecodeError:
            body_text, encoding = base64.b64encode(body[:cap]).decode("ascii"), "base64"
            truncated = len(body) > cap
        document: dict[str, Any] = {
            "kind": kind,
            "endpoint": response.endpoint,
            "market": response.market,
            "params": response.params,
            "status": response.status,
            "headers": response.headers,
            "time": dt.datetime.fromtimestamp(now / 1000, tz=dt.UTC).isoformat(
                timespec="milliseconds"
            ),
            "time_ms": now,
            "received_at": response.received_at,
            "error": error,
            "body_encoding": encoding,
            "body_bytes": len(response.body),
            "body_truncated": truncated,
            "body": body_text,
        }
        if rejected is not None:
            document["rejected_count"] = len(rejected)
            document["rejected"] = [
                {"record": record, "reason": reason} for record, reason in rejected[:MAX_RECORDS]
            ]
        text = json.dumps(self._scrub(document), ensure_ascii=False, indent=1, default=repr)
        return self._scrub_text(text)

    def _write(self, now: int, endpoint: str, data: bytes) -> str:
        stamp = dt.datetime.fromtimestamp(now / 1000, tz=dt.UTC)
        name = f"{stamp.strftime('%H%M%S')}{now % 1000:03d}-{endpoint}-{secrets.token_hex(3)}.json"
        relative = f"{DIR_NAME}/{stamp.strftime('%Y-%m-%d')}/{name}"
        self.archive.write_bytes(relative, data)
        return relative

    # -- bounds ------------------------------------------------------------------------------

    def _drop(self, endpoint: str, kind: str, hour: int, reason: str) -> None:
        self.dropped[(endpoint, kind)] += 1
        self.metrics.quarantine_dropped(endpoint, kind)
        if (endpoint, hour) not in self._drop_logged:
            self._drop_logged.add((endpoint, hour))
            log.warning(
                "quarantine full (%s): bad payloads from %s are counted, not kept, until the "
                "hour ends",
                reason,
                endpoint,
            )

    def _prune(self, hour: int) -> None:
        for key in [k for k in self._hour_files if k[1] < hour]:
            del self._hour_files[key]
        self._drop_logged = {k for k in self._drop_logged if k[1] >= hour}

    # -- secrets -----------------------------------------------------------------------------

    def _scrub_text(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, REDACTED)
        return text

    def _scrub_bytes(self, data: bytes) -> bytes:
        for secret in self._secrets:
            data = data.replace(secret.encode("utf-8"), REDACTED.encode("ascii"))
        return data

    def _scrub(self, value: Any) -> Any:
        """``value`` with every string (keys too) scrubbed, before JSON escaping could hide
        a secret from the final textual pass."""
        if isinstance(value, str):
            return self._scrub_text(value)
        if isinstance(value, dict):
            return {self._scrub(k): self._scrub(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self._scrub(item) for item in value]
        return value


def _file_part(name: str) -> str:
    """An endpoint name as part of a file name (``ticker/24hr`` -> ``ticker-24hr``)."""
    return re.sub(r"[^A-Za-z0-9_.]+", "-", name).strip("-")[:40] or "unknown"
