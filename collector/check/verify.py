"""Checking the archive: rows, time span, duplicate keys and holes, per dataset, market, symbol.

Holes are counted only where the exchange guarantees that something exists
(``shared/jex-api.md``), never from ids it does not promise to number consecutively:

* trades (with ids): every id between the first and the last archived one (trade ids
  are the only ids documented as consecutive per symbol);
* funding_rate: one funding event per funding interval. The interval is the largest
  ``funding_interval_ms`` archived in ``contract_info`` for the symbol (the exchange's
  ``fundingInterval``), or, without one, the shortest spacing of the archived events.
  A hole is a spacing longer than :data:`FUNDING_GAP_INTERVALS` intervals; its missing
  events are the spacing in intervals, less one. Funding ids are not used: an exchange
  may number them in one sequence shared by every symbol, or step by more than one;
* protection_fund: no holes are claimed. The exchange documents neither a spacing nor
  an id sequence for fund records, only their order, which the collector's paging
  (``start`` = the last id it has) relies on;
* klines: every open time between the first and the last archived one, per interval
  (the exchange has a kline for every interval, with zero volume when nothing traded).

Duplicates are rows sharing the dataset's key. Snapshot datasets (depth, tickers, ...)
have no holes to count, only duplicates. Read-only: nothing is changed. The coverage
report (:mod:`collector.report.coverage`) uses the same rules.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from collector import datasets
from collector.config import KLINE_INTERVALS
from collector.read import catalog

#: Gap ranges listed per group (all are counted).
MAX_RANGES = 5


@dataclass
class Finding:
    dataset: str
    market: str
    symbol: str
    interval: str | None
    rows: int
    first: str | None
    last: str | None
    duplicates: int
    holes: int
    hole_ranges: list[tuple[int, int]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.duplicates == 0 and self.holes == 0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


# SQL text below is built from dataset and column names of the registry only; the
# interval step comes from a fixed table, and symbols never enter the text.

#: A spacing of funding events longer than this many funding intervals is a hole (a
#: late event is no hole; one missing event makes two intervals).
FUNDING_GAP_INTERVALS = 1.5


def funding_intervals_sql() -> str:
    """``market, symbol, interval_ms`` of every funding_rate series: the largest interval
    ``contract_info`` archived for it, else the shortest spacing of its events."""
    return """
        WITH events AS (
            SELECT DISTINCT market, symbol, epoch_ms(time) AS t FROM funding_rate
        ), steps AS (
            SELECT market, symbol, t,
                lead(t) OVER (PARTITION BY market, symbol ORDER BY t) AS next_t
            FROM events
        ), declared AS (
            SELECT market, symbol, max(funding_interval_ms) AS interval_ms
            FROM contract_info WHERE funding_interval_ms > 0 GROUP BY ALL
        ), observed AS (
            SELECT market, symbol, min(next_t - t) AS interval_ms
            FROM steps WHERE next_t > t GROUP BY ALL
        )
        SELECT o.market, o.symbol, coalesce(d.interval_ms, o.interval_ms) AS interval_ms
        FROM observed AS o LEFT JOIN declared AS d USING (market, symbol)
    """


def _id_keyed(connection: Any, dataset: str, column: str) -> list[Finding]:
    time_column = datasets.get(dataset).time_column
    rows = connection.execute(
        f"SELECT market, symbol, count(*), count(DISTINCT {column}), "  # noqa: S608
        f"min({column}), max({column}), min({time_column}), max({time_column}) "
        f"FROM {dataset} WHERE {column} IS NOT NULL GROUP BY ALL ORDER BY ALL"
    ).fetchall()
    gaps = _gaps(connection, dataset, column, 1)
    findings = []
    for market, symbol, count, distinct, low, high, first, last in rows:
        ranges = gaps.get((market, symbol), [])
        findings.append(
            Finding(
                dataset,
                market,
                symbol,
                None,
                count,
                _iso(first),
                _iso(last),
                duplicates=count - distinct,
                holes=(high - low + 1) - distinct,
                hole_ranges=ranges[:MAX_RANGES],
            )
        )
    without_ids = connection.execute(
        f"SELECT market, symbol, count(*), min({time_column}), max({time_column}) "  # noqa: S608
        f"FROM {dataset} WHERE {column} IS NULL GROUP BY ALL ORDER BY ALL"
    ).fetchall()
    for market, symbol, count, first, last in without_ids:
        # Recent trades carry no id: nothing to count holes or duplicates against.
        findings.append(
            Finding(dataset, market, symbol, "no ids", count, _iso(first), _iso(last), 0, 0)
        )
    return findings


def _not_consecutive(connection: Any, dataset: str, column: str) -> list[Finding]:
    """funding_rate and protection_fund: duplicate ids counted, holes by time (funding)
    or none (protection fund), see the module."""
    time_column = datasets.get(dataset).time_column
    rows = connection.execute(
        f"SELECT market, symbol, count(*), count(DISTINCT {column}), "  # noqa: S608
        f"min({time_column}), max({time_column}) FROM {dataset} GROUP BY ALL ORDER BY ALL"
    ).fetchall()
    holes: dict[tuple[str, str], list[tuple[int, int, int]]] = {}
    if datasets.get(dataset).continuity == "funding_interval":
        for market, symbol, low, high, missing in connection.execute(
            f"WITH rule AS ({funding_intervals_sql()}), "  # noqa: S608 (fixed SQL text)
            "events AS (SELECT DISTINCT market, symbol, epoch_ms(time) AS t FROM funding_rate), "
            "steps AS (SELECT market, symbol, t, lead(t) OVER (PARTITION BY market, symbol "
            "ORDER BY t) AS next_t FROM events) "
            "SELECT s.market, s.symbol, s.t + r.interval_ms, s.next_t - r.interval_ms, "
            "  greatest(1, round((s.next_t - s.t) / r.interval_ms) - 1) "
            "FROM steps AS s JOIN rule AS r USING (market, symbol) "
            "WHERE s.next_t - s.t > $gap * r.interval_ms ORDER BY ALL",
            {"gap": FUNDING_GAP_INTERVALS},
        ).fetchall():
            holes.setdefault((market, symbol), []).append((int(low), int(high), int(missing)))
    findings = []
    for market, symbol, count, distinct, first, last in rows:
        found = holes.get((market, symbol), [])
        findings.append(
            Finding(
                dataset,
                market,
                symbol,
                None,
                count,
                _iso(first),
                _iso(last),
                duplicates=count - distinct,
                holes=sum(missing for _, _, missing in found),
                hole_ranges=[(low, high) for low, high, _ in found[:MAX_RANGES]],
            )
        )
    return findings


def _gaps(
    connection: Any, dataset: str, value_sql: str, step: int, interval: str | None = None
) -> dict[tuple[Any, ...], list[tuple[int, int]]]:
    """Missing ranges (first, last) per market and symbol, where consecutive values of
    ``value_sql`` should differ by ``step``."""
    where = "interval = $interval" if interval is not None else f"{value_sql} IS NOT NULL"
    params: dict[str, Any] = {"step": step}
    if interval is not None:
        params["interval"] = interval
    rows = connection.execute(
        "SELECT market, symbol, value + $step, next_value - $step FROM ("  # noqa: S608
        "  SELECT market, symbol, value,"
        "    lead(value) OVER (PARTITION BY market, symbol ORDER BY value) AS next_value"
        f"  FROM (SELECT DISTINCT market, symbol, {value_sql} AS value FROM {dataset}"
        f"        WHERE {where})"
        ") WHERE next_value > value + $step ORDER BY ALL",
        params,
    ).fetchall()
    found: dict[tuple[Any, ...], list[tuple[int, int]]] = {}
    for market, symbol, first, last in rows:
        found.setdefault((market, symbol), []).append((int(first), int(last)))
    return found


def _klines(connection: Any) -> list[Finding]:
    findings = []
    for interval, step in KLINE_INTERVALS.items():
        rows = connection.execute(
            "SELECT market, symbol, count(*), count(DISTINCT open_time), "
            "epoch_ms(min(open_time)), epoch_ms(max(open_time)), min(open_time), "
            "max(open_time) FROM klines WHERE interval = $interval GROUP BY ALL ORDER BY ALL",
            {"interval": interval},
        ).fetchall()
        if not rows:
            continue
        gaps = _gaps(connection, "klines", "epoch_ms(open_time)", step, interval)
        for market, symbol, count, distinct, low, high, first, last in rows:
            expected = (high - low) // step + 1
            findings.append(
                Finding(
                    "klines",
                    market,
                    symbol,
                    interval,
                    count,
                    _iso(first),
                    _iso(last),
                    duplicates=count - distinct,
                    holes=expected - distinct,
                    hole_ranges=gaps.get((market, symbol), [])[:MAX_RANGES],
                )
            )
    return findings


def _snapshots(connection: Any, dataset: str) -> list[Finding]:
    spec = datasets.get(dataset)
    key = ", ".join(spec.key)
    rows = connection.execute(
        f"SELECT market, symbol, count(*), count(*) - count(DISTINCT ({key})), "  # noqa: S608
        f"min({spec.time_column}), max({spec.time_column}) FROM {dataset} "
        "GROUP BY ALL ORDER BY ALL"
    ).fetchall()
    return [
        Finding(dataset, market, symbol, None, count, _iso(first), _iso(last), dups, 0)
        for market, symbol, count, dups, first, last in rows
    ]


def _iso(value: Any) -> str | None:
    return None if value is None else value.isoformat()


def verify(data_dir: str | Path) -> list[Finding]:
    """Every dataset's findings, in registry order. Each query reads one version of each
    table, so a compaction committing meanwhile changes no count."""

    def read() -> list[Finding]:
        findings: list[Finding] = []
        with catalog.connect(data_dir, derived_views=False) as connection:
            for name, spec in datasets.DATASETS.items():
                # The registry's continuity rule says what a hole is; the key's last
                # column is the record's id.
                if spec.continuity == "consecutive_ids":
                    findings += _id_keyed(connection, name, spec.key[-1])
                elif spec.continuity in ("funding_interval", "unique"):
                    findings += _not_consecutive(connection, name, spec.key[-1])
                elif spec.continuity == "open_times":
                    findings += _klines(connection)
                else:
                    findings += _snapshots(connection, name)
        return findings

    # A damaged file is left out (and named by catalog.damaged_files), not the end of it.
    return catalog.readable(data_dir, datasets.DATASETS, read)
