"""Simulator -> daemon -> Parquet -> DuckDB views, compared with what the simulator generated."""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from collector import datasets
from collector.collect.daemon import Daemon
from collector.read import catalog
from collector.sim import SimExchange, SimServer
from collector.storage import delta
from tests.conftest import fast_settings

RUN_SECONDS = 8.0


def collect(server: SimServer, data_dir: Path, seconds: float, **kwargs: Any) -> None:
    settings = fast_settings(server.base_url, data_dir, **kwargs)
    asyncio.run(Daemon(settings).run(seconds, handle_signals=False))


def rows(data_dir: Path, sql: str, **params: Any) -> list[tuple[Any, ...]]:
    table = catalog.query(data_dir, sql, params or None)
    columns = [table.column(i).to_pylist() for i in range(table.num_columns)]
    return list(zip(*columns, strict=True))


@pytest.fixture(scope="module")
def archive(sim_exchange: SimExchange, tmp_path_factory: pytest.TempPathFactory) -> Path:
    data_dir = tmp_path_factory.mktemp("archive")
    with SimServer(sim_exchange) as server:
        collect(server, data_dir, RUN_SECONDS)
        assert server_state(server)["clients"]["127.0.0.1"]["bans"] == 0
    return data_dir


def server_state(server: SimServer) -> dict[str, Any]:
    return dict(httpx.get(f"{server.base_url}/_sim/state").json())


def test_every_dataset_has_rows_for_every_market_it_exists_in(archive: Path) -> None:
    for name, spec in datasets.DATASETS.items():
        found = {m for (m,) in rows(archive, f"SELECT DISTINCT market FROM {name}")}
        assert found == set(spec.markets), name


def test_trades_equal_what_the_simulator_generated(
    archive: Path, sim_exchange: SimExchange
) -> None:
    groups = rows(
        archive,
        "SELECT market, symbol, min(trade_id), max(trade_id), count(*), count(DISTINCT trade_id) "
        "FROM trades GROUP BY ALL ORDER BY ALL",
    )
    assert {g[0] for g in groups} == set(datasets.MARKETS)
    for market, symbol, first, last, count, distinct in groups:
        assert count == distinct, f"duplicated trade ids in {market} {symbol}"
        truth = sim_exchange.trades_from_id(market, symbol, first, last - first + 1)
        archived = rows(
            archive,
            "SELECT trade_id, epoch_ms(time), price, qty, is_buyer_maker FROM trades "
            "WHERE market = $market AND symbol = $symbol ORDER BY trade_id",
            market=market,
            symbol=symbol,
        )
        expected = [(t.id, t.time, float(t.price), float(t.qty), t.buyer_maker) for t in truth]
        assert archived == expected, f"{market} {symbol}"


def test_one_minute_klines_equal_the_simulators(archive: Path, sim_exchange: SimExchange) -> None:
    groups = rows(
        archive,
        "SELECT market, symbol, epoch_ms(min(open_time)), epoch_ms(max(open_time)), count(*) "
        "FROM klines WHERE interval = '1m' GROUP BY ALL ORDER BY ALL",
    )
    assert {g[0] for g in groups} == set(datasets.MARKETS)
    for market, symbol, first, last, count in groups:
        assert count == (last - first) // 60_000 + 1, f"missing or duplicated klines {symbol}"
        truth = sim_exchange.klines(market, symbol, "1m", first, last + 1)
        archived = rows(
            archive,
            "SELECT epoch_ms(open_time), epoch_ms(close_time), open, high, low, close, volume, "
            "quote_volume, trade_count, taker_buy_volume, taker_buy_quote_volume FROM klines "
            "WHERE market = $market AND symbol = $symbol AND interval = '1m' ORDER BY open_time",
            market=market,
            symbol=symbol,
        )
        expected = [
            (
                k.open_time,
                k.close_time,
                float(k.open),
                float(k.high),
                float(k.low),
                float(k.close),
                float(k.volume),
                float(k.quote_volume),
                k.trade_count,
                float(k.taker_buy_volume),
                float(k.taker_buy_quote_volume),
            )
            for k in truth
        ]
        assert archived == expected, f"{market} {symbol}"


