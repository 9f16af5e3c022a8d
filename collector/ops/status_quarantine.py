"""The quarantine folder as ``jex-collector status`` counts it: payloads set aside in the
last hour, per endpoint and per dataset and market, from the file names (and the
``market`` field near the top of each file); no payload is parsed."""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from collector import datasets
from collector.collect.quarantine import _file_part as quarantine_name
from collector.exchange import endpoints
from collector.storage.files import QUARANTINE_DIR
from collector.storage.location import Archive

#: Named after :mod:`collector.ops.status`, whose part this is.
log = logging.getLogger("collector.ops.status")

#: Quarantined payloads are counted over this window.
QUARANTINE_WINDOW = dt.timedelta(hours=1)
#: How much of a quarantine file is read to find its ``market`` (its fourth key).
_QUARANTINE_HEAD_BYTES = 2048

#: Quarantine file name part of each endpoint -> the dataset its responses feed.
_ENDPOINT_DATASETS: dict[str, str] = {
    quarantine_name(endpoint.name): spec.name
    for spec in datasets.DATASETS.values()
    for endpoint in spec.all_endpoints
}
#: Endpoints that serve one market only, whose quarantine files name none.
_ENDPOINT_MARKETS = {quarantine_name(endpoints.OPTION_INFO.name): "option"}
_QUARANTINE_NAME = re.compile(r"^(?P<time>\d{9})-(?P<endpoint>.+)-[0-9a-f]+\.json$")
_QUARANTINE_MARKET = re.compile(rb'"market":\s*(?:null|"(?P<market>[a-z]+)")')


@dataclass
class QuarantineCount:
    last_hour: int = 0
    by_group: Counter[tuple[str, str]] = field(default_factory=Counter)  # (dataset, market)
    by_endpoint: Counter[str] = field(default_factory=Counter)
    not_attributed: int = 0  # no dataset or market can be told from the file


def count_quarantine(archive: str | Path | Archive, now: dt.datetime) -> QuarantineCount:
    """Quarantine files written in the hour before ``now``, listed per day folder through
    :meth:`Archive.list_names <collector.storage.location.Archive.list_names>`."""
    where = Archive.of(archive)
    counts = QuarantineCount()
    start = now - QUARANTINE_WINDOW
    days = {start.astimezone(dt.UTC).date(), now.astimezone(dt.UTC).date()}
    for day in sorted(days):
        folder = f"{QUARANTINE_DIR}/{day.isoformat()}"
        try:
            names = where.list_names(folder)
        except OSError as exc:
            log.warning("status: cannot list %s/%s: %s", where.uri, folder, exc)
            continue
        for name in names:
            match = _QUARANTINE_NAME.match(name)
            if match is None:
                continue  # not one of ours
            stamp = match["time"]
            with contextlib.suppress(ValueError):  # not a time of day: not one of ours
                written = dt.datetime.combine(
                    day,
                    dt.time(
                        int(stamp[:2]), int(stamp[2:4]), int(stamp[4:6]), int(stamp[6:]) * 1000
                    ),
                    tzinfo=dt.UTC,
                )
                if written < start:
                    continue
                counts.last_hour += 1
                endpoint = match["endpoint"]
                counts.by_endpoint[endpoint] += 1
                dataset = _ENDPOINT_DATASETS.get(endpoint)
                market = _ENDPOINT_MARKETS.get(endpoint) or _market_of(where, f"{folder}/{name}")
                if dataset is not None and market is None:
                    only = datasets.get(dataset).markets
                    market = only[0] if len(only) == 1 else None
                if dataset is None or market is None:
                    counts.not_attributed += 1
                else:
                    counts.by_group[(dataset, market)] += 1
    return counts


def _market_of(archive: Archive, relative: str) -> str | None:
    """The ``market`` field near the top of a quarantine file (its fourth key): only its
    first bytes are read (a ranged read on an object store)."""
    try:
        with archive.filesystem().open_input_stream(archive.fs_path(relative)) as source:
            head = bytes(source.read(_QUARANTINE_HEAD_BYTES))
    except OSError:
        return None
    match = _QUARANTINE_MARKET.search(head)
    market = match["market"].decode() if match and match["market"] else None
    return market if market in datasets.MARKETS else None
