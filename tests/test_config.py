"""Configuration: the shipped schedule, durations, symbol patterns, errors, secrets."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from collector import config, datasets
from collector.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "schedules.yaml"
    path.write_text(text)
    return path


def test_the_shipped_schedule_has_a_job_for_every_dataset() -> None:
    settings = config.load(ROOT / "schedules.yaml", environ={})
    assert set(settings.jobs) == set(datasets.DATASETS)
    assert settings.exchange.base_url == "https://www.jex.com"
    assert settings.exchange.timeout == 10.0
    assert settings.storage.flush_every == 30.0
    assert settings.jobs["depth"].limit == 20
    assert settings.jobs["klines"].intervals == ("1m", "1h")
    assert settings.jobs["trades"].every == 10.0
    assert settings.jobs["trades"].backfill == 3600.0
    assert settings.jobs["klines"].backfill == 7 * 86400.0
    assert settings.api_key is None


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        (10, 10.0),
        (2.5, 2.5),
        ("500ms", 0.5),
        ("10s", 10.0),
        ("5m", 300.0),
        ("1h", 3600.0),
        ("1d", 86400.0),
    ],
)
def test_durations(text: object, seconds: float) -> None:
    assert config.parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "10x", "-5s", "0", True, None, "five minutes"])
def test_bad_durations_are_refused(text: object) -> None:
    with pytest.raises(ValueError, match="duration"):
        config.parse_duration(text)


@given(st.integers(min_value=1, max_value=10**6), st.sampled_from(["s", "m", "h"]))
def test_duration_units(number: int, unit: str) -> None:
    assert config.parse_duration(f"{number}{unit}") == number * {"s": 1, "m": 60, "h": 3600}[unit]


def test_symbols_all_list_and_globs() -> None:
    job = config.JobSettings(every=1, symbols=["BTCUSDT", "ETH*", "BTC*C*"])
    assert job.wants("BTCUSDT") and job.wants("ETHUSDT") and job.wants("BTC1127C64000")
    assert not job.wants("JEXUSDT") and not job.wants("BTC1127P64000")
    assert config.JobSettings(every=1).wants("ANYTHING")
    assert config.JobSettings(every=1, symbols="ETH*").wants("ETHUSDT")


@pytest.mark.parametrize(
    ("text", "key", "expected"),
    [
        ("jobs:\n  depth: {every: 10x}\n", "jobs.depth.every", "duration"),
        ("jobs:\n  depht: {every: 10s}\n", "jobs.depht", "unknown job"),
        ("jobs:\n  depth: {every: 1s, limit: 7}\n", "jobs.depth.limit", "one of"),
        (
            "jobs:\n  funding_rate: {every: 1s, markets: [spot]}\n",
            "jobs.funding_rate.markets",
            "contract",
        ),
        ("jobs:\n  depth: {every: 1s, markets: [moon]}\n", "jobs.depth.markets[0]", "spot"),
        ("jobs:\n  klines: {every: 1s, intervals: [7m]}\n", "jobs.klines.intervals", "7m"),
        ("jobs:\n  depth: {every: 1s, color: red}\n", "jobs.depth.color", "unknown key"),
        ("exchange: {base_url: ftp://x}\njobs: {}\n", "exchange.base_url", "http"),
        ("storage: {flush_every: soon}\njobs: {}\n", "storage.flush_every", "duration"),
        ("jobs: {}\napi_key: abc\n", "api_key", "JEX_API_KEY"),
        ("jobs:\n  depth: {every: 1s, backfill: 1h}\n", "jobs.depth.backfill", "only trades"),
        (
            "jobs:\n  klines: {every: 1s, intervals: [1m], start_id: 5}\n",
            "jobs.klines.start_id",
            "only trades",
        ),
        ("jobs:\n  trades: {every: 1s, start_id: 0}\n", "jobs.trades.start_id", "greater"),
        ("exchange: {}\n", "jobs", "missing"),
    ],
)
def test_a_bad_file_names_the_file_the_key_and_what_was_expected(
    tmp_path: Path, text: str, key: str, expected: str
) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        config.load(path, environ={})
    message = str(info.value)
    assert str(path) in message
    assert key in message
    assert expected in message


def test_invalid_yaml_names_the_line(tmp_path: Path) -> None:
    path = write(tmp_path, "jobs:\n  depth: {every: 10s\n")
    with pytest.raises(ConfigError, match=r"line \d+"):
        config.load(path, environ={})


def test_a_missing_file_says_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="--config"):
        config.load(tmp_path / "nope.yaml", environ={})


def test_yaml_is_loaded_safely(tmp_path: Path) -> None:
    path = write(tmp_path, "jobs: !!python/object/apply:os.system ['echo hacked']\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        config.load(path, environ={})


def test_secrets_come_from_the_environment_and_are_never_shown(tmp_path: Path) -> None:
    path = write(tmp_path, "jobs: {}\n")
    settings = config.load(
        path, environ={"JEX_API_KEY": "key-123-secret", "JEX_API_SECRET": "shh-456"}
    )
    assert settings.api_key is not None and settings.api_secret is not None
    assert settings.api_key.get_secret_value() == "key-123-secret"
    shown = repr(settings) + str(settings) + settings.model_dump_json()
    assert "key-123-secret" not in shown and "shh-456" not in shown


def test_cli_overrides_beat_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, "exchange: {base_url: https://a.example}\njobs: {}\n")
    settings = config.load(
        path, environ={}, overrides={"base_url": "http://127.0.0.1:9", "data_dir": "/x/y"}
    )
    assert settings.exchange.base_url == "http://127.0.0.1:9"
    assert str(settings.storage.data_dir) == "/x/y"


def test_cli_exits_with_status_2_on_a_bad_config(tmp_path: Path) -> None:
    path = write(tmp_path, "jobs:\n  depth: {every: 10x}\n")
    result = subprocess.run(
        [sys.executable, "-m", "collector", "run", "--config", str(path), "--duration", "1"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "jobs.depth.every" in result.stderr and str(path) in result.stderr
    assert "Traceback" not in result.stderr