def test_spot_and_contract_rows_of_the_same_symbol_are_kept_apart(
    archive: Path, sim_exchange: SimExchange
) -> None:
    both = rows(
        archive,
        "SELECT market, avg(price) FROM trades WHERE symbol = 'BTCUSDT' GROUP BY 1 ORDER BY 1",
    )
    assert [m for m, _ in both] == ["contract", "spot"]
    (_, contract_avg), (_, spot_avg) = both
    assert contract_avg != spot_avg
    # Each market's rows are that market's trades (checked trade by trade above); the
    # partition values in the Delta log and the file's folder agree.
    table = delta.open_table(archive, "trades")
    assert table is not None
    for file in delta.files(table, "trades"):
        assert file.path.startswith(f"market={file.partition.market}/date={file.partition.date}/")


def test_funding_and_protection_fund_ids_are_complete(
    archive: Path, sim_exchange: SimExchange
) -> None:
    for dataset in ("funding_rate", "protection_fund"):
        for symbol, first, last, count in rows(
            archive,
            f"SELECT symbol, min(id), max(id), count(DISTINCT id) FROM {dataset} GROUP BY 1",
        ):
            assert count == last - first + 1, f"{dataset} {symbol} has holes"
    truth = sim_exchange.funding_rates("BTCUSDT", 0, sim_exchange.now_ms() + 1)
    archived = rows(
        archive,
        "SELECT id, epoch_ms(time), funding_rate FROM funding_rate WHERE symbol = 'BTCUSDT' "
        "ORDER BY id",
    )
    by_id = {f.id: (f.id, f.time, f.funding_rate) for f in truth}
    assert archived and all(by_id[row[0]] == row for row in archived)


def test_no_temporary_file_is_left_and_the_view_file_exists(archive: Path) -> None:
    assert (archive / catalog.DB_NAME).exists()
    leftovers = [p for p in archive.rglob("*") if p.name.endswith(".tmp")]
    assert leftovers == []


def test_a_restart_neither_repeats_nor_skips_trades(
    sim_server: SimServer, sim_exchange: SimExchange, tmp_path: Path
) -> None:
    collect(sim_server, tmp_path, 6.0)  # long enough for every job's first round
    time.sleep(1.0)  # trades happen while the collector is down
    collect(sim_server, tmp_path, 6.0)
    for market, symbol, first, last, count, distinct in rows(
        tmp_path,
        "SELECT market, symbol, min(trade_id), max(trade_id), count(*), count(DISTINCT trade_id) "
        "FROM trades GROUP BY ALL",
    ):
        assert count == distinct == last - first + 1, f"{market} {symbol}"
        truth = sim_exchange.trades_from_id(market, symbol, first, count)
        archived = rows(
            tmp_path,
            "SELECT trade_id, epoch_ms(time), price FROM trades "
            "WHERE market = $m AND symbol = $s ORDER BY trade_id",
            m=market,
            s=symbol,
        )
        assert archived == [(t.id, t.time, float(t.price)) for t in truth], f"{market} {symbol}"
    for key in rows(
        tmp_path,
        "SELECT market, symbol, interval, open_time, count(*) AS n FROM klines "
        "GROUP BY ALL HAVING n > 1",
    ):
        pytest.fail(f"duplicated kline {key}")
    for dataset, events in (
        ("funding_rate", sim_exchange.funding_rates),
        ("protection_fund", sim_exchange.protection_fund),
    ):
        for symbol, last in rows(tmp_path, f"SELECT symbol, max(id) FROM {dataset} GROUP BY 1"):
            ids = [
                r[0]
                for r in rows(
                    tmp_path,
                    f"SELECT id FROM {dataset} WHERE symbol = $s ORDER BY id",
                    s=symbol,
                )
            ]
            expected = [e.id for e in events(symbol, 0, sim_exchange.now_ms() + 1) if e.id <= last]
            assert ids == expected, f"{dataset} {symbol}"
        assert rows(tmp_path, f"SELECT count(*) FROM {dataset}") != [(0,)], dataset


