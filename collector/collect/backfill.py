"""Filling a time range of an id- or time-keyed dataset, fetching only what the archive lacks.

* klines: the open times missing from the archive in [start, end) are fetched in runs,
  pages of 1000 with ``startTime``/``endTime``; only closed klines are kept.
* trades (API key needed): the first trade id at or after ``start`` is found by a binary
  search over ``fromId`` (one-trade probes), then the range is walked forwards, jumping
  over ids the archive has.
* funding_rate, protection_fund: ids missing between archived ones, and before the first
  archived one back to ``start``, paged by ``startTime`` and id.

Resumable by construction: what is missing is computed from the archive each time, so a
second run fetches nothing the first one stored. The newest end of each series belongs to
the daemon: when a symbol's newest archived row is recent (a daemon is collecting it),
backfill never goes past that row, so the two never fetch the same rows.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from collector import datasets
from collector.collect import intake
from collector.collect.context import Intake
from collector.collect.quarantine import Quarantine
from collector.config import KLINE_INTERVALS
from collector.exchange import endpoints, parsers
from collector.exchange.client import JexClient
from collector.read import catalog
from collector.storage.writer import ArchiveWriter

log = logging.getLogger(__name__)

WEEK_ALIGN_MS = 4 * 86_400_000
CLOSE_MARGIN_MS = 2_000
#: A series whose newest archived row is this recent is taken to be in a daemon's hands.
LIVE_WINDOW_MS = 15 * 60_000
#: Rows buffered before a flush, so an interrupted backfill keeps most of its work.
FLUSH_ROWS = 200_000

Progress = Callable[[int, int], None]  # (rows added, pages fetched)


@dataclass
class Result:
    rows: int = 0
    pages: int = 0
    skipped: list[str] = field(default_factory=list)


class Backfill:
    def __init__(
        self,
        client: JexClient,
        writer: ArchiveWriter,
        data_dir: str | Path,
        progress: Progress | None = None,
        quarantine: Quarantine | None = None,
    ) -> None:
        self.client = client
        self.writer = writer
        self.data_dir = str(data_dir)
        #: Responses are read as the daemon's jobs read them (intake.parse): what cannot
        #: be read is logged and goes to the quarantine.
        self.intake = Intake(quarantine)
        self.progress = progress or (lambda rows, pages: None)
        self.result = Result()
        self._buffered = 0

    def _keep(self, parsed: parsers.Parsed, pages: int = 1) -> None:
        self.writer.add(parsed.dataset, parsed.table)
        self.result.rows += parsed.rows
        self.result.pages += pages
        self._buffered += parsed.rows
        self.progress(parsed.rows, pages)
        if self._buffered >= FLUSH_ROWS:
            self.flush()

    def flush(self) -> None:
        result = self.writer.flush()
        self._buffered = sum(self.writer.buffered_rows().values())
        if result.errors:
            raise result.errors[0]

    def _archived(self, dataset: str, sql: str, **params: Any) -> list[int]:
        """Values of the first column of ``sql`` over the archive (empty when it has none)."""
        if not catalog.has_files(self.data_dir, dataset):
            return []
        table = catalog.query(self.data_dir, sql, params, derived_views=False, only=(dataset,))
        return [int(v) for v in table.column(0).to_pylist() if v is not None]

    def _live_edge(self, dataset: str, column: str, market: str, symbol: str) -> int | None:
        """The newest archived id when a daemon is probably collecting the series (its
        newest row is recent): backfill stays below it so the two never fetch the same rows.
        An older archive has no live edge, and backfill may go past its newest row."""
        newest = self._archived(
            dataset,
            f"SELECT max({column}) FROM {dataset} "  # noqa: S608 -- registry names
            f"WHERE market = $m AND symbol = $s AND epoch_ms({datasets.get(dataset).time_column})"
            " >= $recent",
            m=market,
            s=symbol,
            recent=self.client.clock.now_ms() - LIVE_WINDOW_MS,
        )
        return newest[0] if newest else None

    # -- klines ----------------------------------------------------------------------------

    def missing_klines(
        self, market: str, symbol: str, interval: str, start_ms: int, end_ms: int
    ) -> list[tuple[int, int]]:
        """Runs (first, last open time) of closed klines in [start, end) not archived."""
        step = KLINE_INTERVALS[interval]
        align = WEEK_ALIGN_MS if interval == "1w" else 0
        first = start_ms + (align - start_ms) % step
        now = self.client.clock.now_ms()
        last_closed = now - CLOSE_MARGIN_MS - step  # open time of the newest closed kline
        last = min(end_ms - 1, last_closed)
        last -= (last - align) % step
        if last < first:
            return []
        have = set(
            self._archived(
                "klines",
                "SELECT epoch_ms(open_time) FROM klines WHERE market = $m AND symbol = $s "
                "AND interval = $i AND epoch_ms(open_time) BETWEEN $a AND $b",
                m=market,
                s=symbol,
                i=interval,
                a=first,
                b=last,
            )
        )
        runs: list[tuple[int, int]] = []
        for open_time in range(first, last + 1, step):
            if open_time in have:
                continue
            if runs and runs[-1][1] == open_time - step:
                runs[-1] = (runs[-1][0], open_time)
            else:
                runs.append((open_time, open_time))
        return runs

    async def klines(
        self, market: str, symbol: str, interval: str, runs: list[tuple[int, int]]
    ) -> None:
        step = KLINE_INTERVALS[interval]
        for run_first, run_last in runs:
            cursor = run_first
            while cursor <= run_last:
                response = await self.client.get(
                    endpoints.KLINES,
                    market=market,
                    params={
                        "symbol": symbol,
                        "interval": interval,
                        "startTime": cursor,
                        "endTime": run_last + step - 1,
                        "limit": endpoints.KLINES_MAX,
                    },
                )
                parsed = intake.parse(
                    self.intake,
                    response,
                    parsers.klines,
                    market=market,
                    symbol=symbol,
                    received_at=response.received_at,
                    interval=interval,
                )
                opens = pc.cast(parsed.table["open_time"], pa.int64())
                closes = pc.cast(parsed.table["close_time"], pa.int64())
                parsed.table = parsed.table.filter(
                    pc.and_(
                        pc.and_(pc.greater_equal(opens, cursor), pc.less_equal(opens, run_last)),
                        pc.less(closes, response.received_at - CLOSE_MARGIN_MS),
                    )
                )
                self._keep(parsed)
                if not parsed.rows:
                    break  # the exchange has nothing more in this run
                cursor = int(pc.max(pc.cast(parsed.table["open_time"], pa.int64())).as_py())
                cursor += step

    # -- trades ----------------------------------------------------------------------------

    async def _probe(self, market: str, symbol: str, from_id: int | None) -> tuple[int, int]:
        """(id, time) of the trade at ``from_id`` (or the newest trade)."""
        params: dict[str, Any] = {"symbol": symbol, "limit": 1}
        if from_id is not None:
            params["fromId"] = from_id
        response = await self.client.get(endpoints.HISTORICAL_TRADES, market=market, params=params)
        parsed = intake.parse(
            self.intake,
            response,
            parsers.historical_trades,
            market=market,
            symbol=symbol,
            received_at=response.received_at,
        )
        self.result.pages += 1
        if not parsed.rows:
            raise LookupError("no trade")
        row = parsed.table.slice(0, 1).to_pylist()[0]
        return int(row["trade_id"]), int(pc.cast(parsed.table["time"], pa.int64())[0].as_py())

    async def first_trade_at(self, market: str, symbol: str, start_ms: int) -> int | None:
        """The smallest trade id with time >= start_ms.

        Binary search over x for "the first trade with id >= x is at or after start",
        which only turns from false to true as x grows: one one-trade probe per step.
        """
        newest_id, newest_time = await self._probe(market, symbol, None)
        if newest_time < start_ms:
            return None
        low, _ = await self._probe(market, symbol, 1)  # the oldest id the exchange serves
        high = newest_id
        while low < high:
            middle = (low + high) // 2
            _, found_time = await self._probe(market, symbol, middle)
            if found_time >= start_ms:
                high = middle
            else:
                low = middle + 1
        return (await self._probe(market, symbol, low))[0]

    def _archived_first_trade_at(self, market: str, symbol: str, start_ms: int) -> int | None:
        """The first id at ``start`` when the archive shows it, with no probe: the last
        trade before ``start`` and the first at or after it are archived with adjacent ids."""
        if not catalog.has_files(self.data_dir, "trades"):
            return None
        table = catalog.query(
            self.data_dir,
            "SELECT max(trade_id) FILTER (WHERE epoch_ms(time) < $a) AS before, "
            "min(trade_id) FILTER (WHERE epoch_ms(time) >= $a) AS first "
            "FROM trades WHERE market = $m AND symbol = $s AND trade_id IS NOT NULL",
            {"m": market, "s": symbol, "a": start_ms},
            derived_views=False,
            only=("trades",),
        )
        before, first = table["before"][0].as_py(), table["first"][0].as_py()
        if before is not None and first is not None and first == before + 1:
            return int(first)
        return None

    async def _start_from_archive(self, market: str, symbol: str, start_ms: int) -> int | None:
        """The archive's first trade at ``start`` is the exchange's too if the trade just
        before it (one probe) is earlier than ``start``."""
        first = self._archived(
            "trades",
            "SELECT min(trade_id) FROM trades WHERE market = $m AND symbol = $s "
            "AND epoch_ms(time) >= $a",
            m=market,
            s=symbol,
            a=start_ms,
        )
        if not first or first[0] <= 1:
            return None
        try:
            found_id, found_time = await self._probe(market, symbol, first[0] - 1)
        except LookupError:
            return None
        return first[0] if found_id == first[0] - 1 and found_time < start_ms else None

    async def trades(self, market: str, symbol: str, start_ms: int, end_ms: int) -> None:
        if not self.client.has_api_key:
            self.result.skipped.append(f"{market} {symbol}: trades need JEX_API_KEY")
            return
        edge = self._live_edge("trades", "trade_id", market, symbol)
        have = np.array(
            sorted(
                self._archived(
                    "trades",
                    "SELECT trade_id FROM trades WHERE market = $m AND symbol = $s "
                    "AND trade_id IS NOT NULL AND epoch_ms(time) >= $a AND epoch_ms(time) < $b",
                    m=market,
                    s=symbol,
                    a=start_ms,
                    b=end_ms,
                )
            ),
            dtype=np.int64,
        )
        first = self._archived_first_trade_at(market, symbol, start_ms)
        if first is None:
            first = await self._start_from_archive(market, symbol, start_ms)
        if first is None:
            first = await self.first_trade_at(market, symbol, start_ms)
        if first is None:
            return
        cursor = first
        while edge is None or cursor <= edge:
            # Jump over ids the archive already holds.
            index = int(np.searchsorted(have, cursor))
            while index < len(have) and have[index] == cursor:
                cursor += 1
                index += 1
            limit = endpoints.HISTORICAL_TRADES_MAX
            if index < len(have):
                limit = min(limit, int(have[index]) - cursor)
            if edge is not None:
                limit = min(limit, edge - cursor + 1)
            if limit <= 0:
                break
            response = await self.client.get(
                endpoints.HISTORICAL_TRADES,
                market=market,
                params={"symbol": symbol, "fromId": cursor, "limit": limit},
            )
            parsed = intake.parse(
                self.intake,
                response,
                parsers.historical_trades,
                market=market,
                symbol=symbol,
                received_at=response.received_at,
            )
            if not parsed.rows:
                break
            times = pc.cast(parsed.table["time"], pa.int64())
            ids = parsed.table["trade_id"]
            last_id = int(pc.max(ids).as_py())
            past_end = bool(pc.any(pc.greater_equal(times, end_ms)).as_py())
            parsed.table = parsed.table.filter(
                pc.and_(
                    pc.less(times, end_ms),
                    pc.invert(pc.is_in(ids, pa.array(have))),
                )
            )
            self._keep(parsed)
            if past_end or len(response.payload) < limit:
                break
            cursor = last_id + 1

    # -- any paged dataset of the registry ----------------------------------------------

    async def fill(
        self,
        dataset: str,
        market: str,
        symbol: str,
        interval: str | None,
        start_ms: int,
        end_ms: int,
    ) -> None:
        """Fill ``[start_ms, end_ms)`` of one series, as its registry entry says it pages:
        klines by open time (each missing run), trades by consecutive ids, other id-paged
        series by id within the time range, time-paged ones by time."""
        spec = datasets.get(dataset)
        if spec.continuity == "open_times":
            assert interval is not None
            runs = self.missing_klines(market, symbol, interval, start_ms, end_ms)
            await self.klines(market, symbol, interval, runs)
        elif spec.continuity == "consecutive_ids":
            await self.trades(market, symbol, start_ms, end_ms)
        elif spec.kind == "id_paged":
            await self.by_id(dataset, market, symbol, start_ms, end_ms)
        elif spec.kind == "time_paged":
            await self.by_time(dataset, market, symbol, start_ms, end_ms)
        else:
            raise ValueError(f"{dataset} is a snapshot: what was missed cannot be fetched again")

    async def by_id(
        self, dataset: str, market: str, symbol: str, start_ms: int, end_ms: int
    ) -> None:
        """An id-paged series (funding rate, protection fund) within a time range, pages
        after the first by id, with the endpoint's own parameters; ids archived are not
        fetched twice, nor those past a running daemon's live edge."""
        spec = datasets.get(dataset)
        endpoint = spec.endpoints[0]
        column = spec.key[-1]
        parse: Any = getattr(parsers, spec.parser)
        have = set(
            self._archived(
                dataset,
                f"SELECT {column} FROM {dataset} WHERE symbol = $s",  # noqa: S608 -- registry
                s=symbol,
            )
        )
        edge = self._live_edge(dataset, column, market, symbol)
        params: dict[str, Any] = {
            "symbol": symbol,
            endpoint.paging.size: spec.page_size,
            "startTime": start_ms,
            "endTime": end_ms - 1,
        }
        while True:
            response = await self.client.get(endpoint, market=market, params=params)
            parsed = intake.parse(
                self.intake,
                response,
                parse,
                market=market,
                symbol=symbol,
                received_at=response.received_at,
            )
            if not parsed.rows:
                break
            ids = parsed.table[column]
            last_id = int(pc.max(ids).as_py())
            keep = pc.invert(pc.is_in(ids, pa.array(sorted(have), pa.int64())))
            if edge is not None:
                keep = pc.and_(keep, pc.less_equal(ids, edge))
            parsed.table = parsed.table.filter(keep)
            self._keep(parsed)
            if len(response.payload) < spec.page_size or (edge is not None and last_id >= edge):
                break
            params.pop("startTime", None)
            params.update(endpoint.paging.after(last_id))

    async def by_time(
        self, dataset: str, market: str, symbol: str, start_ms: int, end_ms: int
    ) -> None:
        """A time-paged series (liquidation orders) within a time range: pages by
        ``startTime``; records already archived (by key) are not kept twice, and a full
        page's newest millisecond is asked again with the next page."""
        spec = datasets.get(dataset)
        assert spec.cursor is not None
        endpoint, column, key = spec.endpoints[0], spec.cursor.column, spec.key[-1]
        parse: Any = getattr(parsers, spec.parser)
        have: list[str] = []
        if catalog.has_files(self.data_dir, dataset):
            table = catalog.query(
                self.data_dir,
                f"SELECT {key} FROM {dataset} WHERE market = $m AND symbol = $s",  # noqa: S608
                {"m": market, "s": symbol},
                derived_views=False,
                only=(dataset,),
            )
            have = [str(v) for v in table.column(0).to_pylist()]
        cursor = start_ms
        while cursor < end_ms:
            params = {
                "symbol": symbol,
                "startTime": cursor,
                "endTime": end_ms - 1,
                "limit": spec.page_size,
            }
            response = await self.client.get(endpoint, market=market, params=params)
            parsed = intake.parse(
                self.intake,
                response,
                parse,
                market=market,
                symbol=symbol,
                received_at=response.received_at,
            )
            times = pc.cast(parsed.table[column], pa.int64())
            full = len(response.payload) >= spec.page_size
            newest = pc.max(times).as_py() if parsed.rows else None
            if full and newest is not None and pc.min(times).as_py() < newest:
                parsed.table = parsed.table.filter(pc.less(times, newest))
            keys = parsed.table[key].cast(pa.string())
            parsed.table = parsed.table.filter(pc.invert(pc.is_in(keys, pa.array(have))))
            have += [str(v) for v in parsed.table[key].to_pylist()]
            self._keep(parsed)
            if not full or newest is None or newest <= cursor:
                break
            cursor = newest if pc.min(times).as_py() < newest else newest + 1
