"""The report as one self-contained HTML page: inline CSS, images as base64 PNG ``data:``
URLs, no script and no external URL, so it opens anywhere, offline, from a mail or a
ticket. Every text from the archive (symbols, paths) is HTML-escaped.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Callable, Sequence

from collector import datasets
from collector.report import charts
from collector.report.model import (
    DatasetCoverage,
    Gap,
    PriceChart,
    Report,
    format_duration,
    to_datetime,
)

#: Gaps listed under each heat map (the longest; all are counted).
GAPS_LISTED = 12

_CSS = """
body { font-family: "DejaVu Sans", "Segoe UI", Helvetica, Arial, sans-serif; margin: 0;
       color: #212529; background: #f8f9fa; }
main { max-width: 1300px; margin: 0 auto; padding: 24px 32px 64px; background: #fff; }
h1 { font-size: 34px; margin: 8px 0 12px; }
h2 { font-size: 28px; margin: 48px 0 8px; padding-bottom: 6px; border-bottom: 3px solid #343a40; }
h3 { font-size: 22px; margin: 32px 0 6px; }
.verdict { font-size: 22px; font-weight: bold; padding: 12px 16px; border-radius: 6px;
           margin: 8px 0 16px; }
.verdict.good { background: #d3f9d8; color: #1a6b2c; border-left: 8px solid #1a9641; }
.verdict.bad { background: #ffe3e3; color: #a61e1e; border-left: 8px solid #d7191c; }
table { border-collapse: collapse; font-size: 14px; margin: 8px 0; }
th, td { text-align: left; padding: 4px 12px 4px 0; border-bottom: 1px solid #dee2e6; }
th { color: #495057; }
td.num, th.num { text-align: right; }
table.facts th { width: 150px; }
img.chart { display: block; max-width: 100%; height: auto; margin: 6px 0; }
.caption { color: #495057; font-size: 14px; margin: 4px 0 10px; max-width: 1100px; }
.meta { color: #495057; font-size: 15px; margin: 0 0 4px; }
.legend { position: sticky; top: 0; background: #fff; padding: 8px 0; margin: 0;
          border-bottom: 1px solid #dee2e6; z-index: 1; font-size: 14px; }
.key { margin-right: 18px; white-space: nowrap; }
.swatch { display: inline-block; width: 14px; height: 14px; border-radius: 3px;
          margin-right: 8px; vertical-align: baseline; }
.ok { color: #1a6b2c; font-weight: bold; }
.bad { color: #a61e1e; font-weight: bold; }
.none { color: #868e96; font-style: italic; }
nav a { margin-right: 18px; font-size: 16px; }
table.gaps td:first-child { font-weight: bold; }
"""


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def _time(ms: int) -> str:
    return to_datetime(ms).strftime("%Y-%m-%d %H:%M:%S")


def _size(count: int) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if count >= scale:
            return f"{count / scale:,.1f} {unit}"
    return f"{count:,} bytes"


def _age(ms: int) -> str:
    return format_duration(ms) if ms >= 1000 else "not"


def _img(png: bytes, alt: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return f'<img class="chart" alt="{_e(alt)}" src="data:image/png;base64,{data}">'


def render(report: Report, *, draw: Callable[..., bytes] | None = None) -> str:
    """The page. ``draw`` is only for tests (it replaces every chart's PNG)."""
    body = [
        _header(report),
        _coverage(report, draw),
        _prices(report.prices, draw),
        _funding(report, draw),
        _disk(report, draw),
    ]
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>jex-collector coverage report: {_e(report.data_dir)}</title>\n"
        f"<style>{_CSS}</style>\n</head>\n<body>\n<main>\n"
        + "\n".join(body)
        + "\n</main>\n</body>\n</html>\n"
    )


def _picture(draw: Callable[..., bytes] | None, make: Callable[[], bytes]) -> bytes:
    return draw() if draw is not None else make()


def _header(report: Report) -> str:
    window = report.window
    good = "good" if report.healthy else "bad"
    facts = [
        ("Archive", _e(report.data_dir)),
        (
            "Window",
            f"{_e(_time(window.start_ms))} to {_e(_time(window.end_ms))} UTC "
            f"({_e(format_duration(window.end_ms - window.start_ms))}, one heat-map column "
            f"per {window.by}){'; ' + _e(report.window_rule) if report.window_rule else ''}",
        ),
        (
            "Archive spans",
            f"{_e(_time(report.archive_first_ms))} to {_e(_time(report.archive_last_ms))} UTC "
            f"(the newest row is {_e(_age(report.generated_ms - report.archive_last_ms))} "
            "older than this report)",
        ),
        ("Generated", f"{_e(_time(report.generated_ms))} UTC"),
        (
            "Size on disk",
            f"{_e(_size(report.disk.total_bytes))} in {report.disk.files:,} files "
            "(the files the tables hold now)",
        ),
    ]
    rows = "".join(f"<tr><th>{name}</th><td>{value}</td></tr>" for name, value in facts)
    return (
        "<header>\n<h1>jex-collector coverage report</h1>\n"
        f'<p class="verdict {good}" id="verdict">{_e(report.verdict.capitalize())}</p>\n'
        f'<table class="facts">{rows}</table>\n'
        '<nav><a href="#coverage">Coverage</a><a href="#prices">Prices</a>'
        '<a href="#funding">Funding rate</a><a href="#size">Archive size</a></nav>\n'
        "</header>"
    )


# -- coverage -------------------------------------------------------------------------------


def _coverage(report: Report, draw: Callable[..., bytes] | None) -> str:
    parts = [
        '<section id="coverage">\n<h2>Coverage</h2>',
        '<p class="caption">Per dataset, one row per market and symbol (and kline '
        f"interval), one column per UTC {report.window.by}, the same columns on every map "
        "(an outage shows as a column down the page): the colour is the share of the rows "
        "expected there that the archive holds (green complete, red missing; grey: nothing "
        "expected, before a row's first or after its last observation). Gaps are outlined "
        "in dark red and listed under each map, longest first. <code>jex-collector "
        "verify</code> lists every hole and <code>verify --repair</code> fills those the "
        "exchange still serves.</p>",
        _legend(),
        _summary(report.coverage),
    ]
    for coverage in report.coverage:
        parts.append(_dataset(coverage, report, draw))
    parts.append("</section>")
    return "\n".join(parts)


def _legend() -> str:
    items = "".join(
        f'<span class="key"><span class="swatch" style="background:{color};'
        f'{"border:3px solid " + charts.GAP_EDGE + ";" if outlined else ""}"></span>'
        f"{_e(words)}</span>"
        for color, words, outlined in charts.COVERAGE_LEGEND
    )
    return f'<p class="legend">{items}</p>'


def _summary(coverage: Sequence[DatasetCoverage]) -> str:
    lines = [
        '<table class="summary"><tr><th>dataset</th><th class="num">observed</th>'
        '<th class="num">series</th><th>first</th><th>last</th><th class="num">gaps</th>'
        "</tr>"
    ]
    for item in coverage:
        name = f'<a href="#coverage-{_e(item.dataset)}">{_e(item.dataset)}</a>'
        swatch = (
            f'<span class="swatch" style="background:{charts.DATASET_COLORS[item.dataset]}"></span>'
        )
        if item.empty:
            lines.append(
                f'<tr><td>{swatch}{name}</td><td class="num">0</td><td></td>'
                '<td colspan="3" class="none">no rows in this window</td></tr>'
            )
            continue
        gaps = (
            f'<span class="bad">{item.gap_count:,}</span>'
            if item.gap_count
            else '<span class="ok">0</span>'
        )
        first = min(row.first_ms for row in item.rows)
        last = max(row.last_ms for row in item.rows)
        lines.append(
            f"<tr><td>{swatch}{name}</td>"
            f'<td class="num">{sum(r.observed for r in item.rows):,} {_e(item.unit)}</td>'
            f'<td class="num">{len(item.rows)}</td><td>{_e(_time(first))}</td>'
            f'<td>{_e(_time(last))}</td><td class="num">{gaps}</td></tr>'
        )
    lines.append("</table>")
    return "".join(lines)


def _dataset(coverage: DatasetCoverage, report: Report, draw: Callable[..., bytes] | None) -> str:
    name = coverage.dataset
    swatch = f'<span class="swatch" style="background:{charts.DATASET_COLORS[name]}"></span>'
    head = f'<article id="coverage-{_e(name)}">\n<h3>{swatch}{_e(name)}</h3>'
    doc = _e(datasets.get(name).doc.replace("`", ""))
    if coverage.empty:
        return (
            f'{head}\n<p class="meta">{doc}</p>\n'
            '<p class="none">No rows in this window.</p>\n</article>'
        )
    total = sum(row.observed for row in coverage.rows)
    plural = "s" if coverage.gap_count != 1 else ""
    gaps = (
        f'<span class="bad">{coverage.gap_count:,} gap{plural}</span>'
        if coverage.gap_count
        else '<span class="ok">no gaps</span>'
    )
    picture = _picture(draw, lambda: charts.heatmap(coverage, report.window))
    return "\n".join(
        [
            head,
            f'<p class="meta">{doc} {total:,} {_e(coverage.unit)} in {len(coverage.rows)} '
            f"series, {gaps}.</p>",
            _img(picture, f"coverage heat map of {name}"),
            f'<p class="caption">{_e(coverage.rule)}</p>',
            _gap_table(coverage),
            "</article>",
        ]
    )


def _gap_table(coverage: DatasetCoverage) -> str:
    if not coverage.gaps:
        return ""
    shown = sorted(coverage.gaps, key=lambda g: g.to_ms - g.from_ms, reverse=True)[:GAPS_LISTED]
    shown.sort(key=lambda g: (g.market, g.symbol, g.interval or "", g.from_ms))
    rows = "".join(_gap_row(gap) for gap in shown)
    more = (
        f'<p class="caption">The {len(shown)} longest of {coverage.gap_count:,} gaps.</p>'
        if coverage.gap_count > len(shown)
        else ""
    )
    return (
        f'<table class="gaps" data-dataset="{_e(coverage.dataset)}"><tr><th>market</th>'
        "<th>symbol</th><th>from (UTC)</th><th>to (UTC)</th><th>length</th><th>missing</th>"
        f"</tr>{rows}</table>{more}"
    )


def _gap_row(gap: Gap) -> str:
    symbol = gap.symbol + (f" {gap.interval}" if gap.interval else "")
    return (
        f"<tr><td>{_e(gap.market)}</td><td>{_e(symbol)}</td><td>{_e(_time(gap.from_ms))}</td>"
        f"<td>{_e(_time(gap.to_ms))}</td><td>{_e(format_duration(gap.to_ms - gap.from_ms))}"
        f"</td><td>{_e(gap.detail)}</td></tr>"
    )


# -- prices, funding, disk -----------------------------------------------------------------


def _prices(prices: Sequence[PriceChart], draw: Callable[..., bytes] | None) -> str:
    parts = [
        '<section id="prices">\n<h2>Prices</h2>',
        '<p class="caption">Per market, the chosen symbols (<code>--symbol</code>; by default '
        "the most traded one): the mid price from the depth snapshots (in the market's "
        "colour), the last trade price, and for contracts the mark and index prices; each "
        "averaged (mid, mark, index) or taken last (trades) per step, over the time the "
        "symbol has prices. A break in a line is a step without data.</p>",
    ]
    by_market: dict[str, list[PriceChart]] = {}
    for chart in prices:
        by_market.setdefault(chart.market, []).append(chart)
    if not by_market:
        parts.append('<p class="none">No trades or depth snapshots in this window.</p>')
    for market, market_charts in by_market.items():
        color = charts.MARKET_COLORS.get(market, "#212529")
        drawn = [c for c in market_charts if c.series]
        names = ", ".join(c.symbol for c in market_charts)
        parts.append(
            f'<h3 id="prices-{_e(market)}" style="color:{color}">{_e(market)}: {_e(names)}</h3>'
        )
        if not drawn:
            parts.append('<p class="none">No prices in this window.</p>')
            continue
        picture = _picture(draw, lambda drawn=drawn: charts.price_figure(drawn))  # type: ignore[misc]
        steps = {format_duration(c.step_ms) for c in drawn}
        spans = [
            (min(s.times_ms[0] for s in c.series), max(s.times_ms[-1] for s in c.series))
            for c in drawn
        ]
        parts.append(_img(picture, f"prices of {market} {names}"))
        parts.append(
            f'<p class="caption">{_e(market)} {_e(names)}: '
            f"{_e(', '.join(dict.fromkeys(s.name for c in drawn for s in c.series)))} per "
            f"{_e(' / '.join(sorted(steps)))} step, {_e(_time(min(a for a, _ in spans)))} to "
            f"{_e(_time(max(b for _, b in spans)))} UTC.</p>"
        )
    parts.append("</section>")
    return "\n".join(parts)


def _funding(report: Report, draw: Callable[..., bytes] | None) -> str:
    chart = report.funding
    head = '<section id="funding">\n<h2>Funding rate</h2>'
    if not chart.series:
        return f'{head}\n<p class="none">No funding rates in this window.</p>\n</section>'
    picture = _picture(draw, lambda: charts.funding_figure(chart))
    latest = ", ".join(
        f"{s.name} {s.values[-1] * 100:+.4f}% at {_time(s.times_ms[-1])}" for s in chart.series
    )
    names = ", ".join(s.name for s in chart.series)
    span = ""
    if chart.end_ms and chart.start_ms < report.window.start_ms:
        span = (
            f" The chart spans {_e(_time(chart.start_ms))} to {_e(_time(chart.end_ms))} UTC, "
            "more than the window: funding events are paged history, and the window (from "
            "the first live snapshot) holds few of them."
        )
    return "\n".join(
        [
            head,
            _img(picture, f"funding rate per contract: {names}"),
            '<p class="caption">The funding rate of every funding event, one panel per '
            "contract symbol (each with its own scale; the dark line is zero), in percent of "
            "the position per funding interval (positive: longs pay shorts); averaged per "
            f"step when events are denser than the chart.{span} Latest: {_e(latest)} "
            "UTC. <code>queries/funding_carry.sql</code> annualizes them.</p>",
            "</section>",
        ]
    )


def _disk(report: Report, draw: Callable[..., bytes] | None) -> str:
    disk = report.disk
    head = '<section id="size">\n<h2>Archive size</h2>'
    if not disk.bytes_by_date:
        return f'{head}\n<p class="none">No data files in this window.</p>\n</section>'
    picture = _picture(draw, lambda: charts.disk_figure(disk))
    totals = sorted(
        ((name, sum(by_date.values())) for name, by_date in disk.bytes_by_date.items()),
        key=lambda item: item[1],
        reverse=True,
    )
    rows = "".join(
        f'<tr><td><span class="swatch" style="background:{charts.DATASET_COLORS[name]}"></span>'
        f'{_e(name)}</td><td class="num">{_e(_size(size))}</td></tr>'
        for name, size in totals
    )
    return "\n".join(
        [
            head,
            _img(picture, "bytes on disk per dataset and date"),
            '<p class="caption">Bytes on disk of each dataset per date partition (the UTC day '
            "of the rows' event time), counting the files each table holds now (what the "
            "views read; files replaced by compaction and awaiting deletion, the Delta logs, "
            "the write-ahead log and the quarantine are not counted). Days that are over are "
            "compacted into one file per dataset and market, so today's bar shrinks after "
            "midnight.</p>",
            '<table class="sizes"><tr><th>dataset</th><th class="num">in this window</th></tr>'
            f"{rows}</table>",
            "</section>",
        ]
    )
