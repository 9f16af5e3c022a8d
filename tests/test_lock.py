"""One daemon per archive: the lock, its probe, and what a second daemon says."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from collector.errors import ArchiveLockedError
from collector.storage.lock import ArchiveLock, daemon_pid


def test_a_second_lock_on_the_same_archive_is_refused_with_the_holders_pid(
    tmp_path: Path,
) -> None:
    with ArchiveLock(tmp_path):
        assert daemon_pid(tmp_path) == os.getpid()
        with pytest.raises(ArchiveLockedError) as refused:
            ArchiveLock(tmp_path).acquire(wait_s=0.1)
    assert refused.value.pid == os.getpid()
    assert str(refused.value) == (
        f"another jex-collector (pid {os.getpid()}) is already collecting into "
        f"{tmp_path.resolve()}; stop it or use another --data-dir"
    )
    assert daemon_pid(tmp_path) is None
    with ArchiveLock(tmp_path):  # released: free to take again
        pass


def test_no_daemon_is_reported_for_an_archive_never_collected_into(tmp_path: Path) -> None:
    assert daemon_pid(tmp_path / "nothing-here") is None


def test_the_lock_of_a_killed_daemon_is_free_at_once(tmp_path: Path) -> None:
    with subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\n"
            "from collector.storage.lock import ArchiveLock\n"
            f"ArchiveLock({str(tmp_path)!r}).acquire()\n"
            "print('locked', flush=True)\n"
            "time.sleep(60)\n",
        ],
        stdout=subprocess.PIPE,
        text=True,
    ) as holder:
        try:
            assert holder.stdout is not None
            assert holder.stdout.readline().strip() == "locked"
            assert daemon_pid(tmp_path) == holder.pid
            holder.send_signal(signal.SIGKILL)
            holder.wait(timeout=10)
        finally:
            holder.kill()
    assert daemon_pid(tmp_path) is None
    with ArchiveLock(tmp_path):
        assert daemon_pid(tmp_path) == os.getpid()


def test_a_second_daemon_on_the_same_archive_exits_1_and_names_the_first(
    tmp_path: Path,
) -> None:
    data_dir = tmp_path / "data"
    config = tmp_path / "schedules.yaml"
    config.write_text("jobs:\n  instruments: {every: 1h}\n")
    with ArchiveLock(data_dir):
        second = subprocess.run(
            [
                sys.executable,
                "-m",
                "collector",
                "run",
                "--config",
                str(config),
                "--data-dir",
                str(data_dir),
                "--base-url",
                "http://127.0.0.1:9",  # never reached: the lock comes first
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert second.returncode == 1, second.stderr
    assert (
        f"error: another jex-collector (pid {os.getpid()}) is already collecting into "
        f"{data_dir.resolve()}; stop it or use another --data-dir"
    ) in second.stderr
    assert "first contact" not in second.stderr
