"""The disk estimate: rows per day from the schedule, bytes per row as measured, and
what the plan says to change when a schedule does not fit."""

from __future__ import annotations

import asyncio
import json
import logging
import shutil
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import httpx
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from collector import config, datasets
from collector.cli import main
from collector.collect.daemon import Daemon
from collector.config import JobSettings
from collector.exchange.client import JexClient
from collector.plan import disk
from collector.plan.schedule import Plan, make_plan
from collector.sim import SimExchange, SimServer
from collector.storage import compaction, delta
from tests.conftest import fast_settings
from tests.test_plan import LISTED, count, shipped

HOUR_MS = 3_600_000


def assumed() -> disk.TradeCounts:
    return disk.assumed_trade_counts(LISTED)


def estimate(
    schedule: config.Settings, plan: Plan, trades: disk.TradeCounts, *, key: bool = True
) -> dict[str, disk.JobDisk]:
    result = disk.estimate(schedule, plan, count, trades, has_api_key=key)
    return {job.job: job for job in result.jobs}


def test_snapshot_rows_per_day_follow_from_the_schedule() -> None:
    schedule = shipped()
    plan = make_plan(schedule, count, has_api_key=True, weight_limit=1200)
    jobs = estimate(schedule, plan, assumed())
    # 13 symbols, 2 sides x 20 levels, every 10 s: 8,640 polls a day.
    assert jobs["depth"].rows_per_day == 13 * 2 * 20 * 8640
    assert jobs["book_ticker"].rows_per_day == 13 * 8640
    assert jobs["ticker_24hr"].rows_per_day == 13 * 1440
    assert jobs["indices_price"].rows_per_day == 2 * 8640
    # klines [1m, 1h] whatever the poll: 1,440 + 24 a symbol.
    assert jobs["klines"].rows_per_day == 13 * (1440 + 24)
    # One flush file per market every 30 s for jobs that poll at least that often.
    assert jobs["depth"].flush_files_per_day == 3 * 2880
    assert jobs["ticker_24hr"].flush_files_per_day == 3 * 1440
    assert jobs["depth"].compacted_files_per_day == 3


def test_a_stretched_schedule_is_estimated_at_its_planned_intervals() -> None:
    schedule = shipped()
    plan = make_plan(schedule, count, has_api_key=True, weight_limit=700)
    depth = next(load for load in plan.loads if load.job == "depth")
    assert depth.planned_every > depth.every
    rows = estimate(schedule, plan, assumed())["depth"].rows_per_day
    assert rows == pytest.approx(13 * 2 * 20 * 86_400 / depth.planned_every)


def test_trade_rows_are_the_24h_counts_and_without_a_key_at_most_60_a_poll() -> None:
    schedule = shipped()
    counts = disk.TradeCounts({"spot": [100_000, 1_000_000, 0], "option": [500] * 8}, "given")
    plan = make_plan(schedule, count, has_api_key=True, weight_limit=1200)
    assert estimate(schedule, plan, counts)["trades"].rows_per_day == 1_104_000
    # Recent trades: 60 a poll every 10 s is 518,400 a day, whatever happens beyond.
    keyless = make_plan(schedule, count, has_api_key=False, weight_limit=1200)
    rows = estimate(schedule, keyless, counts, key=False)["trades"].rows_per_day
    assert rows == 100_000 + 518_400 + 4_000


def test_days_until_full_keeps_a_day_of_flushes_aside_and_warns_within_a_week() -> None:
    schedule = shipped()
    plan = make_plan(schedule, count, has_api_key=True, weight_limit=1200)
    roomy = disk.estimate(schedule, plan, count, assumed(), has_api_key=True, free_bytes=10**12)
    assert roomy.days_until_full is not None and roomy.days_until_full > 1000
    assert not roomy.notes
    free = int(roomy.flush_bytes_per_day + 3 * roomy.compacted_bytes_per_day)
    tight = disk.estimate(schedule, plan, count, assumed(), has_api_key=True, free_bytes=free)
    assert tight.days_until_full == pytest.approx(3.0)
    assert any("fills in 3.0 days" in note for note in tight.notes)


def test_free_space_is_read_at_the_nearest_existing_parent(tmp_path: Path) -> None:
    where, free = disk.free_space(tmp_path / "not" / "yet" / "data")
    assert where == tmp_path.resolve()
    # The same file system (other processes write to it meanwhile).
    assert abs(free - shutil.disk_usage(tmp_path).free) < 10**9


