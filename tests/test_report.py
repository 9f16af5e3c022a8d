"""The coverage report: known gaps show up where they are, complete series show none, the
page opens in headless Chromium with every section visible and no broken image.

Chromium tests skip when /usr/bin/chromium (Debian's ``chromium``) or playwright is
missing, and fail instead under ``JEX_REQUIRE_BROWSER=1`` (``.ci/run`` sets it, and
``make test`` installs chromium when it runs as root).
"""

from __future__ import annotations

import datetime as dt
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from click.testing import CliRunner

from collector import config, datasets
from collector.cli import main
from collector.read import catalog
from collector.report import EmptyArchiveError, generate, make_report, page, series
from collector.report.model import DAY_MS, HOUR_MS, Report, Window, default_window
from collector.storage import compaction
from collector.storage.writer import ArchiveWriter

CHROMIUM = Path("/usr/bin/chromium")
#: The flags this machine's headless Chromium needs (no sandbox as root; no calls out).
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

T = int(dt.datetime(2026, 11, 20, tzinfo=dt.UTC).timestamp() * 1000)
S = 1_000
M = 60_000


def at(hours: int, minutes: int = 0, seconds: int = 0) -> int:
    return T + hours * HOUR_MS + minutes * M + seconds * S


def rows(dataset: str, times: list[int], **columns: Any) -> pa.Table:
    """A table of ``dataset`` at ``times`` (its time column); columns not given get a
    constant of their type."""
    spec = datasets.get(dataset)
    n = len(times)
    defaults = {pa.float64(): 100.0, pa.int64(): 1, pa.string(): "x", pa.bool_(): True}
    data: dict[str, list[Any]] = {}
    for column in spec.columns:
        if column.name in columns:
            value = columns[column.name]
            data[column.name] = value if isinstance(value, list) else [value] * n
        elif column.type == datasets.TIMESTAMP:  # the time column and the others
            data[column.name] = times
        else:
            data[column.name] = [defaults.get(column.type, 0)] * n
    return pa.table(data, schema=spec.schema)


def every(start: int, end: int, step: int, skip: tuple[int, int] | None = None) -> list[int]:
    return [t for t in range(start, end, step) if skip is None or not skip[0] <= t < skip[1]]


