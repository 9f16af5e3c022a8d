"""deploy/jex-collector.service: it runs a command that exists, and stops and restarts as
the daemon's exit codes and shutdown need."""

from __future__ import annotations

import configparser
import shlex
import shutil
import subprocess
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from collector.cli import main
from collector.collect.daemon import DRAIN_S

UNIT = Path(__file__).resolve().parent.parent / "deploy" / "jex-collector.service"


def unit() -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None, strict=True)
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # keys keep their case
    parser.read_string(UNIT.read_text())
    return parser


def test_exec_start_runs_the_daemon_with_options_the_cli_has() -> None:
    service = unit()["Service"]
    program, command, *args = shlex.split(service["ExecStart"])
    assert program.endswith("/bin/jex-collector") and command == "run"
    run = main.commands["run"]
    options = {opt for param in run.params if isinstance(param, click.Option) for opt in param.opts}
    given = dict(zip(args[::2], args[1::2], strict=True))
    assert set(given) <= options, set(given) - options
    # The archive it writes is the one directory the hardening leaves writable.
    assert given["--data-dir"] in service["ReadWritePaths"].split()
    assert given["--config"].startswith("/etc/jex-collector/")
    # The flags parse: --help after them exits 0 without starting anything.
    result = CliRunner().invoke(main, ["run", *args, "--help"])
    assert result.exit_code == 0, result.output


def test_secrets_come_from_an_environment_file_not_the_unit() -> None:
    service = unit()["Service"]
    assert service["EnvironmentFile"].lstrip("-") == "/etc/jex-collector/env"
    assert "JEX_API" not in service.get("Environment", "")
    assert "JEX_API" not in service["ExecStart"]


def test_a_config_error_is_not_restarted_and_other_failures_are(tmp_path: Path) -> None:
    service = unit()["Service"]
    assert service["Restart"] == "on-failure"
    assert service["RestartPreventExitStatus"].split() == ["2"]
    # The status the CLI gives a configuration mistake is that one.
    broken = tmp_path / "schedules.yaml"
    broken.write_text("jobs:\n  depth: {every: 10s, limit: 7}\n")
    result = CliRunner().invoke(main, ["run", "--config", str(broken)])
    assert result.exit_code == 2, result.output


def test_stopping_leaves_time_to_drain_and_flush() -> None:
    service = unit()["Service"]
    assert service["KillSignal"] == "SIGTERM"
    timeout = service["TimeoutStopSec"]
    assert timeout.endswith("s")
    assert float(timeout.removesuffix("s")) >= DRAIN_S + 60  # drain, flush, a compaction step


def test_the_service_is_hardened() -> None:
    service = unit()["Service"]
    for key, value in {
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "PrivateTmp": "yes",
        "ProtectHome": "yes",
    }.items():
        assert service[key] == value, key
    assert service["User"] == "jex-collector"


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd is not installed")
def test_systemd_analyze_verify_accepts_the_unit(tmp_path: Path) -> None:
    """``systemd-analyze verify`` in a root holding the unit, a stand-in executable and the
    system's own units (verify checks that ExecStart exists)."""
    service = unit()["Service"]
    program = Path(shlex.split(service["ExecStart"])[0])
    executable = tmp_path / program.relative_to("/")
    executable.parent.mkdir(parents=True)
    executable.write_text("#!/bin/sh\n")
    executable.chmod(0o755)
    units = tmp_path / "etc" / "systemd" / "system"
    units.mkdir(parents=True)
    shutil.copy(UNIT, units)
    system_units = Path("/usr/lib/systemd/system")
    if system_units.is_dir():
        (tmp_path / "usr" / "lib" / "systemd").mkdir(parents=True)
        (tmp_path / "usr" / "lib" / "systemd" / "system").symlink_to(system_units)
    result = subprocess.run(
        ["systemd-analyze", "verify", f"--root={tmp_path}", UNIT.name],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "Unknown key" not in result.stderr, result.stderr