def test_the_bytes_table_matches_an_archive_the_daemon_wrote(
    sim_archive: Path, tmp_path: Path
) -> None:
    """The measured constants against the session's simulator archive (flushes every 2 s,
    depth limit 5): per dataset, files x bytes per file + rows x bytes per row within a
    factor of 2 of the bytes on disk once compacted, and of 3 as flushed (a flush's bytes
    per row fall as its files grow: the table's are for 30 s flushes of the default
    schedule, the archive's first flush holds an hour of backfilled trades). A change to
    the Parquet options that moves the sizes this much needs bench/disk.py run again."""
    flushed = _sizes(sim_archive)
    copy = tmp_path / "archive"
    shutil.copytree(sim_archive, copy, symlinks=True)
    report = compaction.compact_archive(copy)
    assert not report.errors
    compacted = _sizes(copy)
    checked = 0
    for name, (files, rows, size) in flushed.items():
        sizes = disk.BYTES[name]
        predicted = files * sizes.flush_file + rows * sizes.flush_row
        assert 1 / 3 < size / predicted < 3.0, (name, "flushed", files, rows, size, predicted)
        files, rows, size = compacted[name]
        predicted = files * sizes.compacted_file + rows * sizes.compacted_row
        assert 0.5 < size / predicted < 2.0, (name, "compacted", files, rows, size, predicted)
        checked += 1
    assert checked == len(datasets.DATASETS)
    assert set(disk.BYTES) == set(datasets.DATASETS)


def _sizes(data_dir: Path) -> dict[str, tuple[int, int, int]]:
    """(files, rows, bytes) per dataset, as readers see the archive: the files of each
    table's latest version (a compaction's replaced files stay on disk for an hour)."""
    found: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])
    for name, table in delta.tables(data_dir):
        for file in delta.files(table, name):
            entry = found[name]
            entry[0] += 1
            entry[1] += pq.read_metadata(delta.file_path(data_dir, name, file.path)).num_rows
            entry[2] += file.size
    return {name: (f, r, b) for name, (f, r, b) in found.items()}


# -- trade counts from the exchange -----------------------------------------------------------


def test_trade_counts_are_the_last_24_closed_hours_of_each_symbol(
    sim_server: SimServer, tmp_path: Path
) -> None:
    exchange = sim_server.exchange
    names = {"spot": ["BTCUSDT", "JEXUSDT"], "contract": ["ETHUSDT"]}

    async def fetch() -> disk.TradeCounts:
        async with JexClient.from_settings(fast_settings(sim_server.base_url, tmp_path)) as client:
            return await disk.fetch_trade_counts(client, names)

    counts = asyncio.run(fetch())
    hour = exchange.now_ms() // HOUR_MS * HOUR_MS
    for market, symbols in names.items():
        truth = [exchange.stats(market, s, hour - 24 * HOUR_MS, hour).count for s in symbols]
        assert list(counts.counts[market]) == truth
    assert counts.measured and "24 h" in counts.source


def test_without_the_exchanges_counts_the_plan_says_it_assumed_them(tmp_path: Path) -> None:
    def reject(request: httpx.Request) -> httpx.Response:
        return httpx.Response(400, json={"code": -1121, "msg": "Invalid symbol."})

    async def fetch() -> disk.TradeCounts:
        schedule = fast_settings("http://exchange.invalid", tmp_path)
        transport = httpx.MockTransport(reject)
        async with JexClient.from_settings(schedule, transport=transport) as client:
            return await disk.trade_counts_or_assumed(client, {"spot": ["BTCUSDT"]})

    counts = asyncio.run(fetch())
    assert not counts.measured
    assert counts.counts == {"spot": [disk.ASSUMED_TRADES_PER_DAY["spot"]]}
    assert counts.source.startswith("assumed") and "failed" in counts.source


# -- what to change -----------------------------------------------------------------------------


def _with_every(schedule: config.Settings, job: str, every: float) -> config.Settings:
    jobs = dict(schedule.jobs)
    jobs[job] = jobs[job].model_copy(update={"every": every})
    return schedule.model_copy(update={"jobs": jobs})


def _fewer(schedule: config.Settings, job: str, symbols: int) -> Callable[[JobSettings, str], int]:
    """``count`` with ``job`` polling ``symbols`` symbols in all, its first markets first."""
    target = schedule.jobs[job]

    def counted(settings_job: JobSettings, market: str) -> int:
        if settings_job is not target:
            return count(settings_job, market)
        before = sum(LISTED[m] for m in target.markets[: target.markets.index(market)])
        return max(0, min(LISTED[market], symbols - before))

    return counted


