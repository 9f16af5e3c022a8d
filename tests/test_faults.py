"""The daemon against a simulator that injects every fault at once, then: did it stay up,
is every id-keyed series complete, is the quarantine filled, and did the API key leak?

One run serves every test of this module: ``RUN_SECONDS`` (about 45 s), or ten
minutes under ``pytest --long``. ``pytest -s`` prints the run's numbers.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import httpx
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from collector import datasets, logs
from collector.collect.daemon import Daemon
from collector.collect.quarantine import DIR_NAME
from collector.config import Settings
from collector.read import catalog
from collector.sim import Faults, SimExchange, SimServer
from collector.sim.faults import KINDS
from collector.sim.mutations import HOSTILE_SYMBOLS, UNLISTED_SYMBOLS
from tests.conftest import fast_settings

RUN_SECONDS = 45.0
LONG_RUN_SECONDS = 600.0
#: Probability of each fault kind per request (twelve kinds: about 40% of requests
#: meet one).
EACH = 0.04
#: A roomier weight limit than the default 1200: more requests, more faults per run. The
#: raw-request limit (5000 per 5 minutes by default) is raised with it: the long run sends
#: more than that, and pacing raw requests is not what this test is about.
WEIGHT_LIMIT = 4800
RAW_LIMIT_5M = 50_000
API_KEY = "sk-test-9f8e7d6c5b4a3928170615243342516f"
LOG_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"  # the CLI's
#: Loggers the CLI turns down; opened up to DEBUG for the run, so every layer is searched.
QUIET = ("httpx", "httpcore", "apscheduler", "apscheduler.scheduler", "collector")


class Capture(logging.Handler):
    """Every record, formatted as the CLI's root handler would, traceback included: as
    text and as a JSON line (``--log-format json``, its fields too), both before the
    CLI's redaction, which must have nothing to do."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(logging.Formatter(LOG_FORMAT))
        self.json = logs.JsonFormatter()
        self.records: list[logging.LogRecord] = []
        self.lines: list[str] = []
        self.json_lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)
        self.lines.append(self.format(record))
        self.json_lines.append(self.json.format(record))


@dataclass
class FaultRun:
    data_dir: Path
    settings: Settings
    daemon: Daemon
    log: Capture
    injected: dict[str, int]
    quarantined: Counter[tuple[str, str]] = field(default_factory=Counter)


def settings_for(base_url: str, data_dir: Path) -> Settings:
    settings = fast_settings(base_url, data_dir, api_key=API_KEY)
    # A short timeout, below slow_seconds: slow responses exercise the timeout path.
    exchange = settings.exchange.model_copy(update={"timeout": 1.0, "max_attempts": 4})
    return settings.model_copy(update={"exchange": exchange})


@pytest.fixture(scope="module")
def fault_run(
    sim_exchange: SimExchange, tmp_path_factory: pytest.TempPathFactory, long_run: bool
) -> FaultRun:
    data_dir = tmp_path_factory.mktemp("faults")
    faults = Faults(**dict.fromkeys(KINDS, EACH), slow_seconds=2.0, seed=11)
    capture = Capture()
    root = logging.getLogger()
    levels = {name: logging.getLogger(name).level for name in ("", *QUIET)}
    root.addHandler(capture)
    for name in levels:
        logging.getLogger(name).setLevel(logging.DEBUG)
    try:
        with SimServer(
            sim_exchange, faults=faults, weight_limit=WEIGHT_LIMIT, raw_limit_5m=RAW_LIMIT_5M
        ) as server:
            settings = settings_for(server.base_url, data_dir)
            daemon = Daemon(settings)
            seconds = LONG_RUN_SECONDS if long_run else RUN_SECONDS
            asyncio.run(daemon.run(seconds, handle_signals=False))
            state = httpx.get(f"{server.base_url}/_sim/state").json()
    finally:
        root.removeHandler(capture)
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)
    run = FaultRun(data_dir, settings, daemon, capture, state["faults_injected"])
    for path in (data_dir / DIR_NAME).rglob("*.json"):
        document = json.loads(path.read_text())
        run.quarantined[(document["endpoint"], document["kind"])] += 1
    print_numbers(run, seconds)
    return run


def print_numbers(run: FaultRun, seconds: float) -> None:
    """The run's numbers, for ``pytest -s`` (and the report that quotes them)."""
    stats = run.daemon.client.stats
    print(f"\nfault run: {seconds:.0f} s, {EACH:.0%} of each of {len(KINDS)} kinds")
    print(f"  requests {stats['requests']}, retries {stats['retries']}, 429s {stats['429']}")
    print(f"  faults injected: {json.dumps(run.injected)}")
    print(f"  quarantined: {dict(sorted(run.quarantined.items()))}")
    print(f"  quarantine dropped: {dict(run.daemon.quarantine.dropped)}")
    for dataset, (missing, duplicates) in id_keyed_losses(run.data_dir).items():
        print(f"  {dataset}: missing ids {missing}, duplicates {duplicates}")


