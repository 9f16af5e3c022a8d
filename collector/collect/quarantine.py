"""Quarantine: responses the collector could not read, kept as files for a human to inspect.

A payload that is not JSON, not of the documented shape, or that has records a
parser set aside, is written to::

    <archive>/_quarantine/<YYYY-MM-DD>/<HHMMSSmmm>-<endpoint>-<random>.json

(UTC date and time of writing) as one JSON object: ``kind`` (``invalid_json``,
``wrong_shape``, ``rejected_records``; from the client also ``too_large`` and
``deadline_exceeded``, with the first part of what arrived), ``endpoint``, ``market``,
``params``, ``status``, the response ``headers``, the raw ``body`` (text, or base64 when
it is not UTF-8), ``error`` or the ``rejected`` records with their reasons, ``time``
(ISO) and ``time_ms``, and ``received_at`` (exchange time of the response).

The body is cut at ``max_body_bytes`` characters (bytes when base64), and each file is
at most ``max_file_bytes`` as written, whatever JSON escaping makes of the body (a NUL
takes six bytes there): when the whole does not fit, fewer rejected records are kept,
then less of the body. A rejected record takes at most :data:`MAX_RECORD_CHARS`, a
header, parameter or the error at most :data:`MAX_FIELD_CHARS`; what is cut says so
(``body_truncated``, ``rejected_kept``).

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
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from collector.exchange.client import Response
from collector.ops.metrics import Metrics
from collector.storage.files import QUARANTINE_DIR, TEMP_PREFIX, TEMP_SUFFIX
from collector.storage.location import Archive
from collector.units import DAY_MS, HOUR_MS, wall_clock_ms

log = logging.getLogger(__name__)

DIR_NAME = QUARANTINE_DIR
REDACTED = "<redacted>"
#: Shorter "secrets" are not real keys, and replacing them would garble every file.
MIN_SECRET_LENGTH = 8
#: Rejected records stored per file (the count of all of them is stored too).
MAX_RECORDS = 100
#: A rejected record longer than this as JSON is stored as its JSON text, cut.
MAX_RECORD_CHARS = 16 * 1024
#: Header values, parameters and the error are cut at this many characters.
MAX_FIELD_CHARS = 4096
#: Bytes the headers, and the parameters, take at most in a file (as JSON).
MAX_MAPPING_BYTES = 64 * 1024
#: A temporary file this old (seconds) is a crash's leftover, not another collector's
#: write under way (a write takes milliseconds).
ORPHAN_AGE_S = 600.0


class Quarantine:
    """Writes unreadable payloads under ``<archive>/_quarantine``. Thread-unsafe; one per
    process, used from the event loop.

    Use it as the client's hook (``JexClient(quarantine=q)``: invalid JSON, bodies too
    large or too slow) and from the jobs (:meth:`wrong_shape`, :meth:`rejected`).
    """

    def __init__(
        self,
        data_dir: str | Path | Archive,
        *,
        redact: Iterable[str | None] = (),
        clock_ms: Callable[[], int] = wall_clock_ms,
        max_files_per_hour: int = 60,
        max_body_bytes: int = 512 * 1024,
        max_file_bytes: int = 1024 * 1024,
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
        self.max_file_bytes = max(max_file_bytes, 4096)
        self.max_bytes_per_day = max_bytes_per_day
        self.written: Counter[tuple[str, str]] = Counter()  # (endpoint, kind) -> files
        self.dropped: Counter[tuple[str, str]] = Counter()
        self._hour_files: Counter[tuple[str, int]] = Counter()  # (endpoint, hour) -> files
        self._day_bytes: Counter[int] = Counter()  # day -> bytes
        self._drop_logged: set[tuple[str, int]] = set()
        self.metrics = metrics or Metrics()

    # -- what the client and the jobs call -------------------------------------------------

    def __call__(self, response: Response, error: str, *, kind: str = "invalid_json") -> None:
        """The client's hook (:class:`collector.exchange.client.QuarantineHook`)."""
        self.add(response, kind=kind, error=error)

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
        hour, day = now // HOUR_MS, now // DAY_MS
        if self._hour_files[(endpoint, hour)] >= self.max_files_per_hour:
            self._drop(endpoint, kind, hour, f"{self.max_files_per_hour} files this hour")
            return None
        if self._day_bytes[day] >= self.max_bytes_per_day:
            self._drop(endpoint, kind, hour, f"{self.max_bytes_per_day} bytes today")
            return None
        try:
            data = self._document(response, kind, error, rejected, now)
            relative = self._write(now, endpoint, data)
        except Exception as exc:  # never fail the caller over a diagnostic file
            log.warning("could not write a quarantine file for %s: %s", endpoint, exc)
            return None
        self._prune(hour)
        self._hour_files[(endpoint, hour)] += 1
        self._day_bytes[day] += len(data)
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
        for path in (self.archive.path / DIR_NAME).glob(f"*/{TEMP_PREFIX}*{TEMP_SUFFIX}"):
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
    ) -> bytes:
        """The file's bytes, at most :attr:`max_file_bytes`: when the whole does not fit,
        fewer rejected records are kept, then less of the body."""
        cap = self.max_body_bytes
        body = self._scrub_bytes(response.body)
        try:
            text: str | None = body.decode("utf-8")  # whole: a cut could split a character
        except UnicodeDecodeError:
            text = None
        if text is not None:
            text, cut = text[:cap], len(text) > cap
        else:
            body, cut = body[:cap], len(body) > cap
        document: dict[str, Any] = {
            "kind": kind,
            "endpoint": response.endpoint,
            "market": response.market,
            "params": _bounded_mapping(response.params),
            "status": response.status,
            "headers": _bounded_mapping(response.headers),
            "time": dt.datetime.fromtimestamp(now / 1000, tz=dt.UTC).isoformat(
                timespec="milliseconds"
            ),
            "time_ms": now,
            "received_at": response.received_at,
            "error": _cut(error),
            "body_encoding": "utf-8" if text is not None else "base64",
            "body_bytes": len(response.body),
            "body_truncated": False,
            "body": "",
        }
        records = [
            {"record": _bounded_record(record), "reason": _cut(reason)}
            for record, reason in (rejected or [])[:MAX_RECORDS]
        ]
        # Bytes the body may take as written; None: all of it (within max_body_bytes).
        body_room: int | None = None
        keep, squeezed = len(records), False
        while True:
            if text is not None:
                document["body"], shortened = _cut_escaped(text, body_room)
            else:
                room = len(body) if body_room is None else body_room // 4 * 3
                document["body"] = base64.b64encode(body[:room]).decode("ascii")
                shortened = room < len(body)
            document["body_truncated"] = cut or shortened
            if rejected is not None:
                document["rejected_count"] = len(rejected)
                document["rejected_kept"] = keep
                document["rejected"] = records[:keep]
            dumped = json.dumps(self._scrub(document), ensure_ascii=False, indent=1, default=repr)
            data = self._scrub_text(dumped).encode("utf-8")
            excess = len(data) - self.max_file_bytes
            if excess <= 0:
                return data
            if keep > 0:
                keep //= 2
            elif body_room is None or body_room > 0:
                body_room = max(0, _escaped_size(document["body"]) - excess)
            elif not squeezed:  # the rest alone is too large: keep what says what happened
                squeezed = True
                document["headers"] = {"<cut>": f"{len(response.headers)} headers"}
                document["params"] = {"<cut>": f"{len(response.params)} parameters"}
                document["error"] = _cut(error, 1024)
            else:
                raise ValueError(f"cannot fit a file in {self.max_file_bytes} bytes")

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