@pytest.fixture(scope="module")
def gap_archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Six hours (2026-11-20 00:00 to 06:00) with one known gap in each of four datasets
    and a complete twin series beside each."""
    data_dir = tmp_path_factory.mktemp("gap-archive")
    writer = ArchiveWriter(data_dir)
    six = (T, at(6))
    # book_ticker every 10 s; BTCUSDT silent from 02:00 to 03:30.
    writer.add(
        "book_ticker",
        rows(
            "book_ticker", every(*six, 10 * S, (at(2), at(3, 30))), market="spot", symbol="BTCUSDT"
        ),
    )
    writer.add(
        "book_ticker", rows("book_ticker", every(*six, 10 * S), market="spot", symbol="ETHUSDT")
    )
    # Trades with ids, one every 2 s; ids 2101-2400 (01:10:00-01:19:58) missing.
    times = every(*six, 2 * S)
    ids = list(range(1, len(times) + 1))
    kept = [i for i in range(len(ids)) if not 2101 <= ids[i] <= 2400]
    writer.add(
        "trades",
        rows(
            "trades",
            [times[i] for i in kept],
            market="spot",
            symbol="BTCUSDT",
            trade_id=[ids[i] for i in kept],
            price=[64_000.0 + (i % 50) for i in kept],
        ),
    )
    # Trades without ids (recent trades), every 5 s; none from 04:00 to 05:10.
    eth = every(*six, 5 * S, (at(4), at(5, 10)))
    writer.add(
        "trades",
        rows("trades", eth, market="spot", symbol="ETHUSDT", trade_id=None, is_buyer_maker=None),
    )
    # 1m klines; 03:00-03:09 missing.
    opens = every(*six, M, (at(3), at(3, 10)))
    writer.add(
        "klines",
        rows(
            "klines",
            opens,
            market="spot",
            symbol="BTCUSDT",
            interval="1m",
            close_time=[o + M - 1 for o in opens],
        ),
    )
    # Funding every hour, ids 1-6 with 4 missing; ETHUSDT complete.
    writer.add(
        "funding_rate",
        rows(
            "funding_rate",
            [T + i * HOUR_MS for i in (0, 1, 2, 4, 5)],
            market="contract",
            symbol="BTCUSDT",
            id=[1, 2, 3, 5, 6],
            funding_rate=[0.0001, 0.0002, -0.0001, 0.0003, 0.0001],
        ),
    )
    writer.add(
        "funding_rate",
        rows(
            "funding_rate",
            [T + i * HOUR_MS for i in range(6)],
            market="contract",
            symbol="ETHUSDT",
            id=[1, 2, 3, 4, 5, 6],
            funding_rate=[0.0001, 0.00005, 0.0, -0.00005, 0.0001, 0.00015],
        ),
    )
    # Depth once a minute (for the spot price chart): one level a side.
    snapshots = every(*six, M)
    writer.add(
        "depth",
        rows(
            "depth",
            snapshots * 2,
            market="spot",
            symbol="BTCUSDT",
            side=["bid"] * len(snapshots) + ["ask"] * len(snapshots),
            level=0,
            price=[63_990.0] * len(snapshots) + [64_010.0] * len(snapshots),
            update_id=list(range(len(snapshots))) * 2,
        ),
    )
    assert writer.flush().errors == []
    return data_dir


def gap_settings(data_dir: Path) -> config.Settings:
    return config.from_mapping(
        {
            "storage": {"data_dir": str(data_dir)},
            "jobs": {
                "book_ticker": {"every": "10s", "markets": ["spot"]},
                "depth": {"every": "1m", "markets": ["spot"]},
                "trades": {"every": "10s"},
                "klines": {"every": "1m", "intervals": ["1m"]},
                "funding_rate": {"every": "5m", "markets": ["contract"]},
                "avg_price": {"every": "1m"},  # enabled, never collected: flagged
            },
        },
        source="<test>",
        environ={},
    )


@pytest.fixture(scope="module")
def gap_report(gap_archive: Path) -> Report:
    return make_report(gap_archive, settings=gap_settings(gap_archive))


def coverage_of(report: Report, dataset: str) -> Any:
    return next(c for c in report.coverage if c.dataset == dataset)


def row_of(report: Report, dataset: str, symbol: str) -> Any:
    return next(r for r in coverage_of(report, dataset).rows if r.symbol == symbol)


# -- coverage -------------------------------------------------------------------------------


def test_a_silent_stretch_of_snapshots_is_one_gap_and_red_cells(gap_report: Report) -> None:
    book = coverage_of(gap_report, "book_ticker")
    assert gap_report.window.by == "hour" and gap_report.window.cells == 6
    assert [(g.symbol, g.from_ms, g.to_ms) for g in book.gaps] == [
        ("BTCUSDT", at(1, 59, 50), at(3, 30))
    ]
    assert "1 h 30 min" in book.gaps[0].detail
    btc = row_of(gap_report, "book_ticker", "BTCUSDT")
    assert btc.fraction[:2] == [1.0, 1.0] and btc.fraction[4:] == [1.0, 1.0]
    assert btc.fraction[2] == 0.0
    assert btc.fraction[3] == pytest.approx(0.5, abs=0.01)
    assert btc.gap_cells == {2, 3}  # not 1: the silence starts 10 s before 02:00
    eth = row_of(gap_report, "book_ticker", "ETHUSDT")
    assert eth.fraction == [1.0] * 6 and not eth.gap_cells


def test_a_hole_in_trade_ids_is_listed_with_its_count(gap_report: Report) -> None:
    trades = coverage_of(gap_report, "trades")
    holes = [g for g in trades.gaps if g.symbol == "BTCUSDT"]
    assert [(g.from_ms, g.to_ms, g.detail) for g in holes] == [
        (at(1, 9, 58), at(1, 20), "300 trade ids missing")
    ]
    btc = row_of(gap_report, "trades", "BTCUSDT")
    assert btc.fraction[1] == pytest.approx(1500 / 1800, abs=0.01)
    assert btc.fraction[0] == btc.fraction[2] == 1.0


def test_an_hour_without_trades_is_a_gap_when_trades_have_no_ids(gap_report: Report) -> None:
    trades = coverage_of(gap_report, "trades")
    empty = [g for g in trades.gaps if g.symbol == "ETHUSDT"]
    assert [(g.from_ms, g.to_ms) for g in empty] == [(at(3, 59, 55), at(5, 10))]
    eth = row_of(gap_report, "trades", "ETHUSDT")
    assert eth.fraction == [1.0, 1.0, 1.0, 1.0, 0.0, 1.0]


def test_missing_klines_and_funding_events_are_gaps(gap_report: Report) -> None:
    klines = coverage_of(gap_report, "klines")
    assert [(g.interval, g.from_ms, g.to_ms, g.detail) for g in klines.gaps] == [
        ("1m", at(3), at(3, 10), "10 1m klines missing")
    ]
    assert row_of(gap_report, "klines", "BTCUSDT").fraction[3] == pytest.approx(50 / 60)
    funding = coverage_of(gap_report, "funding_rate")
    assert [(g.symbol, g.detail) for g in funding.gaps] == [("BTCUSDT", "1 funding event missing")]
    # Hours without a funding event between contiguous ids are complete.
    assert row_of(gap_report, "funding_rate", "ETHUSDT").fraction == [1.0] * 6


def test_the_verdict_counts_gaps_and_names_enabled_datasets_without_rows(
    gap_report: Report,
) -> None:
    assert gap_report.verdict == (
        "5 gaps in 4 datasets (trades, klines, book_ticker, funding_rate); "
        "no rows at all in avg_price"
    )
    assert not gap_report.healthy


def test_the_page_lists_each_gap_under_its_map(gap_report: Report) -> None:
    text = page.render(gap_report, draw=lambda: b"not drawn")
    tables = dict(re.findall(r'<table class="gaps" data-dataset="(\w+)">(.*?)</table>', text))
    assert set(tables) == {"trades", "klines", "book_ticker", "funding_rate"}
    assert re.search(
        r"<td>BTCUSDT</td><td>2026-11-20 01:59:50</td><td>2026-11-20 03:30:00</td>",
        tables["book_ticker"],
    )
    assert "300 trade ids missing" in tables["trades"]
    assert "<td>BTCUSDT 1m</td><td>2026-11-20 03:00:00</td>" in tables["klines"]
    assert "5 gaps in 4 datasets" in text
    assert "http://" not in text and "https://" not in text and "<script" not in text


def test_prices_funding_and_disk_are_read_from_the_archive(gap_report: Report) -> None:
    (chart,) = gap_report.prices  # the only market with trades
    assert (chart.market, chart.symbol) == ("spot", "BTCUSDT")
    series = {s.name: s for s in chart.series}
    assert set(series) == {"mid", "last"}
    assert series["mid"].values == pytest.approx([64_000.0] * len(series["mid"].values))
    assert len(series["last"].times_ms) <= 400
    assert [s.name for s in gap_report.funding.series] == ["BTCUSDT", "ETHUSDT"]
    assert gap_report.funding.series[0].values[:3] == pytest.approx([0.0001, 0.0002, -0.0001])
    on_disk = sum(p.stat().st_size for p in gap_report_files(gap_report))
    assert gap_report.disk.total_bytes == on_disk
    assert set(gap_report.disk.bytes_by_date) == {
        "book_ticker",
        "trades",
        "klines",
        "funding_rate",
        "depth",
    }


def gap_report_files(report: Report) -> list[Path]:
    return list(Path(report.data_dir).glob("*/market=*/date=*/*.parquet"))


def test_disk_use_counts_the_files_the_tables_hold_now(gap_archive: Path, tmp_path: Path) -> None:
    """After a compaction the files it replaced stay on disk until vacuumed; the report
    counts what the views read: the merged files."""
    archive = tmp_path / "archive"
    shutil.copytree(gap_archive, archive)
    writer = ArchiveWriter(archive)  # a second file in the partition of 2026-11-20
    late = every(at(6), at(7), 10 * S)
    writer.add("book_ticker", rows("book_ticker", late, market="spot", symbol="ETHUSDT"))
    assert writer.flush().errors == []
    before = series.disk_use(archive)
    compacted = compaction.compact_archive(archive)
    assert not compacted.errors and compacted.partitions == 1
    after = series.disk_use(archive)
    groups = compacted.groups.values()
    assert before.total_bytes == sum(g.bytes_before for g in groups)
    assert after.total_bytes == sum(g.bytes_after for g in groups)
    assert after.files == compacted.files_after < before.files
    on_disk = sum(p.stat().st_size for p in archive.glob("*/market=*/date=*/*.parquet"))
    assert after.total_bytes < on_disk <= before.total_bytes + after.total_bytes


def test_symbols_are_chosen_by_name_or_market(gap_archive: Path) -> None:
    report = make_report(gap_archive, symbols=["spot/ETHUSDT"])
    assert [(c.market, c.symbol) for c in report.prices] == [("spot", "ETHUSDT")]
    with pytest.raises(LookupError, match=r"NOPE.*spot/BTCUSDT"):
        make_report(gap_archive, symbols=["NOPE"])


def test_an_empty_archive_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(EmptyArchiveError, match="no archive at"):
        make_report(tmp_path / "nowhere")
    with pytest.raises(EmptyArchiveError, match="holds no rows yet"):
        make_report(tmp_path)


def test_a_window_without_rows_is_a_clear_error(gap_archive: Path) -> None:
    with pytest.raises(EmptyArchiveError, match="no rows between 2026-11-21 00:00"):
        make_report(gap_archive, start_ms=T + DAY_MS, end_ms=T + 2 * DAY_MS)


def test_the_window_defaults_to_the_newest_30_days_and_days_above_3() -> None:
    assert default_window(0, 10 * HOUR_MS, None, None) == (0, 10 * HOUR_MS + 1)
    assert default_window(0, 40 * DAY_MS, None, None) == (10 * DAY_MS + 1, 40 * DAY_MS + 1)
    # From the first live snapshot when there is one (before the end), not the history.
    assert default_window(0, 7 * DAY_MS, None, None, 7 * DAY_MS - 3 * M) == (
        7 * DAY_MS - 3 * M,
        7 * DAY_MS + 1,
    )
    assert default_window(0, 40 * DAY_MS, None, None, HOUR_MS)[0] == 10 * DAY_MS + 1
    assert default_window(0, 10 * HOUR_MS, None, 2 * HOUR_MS, 3 * HOUR_MS) == (0, 2 * HOUR_MS)
    assert default_window(0, 10 * HOUR_MS, 5, None, 3 * HOUR_MS) == (5, 10 * HOUR_MS + 1)
    assert Window.choose(0, 3 * DAY_MS).by == "hour"
    assert Window.choose(0, 3 * DAY_MS + 1).by == "day"
    assert Window.choose(0, 2 * HOUR_MS + 1).by == "hour"
    assert Window.choose(0, 2 * HOUR_MS).by == "minute"
    few = Window.choose(T + 30 * S, T + 3 * M + 5 * S)  # a quick start: minutes
    assert (few.by, few.cell_ms, few.origin_ms, few.cells) == ("minute", M, T, 4)
    assert Window.choose(0, 10 * DAY_MS, "hour").cells == 240
    window = Window.choose(90 * M, 5 * HOUR_MS)
    assert (window.origin_ms, window.cells, window.cell_of(5 * HOUR_MS - 1)) == (HOUR_MS, 4, 3)


def test_heat_map_axes_stay_readable_over_a_month() -> None:
    from collector.report.charts import cell_ticks

    for by, span in (
        ("hour", 31 * DAY_MS),
        ("hour", 2 * DAY_MS),
        ("day", 31 * DAY_MS),
        ("minute", 7 * HOUR_MS),
        ("minute", 5 * HOUR_MS + 7 * M),
    ):
        window = Window.choose(T + 5 * HOUR_MS, T + span, by)
        ticks, labels = cell_ticks(window)
        assert 4 <= len(ticks) <= 17, (by, span, labels)
        assert ticks == sorted(ticks) and all(0 <= t <= window.cells for t in ticks)
    _, labels = cell_ticks(Window.choose(T + 30 * S, T + 3 * M + 5 * S))
    assert labels == ["00:00\nNov 20", "00:01", "00:02", "00:03", "00:04"]


# -- a quick start: minutes of snapshots after days of backfilled history ----------------

QUICK = T + 7 * DAY_MS  # collecting began here, 7 days after the oldest backfilled kline


@pytest.fixture(scope="module")
def quick_archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Seven days of 1m klines and of funding (every 10 min, two contracts) backfilled,
    then three minutes of live snapshots (book_ticker every 10 s, from QUICK + 20 s)."""
    data_dir = tmp_path_factory.mktemp("quick-archive")
    writer = ArchiveWriter(data_dir)
    end = QUICK + 3 * M + 20 * S
    opens = every(T, end - M, M)
    writer.add(
        "klines",
        rows(
            "klines",
            opens,
            market="spot",
            symbol="BTCUSDT",
            interval="1m",
            close_time=[o + M - 1 for o in opens],
        ),
    )
    events = every(T, end, 10 * M)
    for symbol, sign in (("BTCUSDT", 1), ("ETHUSDT", -1)):
        writer.add(
            "funding_rate",
            rows(
                "funding_rate",
                events,
                market="contract",
                symbol=symbol,
                id=list(range(1, len(events) + 1)),
                funding_rate=[sign * 0.0001 * (1 + i % 3) for i in range(len(events))],
            ),
        )
    writer.add(
        "book_ticker",
        rows("book_ticker", every(QUICK + 20 * S, end, 10 * S), market="spot", symbol="BTCUSDT"),
    )
    assert writer.flush().errors == []
    return data_dir