@settings(max_examples=40, deadline=None)
@given(
    limit=st.integers(60, 1100),
    raw=st.none() | st.integers(300, 6000),
    key=st.booleans(),
)
def test_every_suggestion_makes_the_schedule_fit_when_applied(
    limit: int, raw: int | None, key: bool
) -> None:
    schedule = shipped()
    plan = make_plan(schedule, count, has_api_key=key, weight_limit=limit, raw_limit=raw)
    if plan.fits:
        assert not plan.suggestions
        return
    assert plan.suggestions, plan.notes
    options = {"has_api_key": key, "weight_limit": limit, "raw_limit": raw}
    together = [s for s in plan.suggestions if s.together]
    if together:
        changed = schedule
        for suggestion in together:
            changed = _with_every(changed, suggestion.job, suggestion.fit_every)
        assert make_plan(changed, count, **options).fits
    for suggestion in plan.suggestions:
        if suggestion.together:
            continue
        assert suggestion.fit_every > suggestion.every
        changed = _with_every(schedule, suggestion.job, suggestion.fit_every)
        assert make_plan(changed, count, **options).fits, suggestion.text()
        if suggestion.fit_symbols is not None:
            fewer = _fewer(schedule, suggestion.job, suggestion.fit_symbols)
            assert make_plan(schedule, fewer, **options).fits, suggestion.text()
    if plan.fit_fraction is not None:
        exchange = schedule.exchange.model_copy(update={"weight_fraction": plan.fit_fraction})
        raised = schedule.model_copy(update={"exchange": exchange})
        assert make_plan(raised, count, **options).fits


def test_the_advice_names_the_heaviest_job_first_in_plain_words() -> None:
    # Budget 530, planned to 95%: 503.4 a minute (after the clock syncs) for 580.1 wanted.
    plan = make_plan(shipped(), count, has_api_key=True, weight_limit=663)
    assert [s.job for s in plan.suggestions] == ["trades", "depth"]
    advice = next(note for note in plan.notes if note.startswith("to fit without stretching"))
    # trades (390 a minute) down to 313.8: every 12.43 s, or 10.5 of its 13 symbols; depth
    # (78 a minute, 1 per symbol and poll) down to 1.8: every 433 s.
    assert "trades: every 10s -> 15s, or 13 -> 10 symbols; depth: every 10s -> 10m" in advice
    assert any("exchange.weight_fraction from 0.8 to 0.93" in note for note in plan.notes)


def test_a_schedule_that_fits_with_little_room_gets_a_note() -> None:
    roomy = make_plan(shipped(), count, has_api_key=True, weight_limit=1200)
    assert roomy.fits and not roomy.notes
    close = make_plan(shipped(), count, has_api_key=True, weight_limit=900)
    assert close.fits and not close.suggestions
    (note,) = close.notes
    # 580.1 of 683.9; a symbol more costs 40.2 a minute (trades 30, depth 6, klines 2, ...).
    assert note.startswith("close to the limit: the schedule takes 85% of what it may plan for")
    assert "room for about 2 more symbol(s)" in note


# -- the command and the daemon -------------------------------------------------------------------


def test_plan_json_carries_rows_bytes_and_suggestions(tmp_path: Path) -> None:
    tight = tmp_path / "tight.yaml"
    tight.write_text(
        Path("schedules.yaml").read_text().replace("every: 10s, markets", "every: 1s, markets")
    )
    result = CliRunner().invoke(
        main, ["plan", "--sim", "--json", "--config", str(tight), "--data-dir", str(tmp_path)]
    )
    assert result.exit_code == 1, result.output
    payload = json.loads(result.output)
    assert not payload["fits"]
    assert payload["suggestions"] and payload["suggestions"][0]["suggested_every_s"] > 1
    jobs = {job["job"]: job for job in payload["disk"]["jobs"]}
    assert jobs["depth"]["rows_per_day"] > 0 and jobs["trades"]["compacted_bytes_per_day"] > 0
    assert payload["disk"]["trade_rate_source"].startswith("the exchange's trade counts")
    assert abs(payload["disk"]["free_bytes"] - shutil.disk_usage(tmp_path).free) < 10**9
    assert payload["disk"]["data_dir"] == str(tmp_path)


def test_the_daemon_logs_the_disk_estimate_at_start(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    exchange = SimExchange(seed=3, history_days=1)
    caplog.set_level(logging.INFO, logger="collector.collect.daemon")
    with SimServer(exchange) as server:
        asyncio.run(Daemon(fast_settings(server.base_url, tmp_path)).run(1.0, handle_signals=False))
    messages = [r.getMessage() for r in caplog.records]
    start = next((i for i, m in enumerate(messages) if "schedule" in m), None)
    assert start is not None, messages
    table = "\n".join(messages[start:])  # the table comes one line a record
    assert "disk per day" in table and "compacted MB/day" in table
    assert "the exchange's trade counts of the last 24 h" in table
    assert f"free at {tmp_path}" in table