def _cut(value: object, size: int = MAX_FIELD_CHARS) -> str:
    text = value if isinstance(value, str) else str(value)
    return text if len(text) <= size else f"{text[:size]}... (cut; {len(text)} characters)"


def _bounded_mapping(mapping: Mapping[str, str], room: int = MAX_MAPPING_BYTES) -> dict[str, str]:
    """``mapping`` (headers, parameters) with values cut at :data:`MAX_FIELD_CHARS`, as
    many entries as take ``room`` bytes as JSON; the rest counted under ``<cut>``."""
    kept: dict[str, str] = {}
    for index, (name, value) in enumerate(mapping.items()):
        entry = (_cut(name, 256), _cut(value))
        room -= _escaped_size(entry[0]) + _escaped_size(entry[1]) + 4
        if room < 0:
            kept["<cut>"] = f"{len(mapping) - index} more"
            break
        kept[entry[0]] = entry[1]
    return kept


def _bounded_record(record: Any) -> Any:
    """``record`` as it was, or its JSON text cut at :data:`MAX_RECORD_CHARS`."""
    try:
        as_json = json.dumps(record, ensure_ascii=False, default=repr)
    except (ValueError, RecursionError):  # a cycle, or nested beyond the recursion limit
        return _cut(repr(record)[: MAX_RECORD_CHARS + 1], MAX_RECORD_CHARS)
    return record if len(as_json) <= MAX_RECORD_CHARS else _cut(as_json, MAX_RECORD_CHARS)


def _escaped_size(text: str) -> int:
    return len(json.dumps(text, ensure_ascii=False).encode("utf-8"))


def _cut_escaped(text: str, room: int | None) -> tuple[str, bool]:
    """The longest start of ``text`` that takes at most ``room`` bytes as a JSON string
    (None: no bound), and whether it is cut."""
    if room is None or _escaped_size(text) <= room:
        return text, False
    low, high = 0, min(len(text), room)  # a character takes at least one byte
    while low < high:
        middle = (low + high + 1) // 2
        if _escaped_size(text[:middle]) <= room:
            low = middle
        else:
            high = middle - 1
    return text[:low], True


def _file_part(name: str) -> str:
    """An endpoint name as part of a file name (``ticker/24hr`` -> ``ticker-24hr``)."""
    return re.sub(r"[^A-Za-z0-9_.]+", "-", name).strip("-")[:40] or "unknown"
