"""Log output: JSON lines with the fields of a job round, level filtering, the text format
as it was, and secrets redacted in both formats."""

from __future__ import annotations

import asyncio
import datetime as dt
import io
import json
import logging
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from collector import logs
from collector.collect import jobs
from collector.exchange.client import JexClient
from collector.sim import SimExchange, create_app
from collector.storage.writer import ArchiveWriter
from tests.conftest import fast_settings, unpaced_budget

SECRET = "sk-live-9f8e7d6c5b4a39281706"
T0 = 1_764_000_000.0  # 2025-11-24T16:00:00Z


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """logs.setup replaces the root logger's handlers: put pytest's back afterwards."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    levels = {name: logging.getLogger(name).level for name in (*logs.NOISY, "collector")}
    yield
    for handler in root.handlers[:]:
        root.removeHandler(handler)
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)
    for name, old in levels.items():
        logging.getLogger(name).setLevel(old)


def json_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines()]


def record(message: str = "hello %s", *args: Any, **fields: Any) -> logging.LogRecord:
    made = logging.LogRecord(
        "collector.collect.jobs", logging.INFO, __file__, 1, message, args, None
    )
    made.created, made.msecs = T0, 0.0
    made.__dict__.update(fields)
    return made


# -- JSON lines from real call sites -------------------------------------------------------------


def test_json_lines_carry_the_fields_of_a_job_round(
    sim_exchange: SimExchange, tmp_path: Path, restore_logging: None
) -> None:
    stream = io.StringIO()
    logs.setup("debug", "json", stream=stream)
    settings = fast_settings("http://sim.test", tmp_path)

    async def scenario() -> None:
        transport = httpx.ASGITransport(app=create_app(sim_exchange))
        async with JexClient(
            "http://sim.test", transport=transport, budget=unpaced_budget(), max_attempts=1
        ) as client:
            ctx = jobs.JobContext(client, ArchiveWriter(tmp_path), settings)
            await jobs.refresh_instruments(ctx)
            await jobs.run_job(ctx, "depth")
            async with httpx.AsyncClient(transport=transport, base_url="http://sim.test") as admin:
                await admin.post("/_sim/faults", json={"error_500": 1.0})
            await jobs.run_job(ctx, "avg_price")

    asyncio.run(scenario())
    lines = json_lines(stream.getvalue())
    for line in lines:
        assert {"time", "level", "logger", "message"} <= set(line)
        assert dt.datetime.fromisoformat(line["time"]).utcoffset() == dt.timedelta(0)
    rounds = {(line["job"], line["market"]): line for line in lines if "job" in line}
    spot = rounds[("depth", "spot")]
    assert spot["level"] == "INFO" and spot["logger"] == "collector.collect.jobs"
    assert spot["dataset"] == "depth" and spot["symbols"] == 3
    assert spot["rows"] > 0 and spot["errors"] == 0 and isinstance(spot["duration_ms"], int)
    assert "error" not in spot, "fields a record does not carry are left out"
    failed = rounds[("avg_price", "spot")]
    assert failed["level"] == "WARNING" and failed["rows"] == 0
    assert failed["errors"] == 3 and "server error 500" in failed["error"]
    per_symbol = [
        line
        for line in lines
        if line.get("dataset") == "avg_price" and line["market"] == "spot" and "symbol" in line
    ]
    assert len({line["symbol"] for line in per_symbol}) == failed["errors"], "one per symbol"
    assert all("server error 500" in line["error"] for line in per_symbol)


def test_an_exception_is_one_json_line_with_its_traceback(restore_logging: None) -> None:
    stream = io.StringIO()
    logs.setup("info", "json", stream=stream)
    try:
        raise ValueError("broken parser")
    except ValueError:
        logging.getLogger("collector.collect.daemon").exception("job %s failed", "depth")
    (line,) = json_lines(stream.getvalue())
    assert line["level"] == "ERROR" and line["message"] == "job depth failed"
    assert "Traceback" in line["exc"] and "ValueError: broken parser" in line["exc"]


def test_the_level_filters_json_and_text_alike(restore_logging: None) -> None:
    for fmt in logs.FORMATS:
        stream = io.StringIO()
        logs.setup("warning", fmt, stream=stream)
        log = logging.getLogger("collector.collect.jobs")
        log.debug("quiet debug")
        log.info("quiet info")
        log.warning("loud warning")
        log.error("loud error")
        assert "quiet" not in stream.getvalue()
        assert stream.getvalue().count("loud") == 2, fmt
    stream = io.StringIO()
    logs.setup("debug", "json", stream=stream)
    logging.getLogger("collector.collect.jobs").debug("now shown")
    logging.getLogger("httpx").info("HTTP Request: GET ...")  # per request: kept down
    assert [line["message"] for line in json_lines(stream.getvalue())] == ["now shown"]


def test_the_text_format_is_the_classic_line_in_utc() -> None:
    line = logs.text_formatter().format(record("job %s market=%s", "trades", "spot", rows=3))
    assert line == "2025-11-24 16:00:00,000 INFO    collector.collect.jobs: job trades market=spot"


# -- secrets ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", logs.FORMATS)
def test_secrets_are_redacted_from_message_fields_and_traceback(fmt: str) -> None:
    quoted = 'pass"word\\with-escapes'
    inner = logs.JsonFormatter() if fmt == "json" else logs.text_formatter()
    formatter = logs.RedactingFormatter(inner, [SECRET, quoted, "short", None])
    try:
        raise RuntimeError(f"rejected key {SECRET}")
    except RuntimeError:
        exc_info = sys.exc_info()
    leaky = record("sent %s and %s", SECRET, quoted, error=f"401 for {SECRET}", symbol=quoted)
    leaky.exc_info = exc_info
    line = formatter.format(leaky)
    assert SECRET not in line and quoted not in line
    assert json.dumps(quoted)[1:-1] not in line, "nor in its JSON-escaped form"
    assert line.count(logs.REDACTED) >= 3
    assert "short" in formatter.format(record("short is not a key")), "too short to redact"
    if fmt == "json":
        entry = json.loads(line)
        assert entry["error"] == f"401 for {logs.REDACTED}"
        assert "RuntimeError: rejected key <redacted>" in entry["exc"]


def test_the_cli_logs_json_lines_without_the_api_key(tmp_path: Path) -> None:
    config = tmp_path / "schedules.yaml"
    config.write_text(
        "storage: {flush_every: 1s}\njobs:\n  depth: {every: 1s, limit: 5}\n"
        "  instruments: {every: 30s}\n"
    )
    result = subprocess.run(
        [
            *(sys.executable, "-m", "collector", "run", "--sim", "--config", str(config)),
            *("--data-dir", str(tmp_path / "data"), "--duration", "2.5", "--log-format", "json"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, "JEX_API_KEY": SECRET},
    )
    assert result.returncode == 0, result.stderr
    lines = json_lines(result.stderr)
    assert any(line.get("job") == "depth" and line.get("rows", 0) > 0 for line in lines)
    assert any(re.match(r"flushed \d+ file", line["message"]) and "files" in line for line in lines)
    assert SECRET not in result.stderr


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_exchange_text_cannot_clear_a_terminal_or_forge_a_log_line(fmt: str) -> None:
    """An error text the exchange chose (ESC sequences, CR, LF, a bidi override) is
    escaped in both formats: one record is one line, with no raw control character."""
    stream = io.StringIO()
    handler = logs.setup("info", fmt, stream=stream)
    try:
        hostile = "bad symbol\x1b[2J\rINFO fake line\n2026-01-01 ERROR forged\u202eevil"
        logging.getLogger("collector.collect.jobs").error("exchange said: %s", hostile)
        try:
            raise ValueError(hostile)
        except ValueError:
            logging.getLogger("collector.collect.jobs").exception("round failed")
    finally:
        logging.getLogger().removeHandler(handler)
    text = stream.getvalue()
    assert not re.search(r"[\x00-\x09\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]", text)
    lines = text.splitlines()
    if fmt == "json":
        assert len(lines) == 2
        assert json.loads(lines[0])["message"].endswith(hostile)  # kept, only escaped
    else:
        assert lines[0].endswith(
            r"bad symbol\x1b[2J\x0dINFO fake line\x0a2026-01-01 ERROR forged\u202eevil"
        )
        assert not any(line.startswith("2026-01-01") for line in lines)