def test_sigterm_flushes_and_exits_zero_within_ten_seconds(tmp_path: Path) -> None:
    config = tmp_path / "schedules.yaml"
    # Flushes only at shutdown: every row on disk afterwards got there through SIGTERM.
    config.write_text(
        "storage: {flush_every: 1h}\n"
        "jobs:\n"
        "  trades: {every: 1s}\n"
        "  ticker_price: {every: 1s}\n"
        "  instruments: {every: 1h}\n"
    )
    with subprocess.Popen(
        [
            sys.executable,
            "-m",
            "collector",
            "run",
            "--sim",
            "--config",
            str(config),
            "--data-dir",
            str(tmp_path / "data"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    ) as process:
        assert process.stderr is not None
        log = []
        for line in process.stderr:
            log.append(line)
            if "job trades market=contract" in line:
                break
        time.sleep(1.5)
        process.send_signal(signal.SIGTERM)
        started = time.monotonic()
        try:
            # The requirement: out within 10 seconds of SIGTERM.
            process.wait(timeout=10)
        finally:
            process.kill()
            log.extend(process.stderr)
        elapsed = time.monotonic() - started
    assert process.returncode == 0, "".join(log)
    assert elapsed < 10
    counts = dict(rows(tmp_path / "data", "SELECT market, count(*) FROM trades GROUP BY 1"))
    assert set(counts) == set(datasets.MARKETS)


def test_received_at_is_exchange_time_even_when_the_clocks_disagree(tmp_path: Path) -> None:
    skew_ms = 3_600_000  # our clock is an hour behind the exchange's
    ahead = SimExchange(seed=2, clock=lambda: time.time_ns() // 1_000_000 + skew_ms)
    with SimServer(ahead) as server:
        settings = fast_settings(
            server.base_url,
            tmp_path,
            depth={"every": "1s", "markets": ["spot"], "symbols": ["BTCUSDT"], "limit": 5},
        )
        settings = settings.model_copy(
            update={
                "jobs": {k: v for k, v in settings.jobs.items() if k in ("depth", "instruments")}
            }
        )
        started = time.time_ns() // 1_000_000
        daemon = Daemon(settings)
        asyncio.run(daemon.run(2.5, handle_signals=False))
        ended = time.time_ns() // 1_000_000
    # Our estimate of the exchange clock is within a second of it...
    assert abs(daemon.client.clock.offset_ms - skew_ms) < 1_000
    # ...and every recorded time is exchange time, not our hour-old local time.
    received = [r[0] for r in rows(tmp_path, "SELECT DISTINCT epoch_ms(received_at) FROM depth")]
    assert received
    assert all(started + skew_ms - 1_000 <= t <= ended + skew_ms + 1_000 for t in received)


def test_an_unreachable_exchange_is_retried_and_the_daemon_stops_cleanly(tmp_path: Path) -> None:
    settings = fast_settings("http://127.0.0.1:9", tmp_path)  # nothing listens on port 9
    asyncio.run(Daemon(settings).run(1.5, handle_signals=False))
    assert not list(tmp_path.glob("*/market=*"))
    # The views file comes with the first dataset's first file (collector.collect.views).
    assert not (tmp_path / catalog.DB_NAME).exists()


def test_kill_9_then_restart_loses_and_repeats_no_id_keyed_row(
    sim_server: SimServer, sim_exchange: SimExchange, tmp_path: Path
) -> None:
    """SIGKILL mid-run: buffered rows die with the process, and are fetched again."""
    config = tmp_path / "schedules.yaml"
    config.write_text(
        "storage: {flush_every: 1s}\n"
        "jobs:\n"
        "  trades: {every: 1s, markets: [spot, contract]}\n"
        "  funding_rate: {every: 1s, markets: [contract]}\n"
        "  protection_fund: {every: 1s, markets: [contract]}\n"
        "  instruments: {every: 1h}\n"
    )
    command = [
        sys.executable,
        "-m",
        "collector",
        "run",
        "--config",
        str(config),
        "--base-url",
        sim_server.base_url,
        "--data-dir",
        str(tmp_path / "data"),
    ]
    env = {**os.environ, "JEX_API_KEY": "test-key"}
    with subprocess.Popen(
        command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    ) as victim:
        assert victim.stderr is not None
        for line in victim.stderr:
            if "flushed" in line:  # some rows on disk, more in memory
                break
        time.sleep(1.2)
        victim.kill()
        victim.communicate()
    second = subprocess.run(
        [*command, "--duration", "4"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert second.returncode == 0, second.stderr
    data_dir = tmp_path / "data"
    assert not [p for p in data_dir.rglob("*") if p.name.endswith(".tmp")]
    for market, symbol, first, last, count in rows(
        data_dir,
        "SELECT market, symbol, min(trade_id), max(trade_id), count(*) FROM trades GROUP BY ALL",
    ):
        truth = sim_exchange.trades_from_id(market, symbol, first, last - first + 1)
        archived = rows(
            data_dir,
            "SELECT trade_id, price FROM trades WHERE market = $m AND symbol = $s "
            "ORDER BY trade_id",
            m=market,
            s=symbol,
        )
        assert archived == [(t.id, float(t.price)) for t in truth], f"{market} {symbol}"
        assert count == last - first + 1
    for dataset in ("funding_rate", "protection_fund"):
        ((count, distinct, first, last),) = rows(
            data_dir,
            f"SELECT count(*), count(DISTINCT (symbol, id)), min(id), max(id) "
            f"FROM {dataset} WHERE symbol = 'BTCUSDT'",
        )
        assert count == distinct == last - first + 1 and first == 1, dataset


def test_a_first_start_backfill_leaves_the_snapshots_no_hole(tmp_path: Path) -> None:
    """Issue 14, case 15: history backfills (a week of 1m and 1h klines in three markets,
    six hours of trades, the funding history) must not hold up the depth snapshots,
    which are lost for good when missed: depth keeps its 2 s interval while the history
    advances. Before snapshots went first in the budget's queue, the depth rounds queued
    behind the history pages' pacing waits: 5 snapshots a symbol, 4.3-6.2 s apart (10,
    1.5-2.6 s apart, since)."""
    from collector import config

    exchange = SimExchange(seed=5, history_days=8)
    with SimServer(exchange, weight_limit=400) as server:
        raw = {
            "exchange": {"base_url": server.base_url},
            "storage": {"uri": str(tmp_path), "flush_every": "2s"},
            "jobs": {
                "depth": {"every": "2s", "markets": ["spot"], "limit": 5},
                "trades": {"every": "10s", "markets": ["spot"], "backfill": "6h"},
                "klines": {"every": "1m", "intervals": ["1m", "1h"], "backfill": "7d"},
                "funding_rate": {"every": "5m", "markets": ["contract"]},
                "instruments": {"every": "5m"},
            },
        }
        settings = config.from_mapping(raw, source="<test>", environ={"JEX_API_KEY": "test-key"})
        daemon = Daemon(settings)
        asyncio.run(daemon.run(20, handle_signals=False))
        assert server_state(server)["clients"]["127.0.0.1"]["bans"] == 0
    assert daemon.client.budget.snapshot_reserve > 0
    times: dict[str, list[int]] = {}
    for symbol, received in rows(
        tmp_path, "SELECT DISTINCT symbol, epoch_ms(received_at) FROM depth ORDER BY 1, 2"
    ):
        times.setdefault(symbol, []).append(received)
    assert times
    for symbol, series in times.items():
        gaps = [b - a for a, b in itertools.pairwise(series)]
        # The run's last seconds are the shutdown's grace for running jobs, no snapshots.
        assert len(series) >= 8 and max(gaps) <= 4_000, (symbol, gaps)
    ((klines,),) = rows(tmp_path, "SELECT count(*) FROM klines")
    assert klines > 10_000  # the history advanced meanwhile