def rows(data_dir: Path, sql: str, **params: Any) -> list[tuple[Any, ...]]:
    table = catalog.query(data_dir, sql, params or None)
    return list(zip(*[c.to_pylist() for c in table.columns], strict=True))


ID_KEYED = {
    "trades": ("trade_id", "TRUE", 1),
    "funding_rate": ("id", "TRUE", 1),
    "protection_fund": ("id", "TRUE", 1),
    "klines": ("epoch_ms(open_time)", "interval = '1m'", 60_000),
}


def id_keyed_losses(data_dir: Path) -> dict[str, tuple[int, int]]:
    """Per id-keyed dataset: ids missing between each series' first and last, duplicates."""
    losses = {}
    for dataset, (key, where, step) in ID_KEYED.items():
        ((missing, duplicates),) = rows(
            data_dir,
            f"SELECT coalesce(sum((max_key - min_key) // {step} + 1 - n_distinct), 0), "
            "coalesce(sum(n - n_distinct), 0) FROM ("
            f"  SELECT min({key}) AS min_key, max({key}) AS max_key, count(*) AS n, "
            f"  count(DISTINCT {key}) AS n_distinct FROM {dataset} WHERE {where} "
            "  GROUP BY market, symbol)",
        )
        losses[dataset] = (int(missing), int(duplicates))
    return losses


# -- the daemon stays up ------------------------------------------------------------------------


def test_the_daemon_stays_up_and_handles_every_fault(fault_run: FaultRun) -> None:
    assert set(fault_run.injected) == set(KINDS), "every kind of fault was injected"
    crashes = [
        line
        for record, line in zip(fault_run.log.records, fault_run.log.lines, strict=True)
        if record.name.startswith("collector") and record.exc_info
    ]
    assert crashes == [], "a fault escaped as an unexpected error:\n" + "\n".join(crashes[:3])
    assert fault_run.daemon.client.stats["retries"] > 0
    for name in ("trades", "klines", "funding_rate", "protection_fund", "depth", "ticker_price"):
        found = {m for (m,) in rows(fault_run.data_dir, f"SELECT DISTINCT market FROM {name}")}
        assert found == set(datasets.get(name).markets), name


# -- nothing lost, nothing twice ------------------------------------------------------------------


def test_trades_are_complete_and_equal_the_simulators(
    fault_run: FaultRun, sim_exchange: SimExchange
) -> None:
    data_dir = fault_run.data_dir
    for market, symbol, first, last, count, distinct in rows(
        data_dir,
        "SELECT market, symbol, min(trade_id), max(trade_id), count(*), count(DISTINCT trade_id) "
        "FROM trades GROUP BY ALL ORDER BY ALL",
    ):
        assert count == distinct == last - first + 1, f"{market} {symbol}: holes or duplicates"
        truth = sim_exchange.trades_from_id(market, symbol, first, count)
        archived = rows(
            data_dir,
            "SELECT trade_id, epoch_ms(time), price, qty, is_buyer_maker FROM trades "
            "WHERE market = $m AND symbol = $s ORDER BY trade_id",
            m=market,
            s=symbol,
        )
        expected = [(t.id, t.time, float(t.price), float(t.qty), t.buyer_maker) for t in truth]
        assert archived == expected, f"{market} {symbol}"


def test_funding_and_protection_fund_hold_the_whole_history_without_holes(
    fault_run: FaultRun, sim_exchange: SimExchange
) -> None:
    for dataset, events, value in (
        ("funding_rate", sim_exchange.funding_rates, "funding_rate"),
        ("protection_fund", sim_exchange.protection_fund, "insurance_fund"),
    ):
        symbols = rows(fault_run.data_dir, f"SELECT DISTINCT symbol FROM {dataset}")
        assert len(symbols) == 2, dataset
        for (symbol,) in symbols:
            archived = rows(
                fault_run.data_dir,
                f"SELECT id, epoch_ms(time), {value} FROM {dataset} WHERE symbol = $s ORDER BY id",
                s=symbol,
            )
            last = archived[-1][0]
            truth = [e for e in events(symbol, 0, sim_exchange.now_ms() + 1) if e.id <= last]
            expected = [(e.id, e.time, getattr(e, value)) for e in truth]
            assert archived == expected, f"{dataset} {symbol}"


def test_one_minute_klines_are_complete_and_equal_the_simulators(
    fault_run: FaultRun, sim_exchange: SimExchange
) -> None:
    for market, symbol, first, last, count in rows(
        fault_run.data_dir,
        "SELECT market, symbol, epoch_ms(min(open_time)), epoch_ms(max(open_time)), count(*) "
        "FROM klines WHERE interval = '1m' GROUP BY ALL",
    ):
        assert count == (last - first) // 60_000 + 1, f"{market} {symbol}: holes or duplicates"
        archived = rows(
            fault_run.data_dir,
            "SELECT epoch_ms(open_time), close, volume, trade_count FROM klines "
            "WHERE market = $m AND symbol = $s AND interval = '1m' ORDER BY open_time",
            m=market,
            s=symbol,
        )
        truth = sim_exchange.klines(market, symbol, "1m", first, last + 1)
        expected = [(k.open_time, float(k.close), float(k.volume), k.trade_count) for k in truth]
        assert archived == expected, f"{market} {symbol}"


