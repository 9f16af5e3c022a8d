"""What a dataset entry is: its columns and every fact the rest of the code derives from
it (see :class:`Dataset`); the entries themselves are in :mod:`collector.datasets`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import pyarrow as pa

from collector.exchange.endpoints import Endpoint

TIMESTAMP = pa.timestamp("ms", tz="UTC")
F64 = pa.float64()
I64 = pa.int64()
STR = pa.string()
BOOL = pa.bool_()


@dataclass(frozen=True)
class Column:
    name: str
    type: pa.DataType
    doc: str
    nullable: bool = False


#: How a dataset is collected. ``snapshot``: what the exchange shows now, polled (a
#: snapshot missed is lost); ``id_paged`` and ``time_paged``: a series paged forward
#: from a cursor (nothing missed is lost); ``listing``: the instrument lists.
Kind = Literal["snapshot", "id_paged", "time_paged", "listing"]
#: How a round's requests are made. ``per_symbol``: one request per symbol (times the
#: intervals for klines); ``all_symbols_if_cheaper``: the no-symbol form when it costs
#: no more weight than one request per symbol; ``per_round``: the ``endpoints`` once.
RequestForm = Literal["per_symbol", "all_symbols_if_cheaper", "per_round"]
#: What the exchange guarantees about a series, which ``verify`` and the coverage
#: report check: ``consecutive_ids`` (a missing id is a hole), ``open_times`` (one row
#: at every open time of the interval), ``funding_interval`` (one event per funding
#: interval), ``unique`` (only duplicates are checked), ``snapshot`` (the job's interval).
Continuity = Literal["consecutive_ids", "open_times", "funding_interval", "unique", "snapshot"]
#: The disk model's rows per day: ``symbol`` one per symbol and poll, ``levels`` one per
#: side and level of each symbol and poll, ``intervals`` one per kline, ``events``
#: :attr:`Dataset.events_per_day` per symbol, ``trades`` the exchange's trade counts.
RowModel = Literal["symbol", "levels", "intervals", "events", "trades"]


@dataclass(frozen=True)
class RowBytes:
    """One dataset's measured bytes: per row and per file, flushed and compacted."""

    flush_row: float
    flush_file: int
    compacted_row: float
    compacted_file: int


@dataclass(frozen=True)
class CursorRule:
    """Where a paged series continues from: the largest ``column`` of each ``group``."""

    column: str
    group: tuple[str, ...]
    #: The payload field holding the cursor's value (read from records set aside).
    field: str = ""


@dataclass(frozen=True)
class Dataset:
    """A dataset, and every fact the rest of the code derives from it: one table, one
    DuckDB view, one loader, one job; its requests and their cost for the plan, its
    disk model, its cursor, and what ``verify`` and the coverage report check."""

    name: str
    doc: str
    markets: tuple[str, ...]
    columns: tuple[Column, ...]
    key: tuple[str, ...]
    time_column: str
    kind: Kind = "snapshot"
    #: What a round requests (with an API key, for datasets that need one); further
    #: endpoints here are asked once a round too (``per_round``).
    endpoints: tuple[Endpoint, ...] = ()
    #: The endpoint used instead when no API key is set (trades: the recent trades).
    keyless_endpoint: Endpoint | None = None
    request: RequestForm = "per_symbol"
    #: Asked once per symbol and kline interval.
    per_interval: bool = False
    #: Records a page holds at most (paged datasets).
    page_size: int = 0
    cursor: CursorRule | None = None
    continuity: Continuity = "snapshot"
    #: What one record is called in reports: ``"trades"``, ``"funding events"``.
    unit: str = "snapshots"
    rows: RowModel = "symbol"
    #: Records per symbol and day the exchange writes on its own clock (``events``).
    events_per_day: int = 0
    #: Bytes per row and per file, flushed (zstd 3) and compacted (zstd 9/19), for the disk plan.
    #: Measured on 2026-12-06 on the Delta tables (pyarrow 26.0.1, deltalake 1.6.6) with
    #:     .venv/bin/python bench/make_archive.py --days 1 --scale 1 --out /tmp/day
    #:     .venv/bin/python bench/disk.py --day-archive /tmp/day --minutes 30 --warmup 300 --seed 1
    #: i.e. the shipped schedules.yaml against the simulator's 13 instruments for 30 minutes
    #: (flushes every 30 s), compacted trades, depth and klines from whole simulated days.
    #: Re-measure after changing collector/storage/parquet_format.py or the flush interval's
    #: default; tests/test_disk.py checks these against a small archive within a factor of 2.
    bytes: RowBytes = RowBytes(32.0, 2000, 32.0, 2000)

    @property
    def paging(self) -> bool:
        """Complete by paging (or listing) whatever its interval: the plan stretches
        it last, history requests yield the budget to snapshots."""
        return self.kind != "snapshot"

    @property
    def needs_api_key(self) -> bool:
        """Collected only with ``JEX_API_KEY``: every endpoint is MARKET_DATA."""
        return (
            bool(self.endpoints)
            and self.keyless_endpoint is None
            and all(e.security == "MARKET_DATA" for e in self.endpoints)
        )

    @property
    def id_column(self) -> str | None:
        """The id column whose values ``verify`` checks (consecutive or unique)."""
        if self.cursor is not None and self.kind == "id_paged":
            return self.cursor.column
        return None

    @property
    def parser(self) -> str:
        """The name of its parser in :mod:`collector.exchange.parsers`; the parsers of
        datasets collected by the generic jobs take ``(payload, *, market, symbol,
        received_at)``."""
        return self.name

    @property
    def loader(self) -> str:
        """The name of its pandas loader in :mod:`collector.read.loaders`."""
        return f"load_{self.name}"

    @property
    def all_endpoints(self) -> tuple[Endpoint, ...]:
        """Every endpoint whose responses become this dataset's rows."""
        return self.endpoints + ((self.keyless_endpoint,) if self.keyless_endpoint else ())

    @property
    def schema(self) -> pa.Schema:
        return pa.schema([pa.field(c.name, c.type, nullable=c.nullable) for c in self.columns])

    @property
    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]

    @property
    def sort_keys(self) -> list[tuple[str, str]]:
        """Rows in a file are sorted by symbol, then event time, then the rest of the key."""
        order = ["symbol", self.time_column] + [
            k for k in self.key if k not in ("market", "symbol", self.time_column)
        ]
        return [(name, "ascending") for name in order]