def test_a_quick_start_report_starts_at_the_first_snapshot(quick_archive: Path) -> None:
    report = make_report(quick_archive)
    window = report.window
    assert report.archive_first_ms == T
    assert window.start_ms == QUICK + 20 * S  # the first book_ticker, not the first kline
    assert (window.by, window.cells) == ("minute", 4)  # 00:00 to 00:03, one column a minute
    assert "from the first live snapshot" in report.window_rule
    assert "left out (an earlier --start shows it)" in report.window_rule
    for dataset in ("book_ticker", "klines"):
        (row,) = coverage_of(report, dataset).rows
        assert row.first_ms >= window.start_ms
        assert all(f == 1.0 for f in row.fraction if f is not None), (dataset, row.fraction)
    # Funding is history: its chart reaches back (the newest 30 days) to the window's end.
    funding = report.funding
    assert [s.name for s in funding.series] == ["BTCUSDT", "ETHUSDT"]
    assert (funding.start_ms, funding.end_ms) == (T, window.end_ms)
    text = page.render(report, draw=lambda: b"not drawn")
    assert "from the first live snapshot" in text
    assert 'alt="funding rate per contract: BTCUSDT, ETHUSDT"' in text


def test_backfilled_history_stays_one_option_away(quick_archive: Path) -> None:
    history = make_report(quick_archive, since_history=True)
    assert history.window.start_ms == T and history.window.by == "day"
    assert history.funding.start_ms == T
    assert "backfilled history included" in history.window_rule
    asked = make_report(quick_archive, start_ms=QUICK - 3 * HOUR_MS)
    assert (asked.window.start_ms, asked.window.by) == (QUICK - 3 * HOUR_MS, "hour")
    assert asked.window_rule == "from --start" and asked.funding.start_ms == QUICK - 3 * HOUR_MS