# -- the quarantine ------------------------------------------------------------------------------


def quarantine_files(run: FaultRun) -> list[dict[str, Any]]:
    return [json.loads(p.read_text()) for p in sorted((run.data_dir / DIR_NAME).rglob("*.json"))]


def body_of(document: dict[str, Any]) -> bytes:
    if document["body_encoding"] == "base64":
        return base64.b64decode(document["body"])
    return str(document["body"]).encode("utf-8")


def test_unreadable_payloads_are_in_the_quarantine(fault_run: FaultRun) -> None:
    documents = quarantine_files(fault_run)
    kinds = Counter(d["kind"] for d in documents)
    assert kinds["invalid_json"] > 0 and kinds["rejected_records"] > 0, kinds
    # Truncated JSON is the only invalid JSON the simulator sends with status 200.
    assert kinds["invalid_json"] <= fault_run.injected["truncated_json"]
    for document in documents:
        assert document["endpoint"] and document["time_ms"] > 0 and document["status"] == 200
        body = body_of(document)
        if document["kind"] == "invalid_json":
            with pytest.raises(json.JSONDecodeError):
                json.loads(body)
        if document["kind"] == "rejected_records":
            assert 0 < len(document["rejected"]) <= document["rejected_count"]
            assert all(r["reason"] for r in document["rejected"])
            json.loads(body)  # the raw response, whole


def test_hostile_and_unlisted_symbols_reach_no_parquet_file_or_path(fault_run: FaultRun) -> None:
    forbidden = [s for s in HOSTILE_SYMBOLS if isinstance(s, str)] + list(UNLISTED_SYMBOLS)
    listed = {s for (s,) in rows(fault_run.data_dir, "SELECT DISTINCT symbol FROM instruments")}
    for path in fault_run.data_dir.rglob("*.parquet"):
        assert not any(s and s in str(path) for s in forbidden), path
        table = pq.read_table(path)
        if "symbol" in table.column_names:
            assert set(table["symbol"].to_pylist()) <= listed, path
    quarantined = "".join(json.dumps(d) for d in quarantine_files(fault_run))
    assert any(json.dumps(s)[1:-1] in quarantined for s in forbidden if s), (
        "the bad_symbol records were quarantined"
    )


# -- secrets ---------------------------------------------------------------------------------------


def strings_in(value: Any) -> list[str]:
    """Every string value of a Parquet table's columns (nested ones included)."""
    if isinstance(value, pa.Table):
        return [s for column in value.columns for s in strings_in(column.to_pylist())]
    if isinstance(value, str):
        return [value]
    if isinstance(value, list | tuple):
        return [s for item in value for s in strings_in(item)]
    if isinstance(value, dict):
        return [s for item in value.values() for s in strings_in(item)]
    return []


def test_the_api_key_appears_in_no_log_line_file_or_repr(fault_run: FaultRun) -> None:
    key = API_KEY
    captured = {record.name.split(".")[0] for record in fault_run.log.records}
    assert {"collector", "httpx", "httpcore"} <= captured, "every layer's log was captured"
    assert any("quarantined" in line for line in fault_run.log.lines)
    leaked = [line for line in fault_run.log.lines if key in line]
    assert leaked == [], leaked[:3]
    leaked = [line for line in fault_run.log.json_lines if key in line]
    assert leaked == [], leaked[:3]
    entries = [json.loads(line) for line in fault_run.log.json_lines]
    assert any("rows" in entry and "job" in entry for entry in entries), "fields were written"
    assert any("error" in entry and "symbol" in entry for entry in entries)
    for record in fault_run.log.records:
        assert key not in repr(record.args) and key not in str(record.msg)
    files = [p for p in fault_run.data_dir.rglob("*") if p.is_file()]
    assert any(p.suffix == ".parquet" for p in files) and any(p.suffix == ".json" for p in files)
    for path in files:
        data = path.read_bytes()
        assert key.encode() not in data, path
        assert base64.b64encode(key.encode()) not in data, path
        if path.suffix == ".parquet":  # compressed: look at the values too
            assert not [s for s in strings_in(pq.read_table(path)) if key in s], path
    with duckdb.connect(str(fault_run.data_dir / catalog.DB_NAME), read_only=True) as con:
        views = con.sql("SELECT sql FROM duckdb_views() WHERE NOT internal").fetchall()
    assert views and not [sql for (sql,) in views if key in sql]
    daemon = fault_run.daemon
    for shown in (fault_run.settings, daemon.client, daemon.ctx, daemon.quarantine):
        assert key not in repr(shown) and key not in str(shown)
    assert key not in fault_run.settings.model_dump_json()
