"""Configuration: the shipped schedule, durations, symbol patterns, errors, secrets."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml
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


# -- non-finite and absurd durations -------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (float("nan"), "got nan"),
        (float("inf"), "finite"),
        (float("-inf"), "positive"),
        (10**400, "finite"),  # an int too large for a float
        (-(10**400), "positive"),
        ("1" + "0" * 400 + "s", "finite"),
        (1e300, "at most 1000 years"),
        ("365251d", "at most 1000 years"),
        (1e-9, "at least 1ms"),
        ("0.5ms", "at least 1ms"),
    ],
)
def test_non_finite_and_absurd_durations_are_refused(value: object, expected: str) -> None:
    with pytest.raises(ValueError, match="duration") as info:
        config.parse_duration(value)
    assert expected in str(info.value)
    assert len(str(info.value)) < 200  # a 400-digit number is not repeated


def test_the_bounds_of_a_duration_are_accepted() -> None:
    assert config.parse_duration("1ms") == 0.001
    assert config.parse_duration("365250d") == 365250 * 86400.0


@pytest.mark.parametrize("value", [".nan", ".inf", "-.inf", ".NaN", "1.0e+400"])
@pytest.mark.parametrize(
    ("section", "key"),
    [
        ("storage: {flush_every: %s}\njobs: {}\n", "storage.flush_every"),
        ("exchange: {timeout: %s}\njobs: {}\n", "exchange.timeout"),
        ("jobs:\n  depth: {every: %s}\n", "jobs.depth.every"),
        ("jobs:\n  trades: {every: 1s, backfill: %s}\n", "jobs.trades.backfill"),
        ("exchange: {weight_fraction: %s}\njobs: {}\n", "exchange.weight_fraction"),
    ],
)
def test_yaml_nan_and_inf_are_refused_wherever_a_number_is_read(
    tmp_path: Path, value: str, section: str, key: str
) -> None:
    path = write(tmp_path, section % value)
    with pytest.raises(ConfigError) as info:
        config.load(path, environ={})
    assert f"{path}: {key}: " in str(info.value)


# -- where the archive is: storage.uri (or data_dir) ---------------------------------------


@pytest.mark.parametrize(
    ("given", "uri"),
    [
        ("data", "data"),
        ("./archive/", "./archive/"),  # a local path stays as given
        ("/srv/jex archive", "/srv/jex archive"),
        ("s3://bucket", "s3://bucket"),
        ("s3://my.bucket-1/", "s3://my.bucket-1"),
        ("s3://bucket/jex/archive/", "s3://bucket/jex/archive"),
        ("s3://bucket/Jex_2026/v=1.0+x", "s3://bucket/Jex_2026/v=1.0+x"),
        ("S3://bucket/x", "s3://bucket/x"),
        ("s3://" + "b" * 63 + "/x", "s3://" + "b" * 63 + "/x"),
    ],
)
@pytest.mark.parametrize("key", ["uri", "data_dir"])
def test_the_archive_is_a_local_path_or_an_s3_uri(key: str, given: str, uri: str) -> None:
    settings = config.from_mapping(
        {"storage": {key: given}, "jobs": {}}, source="s.yaml", environ={}
    )
    assert settings.storage.uri == uri
    assert settings.storage.data_dir == uri  # the older name, for callers still using it
    assert settings.storage.is_remote == uri.startswith("s3://")


def test_the_default_archive_is_data() -> None:
    settings = config.from_mapping({"jobs": {}}, source="s.yaml", environ={})
    assert settings.storage.uri == "data" and not settings.storage.is_remote


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("gs://bucket/x", "gs:// is not supported; expected a local path (such as data) or s3://"),
        ("http://minio:9000/bucket", "http:// is not supported"),
        ("file:///srv/data", "file:// is not supported"),
        ("s3:/bucket/x", "two slashes"),
        ("", "got an empty string"),
        ("s3://", "3 to 63 characters"),
        ("s3://ab", "3 to 63 characters"),
        ("s3://" + "b" * 64, "3 to 63 characters"),
        ("s3://My-Bucket", "the bucket name 'My-Bucket' is not valid: a bucket name holds only"),
        ("s3://my_bucket", "holds only lowercase letters"),
        ("s3://-bucket", "starts and ends with a letter or digit"),
        ("s3://bucket-", "starts and ends with a letter or digit"),
        ("s3://my..bucket", "has no '..'"),
        ("s3://192.168.1.10", "not an IP address"),
        ("s3://xn--bucket", "reserves"),
        ("s3://bucket-s3alias", "reserves"),
        ("s3://bucket?versionId=3", "no query string"),
        ("s3://bucket/x#y", "no query string or fragment"),
        ("s3://bucket:9000/x", "not a host:port; the endpoint comes only from"),
        ("s3://bucket//x", "no empty, '.' or '..' parts"),
        ("s3://bucket/a/../b", "no empty, '.' or '..' parts"),
        ("s3://bucket/a\nb", "only letters, digits and . _ = + - between its slashes"),
        ("s3://bucket/jex archive", "only letters, digits and . _ = + -"),
        ("s3://bucket/a@b", "only letters, digits and . _ = + -"),
    ],
)
@pytest.mark.parametrize("key", ["uri", "data_dir"])
def test_a_bad_archive_location_is_refused(key: str, given: str, expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        config.from_mapping({"storage": {key: given}, "jobs": {}}, source="s.yaml", environ={})
    assert f"s.yaml: storage.{key}: " in str(info.value)
    assert expected in str(info.value)


@pytest.mark.parametrize(
    "given",
    [
        "s3://AKIAEXAMPLE:wJalrXUtnFEMI-K7MDENG@bucket/x",
        "s3://wJalrXUtnFEMI-K7MDENG@bucket",
        "s3://AKIAEXAMPLE:wJalrXUtnFEMI-K7MDENG/x",
        "s3://bucket/x?X-Amz-Credential=wJalrXUtnFEMI-K7MDENG",
    ],
)
def test_credentials_in_the_uri_are_refused_and_never_repeated(given: str) -> None:
    with pytest.raises(ConfigError) as info:
        config.from_mapping({"storage": {"uri": given}, "jobs": {}}, source="s.yaml", environ={})
    message = str(info.value)
    assert "storage.uri" in message and "AWS_ACCESS_KEY_ID" in message
    assert "wJalr" not in message and "AKIA" not in message


def test_uri_and_data_dir_together_are_refused() -> None:
    with pytest.raises(ConfigError, match=r"storage: give uri or data_dir \(its older name\)"):
        config.from_mapping(
            {"storage": {"uri": "a", "data_dir": "b"}, "jobs": {}}, source="s.yaml", environ={}
        )


CREDENTIALS_FROM_THE_ENVIRONMENT = (
    "endpoint and credentials are not read from files; set the environment variables "
    "AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION "
    "(and AWS_ALLOW_HTTP=true for a plain-http test server)"
)


@pytest.mark.parametrize(
    ("storage", "key"),
    [
        ({"aws_access_key_id": "AKIAEXAMPLE"}, "storage.aws_access_key_id"),
        ({"aws_secret_access_key": "wJalrEXAMPLE"}, "storage.aws_secret_access_key"),
        ({"access_key": "AKIAEXAMPLE"}, "storage.access_key"),
        ({"secret_key": "wJalrEXAMPLE"}, "storage.secret_key"),
        ({"endpoint": "http://minio:9000"}, "storage.endpoint"),
        ({"region": "eu-west-1"}, "storage.region"),
        ({"AWS_SESSION_TOKEN": "wJalrEXAMPLE"}, "storage.AWS_SESSION_TOKEN"),
        ({"uri": "s3://bucket", "s3": {"endpoint_url": "http://x"}}, "storage.s3.endpoint_url"),
        ({"options": [{"allow_http": True}]}, "storage.options[0].allow_http"),
    ],
)
def test_credentials_in_the_file_are_refused(storage: dict[str, object], key: str) -> None:
    with pytest.raises(ConfigError) as info:
        config.from_mapping({"storage": storage, "jobs": {}}, source="s.yaml", environ={})
    assert str(info.value) == f"s.yaml: {key}: {CREDENTIALS_FROM_THE_ENVIRONMENT}"


def test_overrides_set_the_archive_and_the_state_folder(tmp_path: Path) -> None:
    path = write(tmp_path, "storage: {data_dir: old, state_dir: /var/lib/jex}\njobs: {}\n")
    for key in ("data_dir", "uri"):
        settings = config.load(path, environ={}, overrides={key: "s3://bucket/new"})
        assert settings.storage.uri == "s3://bucket/new"
    settings = config.load(
        path, environ={}, overrides={"data_dir": Path("here"), "state_dir": Path("/tmp/st")}
    )
    assert settings.storage.uri == "here" and settings.storage.state_dir == "/tmp/st"
    assert config.load(path, environ={}, overrides={"data_dir": None}).storage.uri == "old"
    with pytest.raises(ConfigError, match="command line: give data_dir or uri, not both"):
        config.load(path, environ={}, overrides={"data_dir": "a", "uri": "b"})
    with pytest.raises(ConfigError, match=r"storage\.uri: gs:// is not supported"):
        config.load(path, environ={}, overrides={"uri": "gs://bucket"})


# -- where this host's state is: storage.state_dir -----------------------------------------


@pytest.mark.parametrize("given", ["s3://bucket/state", "S3://bucket", "s3:/x", "gs://b/x"])
def test_state_stays_on_the_host(given: str) -> None:
    with pytest.raises(ConfigError) as info:
        config.from_mapping(
            {"storage": {"uri": "s3://bucket", "state_dir": given}, "jobs": {}},
            source="s.yaml",
            environ={},
        )
    assert "s.yaml: storage.state_dir: expected a local path: state stays on the host" in str(
        info.value
    )


def test_an_empty_state_dir_is_refused() -> None:
    with pytest.raises(
        ConfigError, match=r"storage\.state_dir: expected a local path, got an empty"
    ):
        config.from_mapping({"storage": {"state_dir": " "}, "jobs": {}}, source="s", environ={})


def test_default_state_dir_of_a_local_archive() -> None:
    assert config.default_state_dir("data", None) == Path("data")
    assert config.default_state_dir("/srv/archive", "spot") == Path("/srv/archive/_local/spot")


def test_default_state_dir_of_an_s3_archive() -> None:
    xdg = {"XDG_STATE_HOME": "/state", "HOME": "/home/u"}
    home = {"HOME": "/home/u"}
    state = config.default_state_dir
    assert state("s3://bucket/jex/archive", "spot", environ=xdg) == Path(
        "/state/jex-collector/bucket/jex_archive/spot"
    )
    assert state("s3://bucket/jex", None, environ=home) == Path(
        "/home/u/.local/state/jex-collector/bucket/jex/all"
    )
    # The XDG spec: a relative XDG_STATE_HOME is ignored.
    relative = {"XDG_STATE_HOME": "state", "HOME": "/home/u"}
    assert state("s3://bucket/jex", None, environ=relative) == state(
        "s3://bucket/jex", None, environ=home
    )
    # No prefix: a short hash of the URI, the same every time, different per bucket.
    root = state("s3://bucket", "spot", environ=xdg)
    assert root.parent.parent == Path("/state/jex-collector/bucket")
    assert len(root.parent.name) == 12 and root == state("s3://bucket", "spot", environ=xdg)
    assert state("s3://other", "spot", environ=xdg).parent.name != root.parent.name
    # a/b and a_b are different archives, so they get different folders.
    slash, underscore = (state(f"s3://bucket/{p}", None, environ=xdg) for p in ("a/b", "a_b"))
    assert slash.parent.name == "a_b" and underscore.parent.name.startswith("a_b-")
    assert slash != underscore


def test_settings_state_dir_is_the_explicit_value_or_the_default(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "storage: {uri: archive}\njobs:\n  trades: {every: 10s}\n"
        "shards:\n  spot: {markets: [spot]}\n  rest: {markets: [option, contract]}\n",
    )
    assert config.load(path, environ={}).state_dir() == Path("archive")
    spot = config.load(path, environ={}, overrides={"shard": "spot"})
    assert spot.state_dir() == Path("archive/_local/spot")
    # An explicit state_dir is used as given, shard or not.
    explicit = config.load(path, environ={}, overrides={"shard": "spot", "state_dir": "st"})
    assert explicit.state_dir() == Path("st")
    remote = config.load(path, environ={}, overrides={"uri": "s3://bucket/x", "shard": "rest"})
    assert remote.state_dir({"XDG_STATE_HOME": "/s"}) == Path("/s/jex-collector/bucket/x/rest")


def test_the_commented_shards_example_in_schedules_yaml_is_valid() -> None:
    text = (ROOT / "schedules.yaml").read_text()
    example = text.split("\n# shards:\n", 1)[1]
    assert all(line.startswith("#  ") for line in example.splitlines())
    uncommented = text + "shards:\n" + "".join(line[1:] + "\n" for line in example.splitlines())
    path = ROOT / "schedules.yaml"
    settings = config.from_mapping(yaml.safe_load(uncommented), source=str(path), environ={})
    assert len(settings.shards) >= 2
    assert settings.unsharded() == []  # every job and market has a shard
    assert settings.compacting_shard is not None


# -- settings that passed validation and then crashed (issue 14, case 9) -------------------


@pytest.mark.parametrize(
    ("text", "key", "expected"),
    [
        ("jobs:\n  depth: {every: .nan}\n", "jobs.depth.every", "got nan"),
        ("jobs:\n  depth: {every: .inf}\n", "jobs.depth.every", "finite"),
        ("jobs:\n  depth: {every: 1.0e+400}\n", "jobs.depth.every", "finite"),
        ("storage: {flush_every: .inf}\njobs: {}\n", "storage.flush_every", "finite"),
        ("exchange: {timeout: .nan}\njobs: {}\n", "exchange.timeout", "got nan"),
        ("exchange: {request_deadline: .nan}\njobs: {}\n", "exchange.request_deadline", "nan"),
        ("exchange: {request_deadline: .inf}\njobs: {}\n", "exchange.request_deadline", "finite"),
        (
            "exchange: {timeout: 20s, request_deadline: 5s}\njobs: {}\n",
            "exchange.request_deadline",
            "at least exchange.timeout (20s)",
        ),
        ("exchange: {weight_fraction: .nan}\njobs: {}\n", "exchange.weight_fraction", "finite"),
        ("exchange: {weight_fraction: -.inf}\njobs: {}\n", "exchange.weight_fraction", "finite"),
        # YAML 1.1 reads 1e30 as a string, 1.0e+30 as a float: neither is an id.
        ("jobs:\n  trades: {every: 1s, start_id: 1e30}\n", "jobs.trades.start_id", "integer"),
        ("jobs:\n  trades: {every: 1s, start_id: 1.0e+30}\n", "jobs.trades.start_id", "integer"),
        (
            "jobs:\n  trades: {every: 1s, start_id: 1000000000000000000000000000000}\n",
            "jobs.trades.start_id",
            "less than or equal to 9223372036854775807",
        ),
        ("jobs:\n  trades: {every: 1s, start_id: true}\n", "jobs.trades.start_id", "integer"),
        ("jobs:\n  trades: {every: 1s, limit: 2.0e+2}\n", "jobs.trades.limit", "integer"),
        ("exchange: {max_attempts: .nan}\njobs: {}\n", "exchange.max_attempts", "integer"),
        ("exchange: {concurrency: true}\njobs: {}\n", "exchange.concurrency", "integer"),
        (
            "exchange: {max_response_size: {klines: 2GiB}}\njobs: {}\n",
            "exchange.max_response_size.klines",
            "between 1KiB and 1GiB",
        ),
        (
            "exchange: {max_response_size: {default: .inf}}\njobs: {}\n",
            "exchange.max_response_size.default",
            "expected a size",
        ),
        (
            "exchange: {max_response_size: {kline: 1MiB}}\njobs: {}\n",
            "exchange.max_response_size",
            "unknown endpoint(s) kline",
        ),
    ],
)
def test_every_bad_setting_is_a_config_error_naming_key_and_expectation(
    tmp_path: Path, text: str, key: str, expected: str
) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        config.load(path, environ={})
    assert f"{path}: {key}: " in str(info.value)
    assert expected in str(info.value)


def test_the_largest_int64_start_id_and_the_response_bounds_are_accepted(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "exchange:\n"
        "  timeout: 5s\n"
        "  request_deadline: 5s\n"
        "  max_response_size: {default: 1KiB, exchangeInfo: 1GiB, klines: 4MB, depth: 65536}\n"
        "jobs:\n  trades: {every: 1s, start_id: 9223372036854775807}\n",
    )
    settings = config.load(path, environ={})
    assert settings.jobs["trades"].start_id == 2**63 - 1
    assert settings.exchange.request_deadline == 5.0
    assert settings.exchange.max_response_size == {
        "default": 1024,
        "exchangeInfo": 1024**3,
        "klines": 4_000_000,
        "depth": 65536,
    }
    assert config.load(write(tmp_path, "jobs: {}\n"), environ={}).exchange.request_deadline is None


@pytest.mark.parametrize("command", ["plan", "run"])
def test_plan_and_run_exit_2_on_a_nan_setting(tmp_path: Path, command: str) -> None:
    """``plan`` said a schedule with ``every: .nan`` fits."""
    from click.testing import CliRunner

    from collector.cli import main

    path = write(tmp_path, "jobs:\n  depth: {every: .nan}\n")
    result = CliRunner().invoke(main, [command, "--config", str(path), "--sim"])
    assert result.exit_code == 2, result.output
    assert "jobs.depth.every" in result.output and "nan" in result.output
    assert "Traceback" not in result.output
