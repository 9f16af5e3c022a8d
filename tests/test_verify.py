"""verify: it finds duplicates and holes where they are, and nothing where there are none."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
from click.testing import CliRunner

from collector import datasets
from collector.check.repair import RepairResult, remove_duplicates
from collector.check.verify import verify
from collector.cli import main
from collector.storage import delta
from collector.storage.writer import ArchiveWriter

T0 = 1_764_000_000_000  # 2025-11-24T16:00:00Z


def trades(ids: list[int], symbol: str = "BTCUSDT", market: str = "spot") -> pa.Table:
    return pa.table(
        {
            "market": [market] * len(ids),
            "symbol": [symbol] * len(ids),
            "trade_id": ids,
            "time": [T0 + i for i in ids],
            "price": [1.0] * len(ids),
            "qty": [1.0] * len(ids),
            "is_buyer_maker": [True] * len(ids),
            "received_at": [T0 + 10_000] * len(ids),
        },
        schema=datasets.get("trades").schema,
    )


def klines(minutes: list[int], interval: str = "1m") -> pa.Table:
    n = len(minutes)
    opens = [T0 + m * 60_000 for m in minutes]
    return pa.table(
        {
            "market": ["contract"] * n,
            "symbol": ["ETHUSDT"] * n,
            "interval": [interval] * n,
            "open_time": opens,
            "close_time": [o + 59_999 for o in opens],
            **{
                c: [1.0] * n
                for c in (
                    "open",
                    "high",
                    "low",
                    "close",
                    "volume",
                    "quote_volume",
                    "taker_buy_volume",
                    "taker_buy_quote_volume",
                )
            },
            "trade_count": [3] * n,
        },
        schema=datasets.get("klines").schema,
    )


def write(data_dir: Path, dataset: str, table: pa.Table) -> None:
    writer = ArchiveWriter(data_dir)
    writer.add(dataset, table)
    assert writer.flush().errors == []


def test_a_complete_archive_has_no_findings(tmp_path: Path) -> None:
    write(tmp_path, "trades", trades(list(range(1, 101))))
    write(tmp_path, "klines", klines(list(range(30))))
    findings = verify(tmp_path)
    assert {(f.dataset, f.rows) for f in findings} == {("trades", 100), ("klines", 30)}
    assert all(f.ok for f in findings)
    result = CliRunner().invoke(main, ["verify", "--data-dir", str(tmp_path)])
    assert result.exit_code == 0
    assert "0 duplicate(s), 0 hole(s)" in result.output


def test_holes_and_duplicates_are_counted_and_located(tmp_path: Path) -> None:
    write(tmp_path, "trades", trades([1, 2, 3, 7, 8, 10]))
    write(tmp_path, "trades", trades([8]))  # a second file repeats id 8
    write(tmp_path, "trades", trades([1, 2], symbol="ETHUSDT", market="contract"))
    write(tmp_path, "klines", klines([0, 1, 4, 5]))
    by_key = {(f.dataset, f.market, f.symbol): f for f in verify(tmp_path)}
    spot = by_key[("trades", "spot", "BTCUSDT")]
    assert (spot.rows, spot.duplicates, spot.holes) == (7, 1, 4)
    assert spot.hole_ranges == [(4, 6), (9, 9)]
    assert by_key[("trades", "contract", "ETHUSDT")].ok
    kl = by_key[("klines", "contract", "ETHUSDT")]
    assert kl.holes == 2 and kl.hole_ranges == [(T0 + 120_000, T0 + 180_000)]
    result = CliRunner().invoke(main, ["verify", "--data-dir", str(tmp_path), "--json"])
    assert result.exit_code == 1
    lines = [json.loads(line) for line in result.output.splitlines()]
    assert sum(line["holes"] for line in lines) == 6
    wide = CliRunner(env={"COLUMNS": "250"})
    table = wide.invoke(main, ["verify", "--data-dir", str(tmp_path)])
    assert table.exit_code == 1 and "4..6 9..9" in table.output


def test_an_empty_archive_verifies(tmp_path: Path) -> None:
    assert verify(tmp_path) == []
    # The command: a folder without a table is no archive (exit 2, naming it).
    result = CliRunner().invoke(main, ["verify", "--data-dir", str(tmp_path)])
    assert result.exit_code == 2 and f"no archive at {tmp_path}" in result.output


def test_removing_duplicates_rewrites_only_the_partitions_that_have_them(tmp_path: Path) -> None:
    write(tmp_path, "trades", trades([1, 2, 3]))
    write(tmp_path, "trades", trades([3, 4]))  # id 3 twice in the spot partition
    write(tmp_path, "trades", trades([1, 2], symbol="ETHUSDT", market="contract"))
    write(tmp_path, "trades", trades([3], symbol="ETHUSDT", market="contract"))

    def files(market: str) -> list[str]:
        table = delta.open_table(tmp_path, "trades")
        assert table is not None
        return [f.path for f in delta.files(table, "trades", market=market)]

    contract = files("contract")
    assert len(files("spot")) == len(contract) == 2
    report = RepairResult()
    remove_duplicates(tmp_path, "trades", report)
    remove_duplicates(tmp_path, "depth", report)  # no table: nothing to do
    assert (report.duplicates_removed, report.files_replaced) == ({"trades": 1}, 2)
    assert len(files("spot")) == 1 and files("contract") == contract
    assert all(f.ok for f in verify(tmp_path))


def test_repair_fills_holes_from_the_exchange_and_removes_duplicates(tmp_path: Path) -> None:
    from collector.sim import SimExchange, SimServer

    sim = SimExchange(seed=9, history_days=1)
    now = sim.now_ms()
    truth = sim.trades("spot", "ETHUSDT", now - 20 * 60_000, now - 10 * 60_000)
    holey = [t for i, t in enumerate(truth) if not 50 <= i < 150]
    table = pa.table(
        {
            "market": ["spot"] * len(holey),
            "symbol": ["ETHUSDT"] * len(holey),
            "trade_id": [t.id for t in holey],
            "time": [t.time for t in holey],
            "price": [float(t.price) for t in holey],
            "qty": [float(t.qty) for t in holey],
            "is_buyer_maker": [t.buyer_maker for t in holey],
            "received_at": [now] * len(holey),
        },
        schema=datasets.get("trades").schema,
    )
    write(tmp_path, "trades", table)
    write(tmp_path, "trades", table.slice(0, 10))  # ten duplicated rows in a second file
    kl = sim.klines("spot", "ETHUSDT", "1m", now - 60 * 60_000, now - 30 * 60_000)
    kept = [k for i, k in enumerate(kl) if i not in (5, 6, 20)]
    write(
        tmp_path,
        "klines",
        pa.table(
            {
                "market": ["spot"] * len(kept),
                "symbol": ["ETHUSDT"] * len(kept),
                "interval": ["1m"] * len(kept),
                "open_time": [k.open_time for k in kept],
                "close_time": [k.close_time for k in kept],
                **{
                    name: [float(getattr(k, name)) for k in kept]
                    for name in (
                        "open",
                        "high",
                        "low",
                        "close",
                        "volume",
                        "quote_volume",
                        "taker_buy_volume",
                        "taker_buy_quote_volume",
                    )
                },
                "trade_count": [k.trade_count for k in kept],
            },
            schema=datasets.get("klines").schema,
        ),
    )
    config = tmp_path / "schedules.yaml"
    config.write_text("jobs: {}\n")
    runner = CliRunner(env={"JEX_API_KEY": "k", "COLUMNS": "250"})
    with SimServer(sim) as server:
        result = runner.invoke(
            main,
            [
                "verify",
                "--repair",
                "--config",
                str(config),
                "--data-dir",
                str(tmp_path),
                "--base-url",
                server.base_url,
            ],
        )
    assert result.exit_code == 0, result.output
    assert "removed 10 duplicate row(s) from trades" in result.output
    assert "added 100 missing row(s) to trades" in result.output
    assert "added 3 missing row(s) to klines" in result.output
    assert "0 duplicate(s), 0 hole(s)" in result.output
    from collector.read import catalog

    ids = catalog.query(tmp_path, "SELECT trade_id FROM trades ORDER BY 1")["trade_id"]
    assert ids.to_pylist() == [t.id for t in truth]


# -- funding and protection fund: continuity by what the exchange guarantees ----------------

HOUR = 3_600_000


def funding(symbol: str, ids: list[int], hours: list[int]) -> pa.Table:
    return pa.table(
        {
            "market": ["contract"] * len(ids),
            "symbol": [symbol] * len(ids),
            "id": ids,
            "time": [T0 + h * HOUR for h in hours],
            "funding_rate": [0.0001] * len(ids),
            "funding_rate_day": [0.0003] * len(ids),
        },
        schema=datasets.get("funding_rate").schema,
    )


def fund(symbol: str, ids: list[int], minutes: list[int]) -> pa.Table:
    return pa.table(
        {
            "market": ["contract"] * len(ids),
            "symbol": [symbol] * len(ids),
            "id": ids,
            "time": [T0 + m * 60_000 for m in minutes],
            "insurance_fund": [1e6] * len(ids),
        },
        schema=datasets.get("protection_fund").schema,
    )


def contract_info(symbol: str, interval_ms: int) -> pa.Table:
    spec = datasets.get("contract_info")
    row: dict[str, list[object]] = {name: [1.0] for name in spec.column_names}
    row.update(
        market=["contract"],
        symbol=[symbol],
        received_at=[T0],
        funding_interval_ms=[interval_ms],
        next_funding_time=[T0 + interval_ms],
    )
    return pa.table(row, schema=spec.schema)


def shared_sequence_archive(data_dir: Path, *, skip_hour: int | None = None) -> None:
    """Two symbols whose funding and fund ids come from one sequence shared by both (and
    by others not archived: a step of 3), one funding event an hour."""
    hours = [h for h in range(12) if h != skip_hour]
    writer = ArchiveWriter(data_dir)
    for offset, symbol in enumerate(("BTCUSDT", "ETHUSDT")):
        writer.add("funding_rate", funding(symbol, [100 + 3 * h + offset for h in hours], hours))
        writer.add("protection_fund", fund(symbol, [5 + 7 * m + offset for m in range(30)],
                                            [m * 3 for m in range(30)]))  # fmt: skip
        writer.add("contract_info", contract_info(symbol, HOUR))
    writer.flush()


def test_shared_id_sequences_are_no_holes_in_funding_or_the_fund(tmp_path: Path) -> None:
    shared_sequence_archive(tmp_path)
    findings = [f for f in verify(tmp_path) if f.dataset in ("funding_rate", "protection_fund")]
    assert len(findings) == 4 and all(f.rows in (12, 30) for f in findings)
    assert [(f.holes, f.duplicates) for f in findings] == [(0, 0)] * 4
    result = CliRunner().invoke(main, ["verify", "--data-dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "0 hole(s)" in result.output


def test_a_missing_funding_event_is_a_hole_in_time(tmp_path: Path) -> None:
    shared_sequence_archive(tmp_path, skip_hour=5)
    found = {
        (f.dataset, f.symbol): f
        for f in verify(tmp_path)
        if f.dataset in ("funding_rate", "protection_fund")
    }
    for symbol in ("BTCUSDT", "ETHUSDT"):
        hole = found[("funding_rate", symbol)]
        assert hole.holes == 1
        assert hole.hole_ranges == [(T0 + 5 * HOUR, T0 + 5 * HOUR)]
        assert found[("protection_fund", symbol)].holes == 0
    result = CliRunner().invoke(main, ["verify", "--data-dir", str(tmp_path)])
    assert result.exit_code == 1 and "2 hole(s)" in result.output


def test_without_contract_info_the_funding_interval_is_the_shortest_spacing(
    tmp_path: Path,
) -> None:
    writer = ArchiveWriter(tmp_path)
    hours = [0, 8, 16, 24, 48, 56]  # every 8 h, one event missing (at 32 h... and 40 h)
    writer.add("funding_rate", funding("BTCUSDT", [7 * h for h in hours], hours))
    writer.flush()
    (finding,) = [f for f in verify(tmp_path) if f.dataset == "funding_rate"]
    assert finding.holes == 2
    assert finding.hole_ranges == [(T0 + 32 * HOUR, T0 + 40 * HOUR)]


def test_duplicate_funding_ids_are_still_counted(tmp_path: Path) -> None:
    writer = ArchiveWriter(tmp_path)
    writer.add("funding_rate", funding("BTCUSDT", [10, 13, 16], [0, 1, 2]))
    writer.flush()
    writer.add("funding_rate", funding("BTCUSDT", [16], [2]))
    writer.flush()
    (finding,) = [f for f in verify(tmp_path) if f.dataset == "funding_rate"]
    assert (finding.duplicates, finding.holes) == (1, 0)