def test_funding_has_one_panel_per_contract(quick_archive: Path) -> None:
    from collector.report import charts

    funding = make_report(quick_archive).funding
    figure = charts.funding_plot(funding)
    panels = [a for a in figure.axes if a.get_visible()]
    assert [a.get_title(loc="left") for a in panels] == ["BTCUSDT", "ETHUSDT"]
    for axes, one in zip(panels, funding.series, strict=True):
        (line,) = [ln for ln in axes.get_lines() if len(ln.get_xdata()) > 2]  # not the zero line
        assert max(line.get_ydata()) == pytest.approx(max(one.values) * 100)
    assert panels[0].get_ylim() != panels[1].get_ylim()  # each its own scale
    assert charts.funding_figure(funding).startswith(b"\x89PNG")
    many = type(funding)([type(funding.series[0])(f"C{i}", [T], [0.0001]) for i in range(5)])
    assert sum(a.get_visible() for a in charts.funding_plot(many).axes) == 5


def test_the_report_command_writes_the_page_atomically(gap_archive: Path, tmp_path: Path) -> None:
    out = tmp_path / "report.html"
    out.write_text("old page")
    result = CliRunner().invoke(
        main,
        [
            "report",
            "--data-dir",
            str(gap_archive),
            "--out",
            str(out),
            "--start",
            "2026-11-20T01:00",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "gaps" in result.output and str(out) in result.output
    text = out.read_text()
    assert text.startswith("<!DOCTYPE html>") and "2026-11-20 01:00:00 to" in text
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.html"]  # no temp left
    empty = CliRunner().invoke(main, ["report", "--data-dir", str(tmp_path), "--out", str(out)])
    assert empty.exit_code == 2 and "no archive at" in empty.output
    unknown = CliRunner().invoke(
        main, ["report", "--data-dir", str(gap_archive), "--out", str(out), "--symbol", "NOPE"]
    )
    assert unknown.exit_code == 2 and "--symbol NOPE" in unknown.output


# -- in the browser -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """Headless Debian Chromium driven by playwright (never a downloaded browser)."""
    required = os.environ.get("JEX_REQUIRE_BROWSER") == "1"
    missing = None
    if not CHROMIUM.exists():
        missing = (
            f"{CHROMIUM} is missing: install Debian's chromium "
            "(apt-get install --no-install-recommends chromium; make test does it as root)"
        )
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        missing = "playwright is not installed: pip install -e '.[dev]'"
    if missing:
        if required:
            pytest.fail(f"JEX_REQUIRE_BROWSER=1 but {missing}")
        pytest.skip(missing)
    profile = tmp_path_factory.mktemp("chromium-profile")
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(profile),
            executable_path=str(CHROMIUM),
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1400, "height": 1000},
        )
        try:
            yield context
        finally:
            context.close()


_INSPECT = """() => {
    const visible = (el) => {
        const box = el.getBoundingClientRect();
        const style = getComputedStyle(el);
        return box.width > 0 && box.height > 0 && style.visibility !== 'hidden'
            && style.display !== 'none';
    };
    return {
        headings: [...document.querySelectorAll('h1, h2, h3')]
            .filter(visible).map((h) => h.textContent.trim()),
        images: document.images.length,
        broken: [...document.images]
            .filter((i) => !(i.complete && i.naturalWidth > 0 && visible(i)))
            .map((i) => i.alt),
        svgs: [...document.querySelectorAll('svg')].filter((s) => !visible(s)).length,
        alts: [...document.images].map((i) => i.alt),
        window: [...document.querySelectorAll('table.facts tr')]
            .map((r) => r.textContent).filter((t) => t.startsWith('Window')).join(''),
    };
}"""


def open_page(browser: Any, html_file: Path, screenshot: Path) -> dict[str, Any]:
    """Load the page, screenshot all of it, and report its visible headings and any image
    that did not decode."""
    tab = browser.new_page()
    try:
        tab.goto(html_file.as_uri(), wait_until="load")
        found: dict[str, Any] = tab.evaluate(_INSPECT)
        tab.screenshot(path=str(screenshot), full_page=True)
    finally:
        tab.close()
    return found


def pixel_spread(png: Path) -> float:
    from PIL import Image, ImageStat  # pillow comes with matplotlib

    with Image.open(png) as image:
        return max(ImageStat.Stat(image.convert("RGB")).stddev)


def test_the_report_of_a_simulator_archive_renders_in_chromium(
    sim_archive: Path, browser: Any, tmp_path: Path
) -> None:
    out = tmp_path / "report.html"
    from tests.conftest import fast_settings

    report = generate(sim_archive, out, settings=fast_settings("http://127.0.0.1:1", sim_archive))
    # The window starts at the first live snapshot, not at the backfilled history, in
    # minute columns (the daemon ran for seconds).
    snapshot_datasets = [n for n, d in datasets.DATASETS.items() if d.kind == "snapshot"]
    with catalog.connect(sim_archive) as connection:
        firsts = [
            connection.execute(f"SELECT epoch_ms(min(received_at)) FROM {name}").fetchone()
            for name in snapshot_datasets
        ]
        contracts = connection.execute(
            "SELECT DISTINCT symbol FROM funding_rate ORDER BY symbol"
        ).fetchall()
    assert report.window.start_ms == min(int(f[0]) for f in firsts if f and f[0] is not None)
    assert report.archive_first_ms < report.window.start_ms
    assert report.window.by == "minute" and report.window.cells <= 3
    assert report.healthy, report.verdict  # paged series quiet for minutes are no fault
    # One funding panel per contract.
    names = [c[0] for c in contracts]
    assert len(names) >= 2 and sorted(s.name for s in report.funding.series) == names
    from collector.report.charts import funding_plot

    panels = [a for a in funding_plot(report.funding).axes if a.get_visible()]
    assert sorted(a.get_title(loc="left") for a in panels) == names
    screenshot = tmp_path / "report.png"
    found = open_page(browser, out, screenshot)
    print(f"report screenshot: {screenshot}")
    headings = found["headings"]
    for section in ("jex-collector coverage report", "Coverage", "Prices", "Funding rate"):
        assert section in headings
    assert "Archive size" in headings
    assert [h for h in headings if h in datasets.DATASETS] == list(datasets.DATASETS)
    assert {h.split(":")[0] for h in headings if ":" in h} >= {"spot", "contract"}
    # One heat map per dataset with rows in the window (every snapshot dataset at
    # least), a price chart per market, funding, disk.
    maps = [c.dataset for c in report.coverage if not c.empty]
    assert set(maps) >= set(snapshot_datasets)
    markets = {c.market for c in report.prices if c.series}
    assert found["images"] == len(maps) + len(markets) + 1 + 1
    assert found["broken"] == [] and found["svgs"] == 0
    assert (
        f"funding rate per contract: {', '.join(s.name for s in report.funding.series)}"
        in (found["alts"])
    )
    assert "from the first live snapshot" in found["window"]
    assert screenshot.stat().st_size > 50_000
    assert pixel_spread(screenshot) > 20


def test_a_broken_image_is_caught(gap_report: Report, browser: Any, tmp_path: Path) -> None:
    text = page.render(gap_report)
    first = text.index('src="data:image/png;base64,')
    end = text.index('"', first + 5)
    broken = text[:first] + 'src="data:image/png;base64,iVBORw0KGgoAAAA="' + text[end + 1 :]
    (tmp_path / "broken.html").write_text(broken)
    found = open_page(browser, tmp_path / "broken.html", tmp_path / "broken.png")
    assert found["broken"] == ["coverage heat map of trades"]
    blank = tmp_path / "blank.html"
    blank.write_text("<!DOCTYPE html><html><body></body></html>")
    open_page(browser, blank, tmp_path / "blank.png")
    assert pixel_spread(tmp_path / "blank.png") == 0


def test_the_report_command_starts_at_the_first_snapshot_unless_since_history(
    sim_archive: Path, tmp_path: Path
) -> None:
    live, history = tmp_path / "live.html", tmp_path / "history.html"
    for out, extra in ((live, []), (history, ["--since-history"])):
        result = CliRunner().invoke(
            main, ["report", "--data-dir", str(sim_archive), "--out", str(out), *extra]
        )
        assert result.exit_code == 0, result.output
    assert "from the first live snapshot" in live.read_text()
    assert "from the first live snapshot" not in history.read_text()
