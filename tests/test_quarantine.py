"""The quarantine: where unreadable payloads go, what a file holds, its bounds, no secrets,
on a local disk and on an object store."""

from __future__ import annotations

import base64
import json
import logging
import os
import re
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from collector.collect.quarantine import DIR_NAME, ORPHAN_AGE_S, REDACTED, Quarantine
from collector.exchange.client import Response
from collector.storage.location import Archive
from tests.test_runstate import fresh_prefix, s3_server_bucket

NOW = 1_764_003_723_456  # 2025-11-24T17:02:03.456Z
KEY = "sk-live-0123456789abcdef"


def response(body: bytes = b'[{"id": "1", "pri', **overrides: Any) -> Response:
    fields: dict[str, Any] = {
        "payload": None,
        "received_at": NOW - 5,
        "status": 200,
        "used_weight": 7,
        "endpoint": "ticker/24hr",
        "market": "spot",
        "params": {"symbol": "BTCUSDT"},
        "headers": {"content-type": "application/json", "x-mbx-used-weight-1m": "7"},
        "body": body,
    }
    return Response(**{**fields, **overrides})


def files(data_dir: Path) -> list[Path]:
    return sorted((data_dir / DIR_NAME).rglob("*"))


def test_a_file_per_payload_named_by_date_time_and_endpoint(tmp_path: Path) -> None:
    quarantine = Quarantine(tmp_path, clock_ms=lambda: NOW)
    relative = quarantine.add(response(), kind="invalid_json", error="not valid JSON")
    assert relative is not None
    assert re.fullmatch(r"_quarantine/2025-11-24/170203456-ticker-24hr-[0-9a-f]{6}\.json", relative)
    path = tmp_path / relative
    document = json.loads(path.read_text())
    assert document == {
        "kind": "invalid_json",
        "endpoint": "ticker/24hr",
        "market": "spot",
        "params": {"symbol": "BTCUSDT"},
        "status": 200,
        "headers": {"content-type": "application/json", "x-mbx-used-weight-1m": "7"},
        "time": "2025-11-24T17:02:03.456+00:00",
        "time_ms": NOW,
        "received_at": NOW - 5,
        "error": "not valid JSON",
        "body_encoding": "utf-8",
        "body_bytes": 17,
        "body_truncated": False,
        "body": '[{"id": "1", "pri',
    }
    assert files(tmp_path) == [path.parent, path], "no temporary file is left"
    assert quarantine.written == {("ticker-24hr", "invalid_json"): 1}


def test_rejected_records_are_stored_with_their_reasons(tmp_path: Path) -> None:
    quarantine = Quarantine(tmp_path, clock_ms=lambda: NOW)
    rejected = [({"symbol": f"../{i}"}, "not a valid symbol") for i in range(150)]
    quarantine.rejected(response(b"[]"), rejected)
    (path,) = (tmp_path / DIR_NAME).rglob("*.json")
    document = json.loads(path.read_text())
    assert document["kind"] == "rejected_records" and document["rejected_count"] == 150
    assert len(document["rejected"]) == 100
    assert document["rejected"][0] == {"record": {"symbol": "../0"}, "reason": "not a valid symbol"}


def test_a_body_that_is_not_utf8_is_base64_and_a_large_one_is_cut_saying_so(
    tmp_path: Path,
) -> None:
    quarantine = Quarantine(tmp_path, clock_ms=lambda: NOW, max_body_bytes=10)
    binary = bytes(range(255, -1, -1))
    relative = quarantine.add(response(binary), kind="invalid_json")
    assert relative is not None
    document = json.loads((tmp_path / relative).read_text())
    assert document["body_encoding"] == "base64" and document["body_truncated"] is True
    assert document["body_bytes"] == 256
    assert base64.b64decode(document["body"]) == binary[:10]
    text = "\u00e9" * 20  # two bytes each: a byte cut would split one
    relative = quarantine.add(response(text.encode()), kind="invalid_json")
    assert relative is not None
    document = json.loads((tmp_path / relative).read_text())
    assert (document["body_encoding"], document["body"]) == ("utf-8", text[:10])


def test_the_key_is_scrubbed_from_everything_stored(tmp_path: Path) -> None:
    quarantine = Quarantine(tmp_path, redact=[KEY, None, "short"], clock_ms=lambda: NOW)
    echoed = response(
        f'{{"msg": "bad key {KEY}"}}'.encode(),
        params={"symbol": "BTCUSDT", "echo": KEY},
        headers={"x-echo": KEY, KEY: "as a name"},
    )
    quarantine.add(echoed, kind="wrong_shape", error=f"error mentioning {KEY}")
    quarantine.rejected(response(b"\xff" + KEY.encode()), [({"id": KEY}, f"bad {KEY}")])
    paths = [p for p in files(tmp_path) if p.is_file()]
    assert len(paths) == 2
    for path in paths:
        text = path.read_text()
        assert KEY not in text and REDACTED in text
        document = json.loads(text)
        if document["body_encoding"] == "base64":
            assert KEY.encode() not in base64.b64decode(document["body"])


def test_a_secret_too_short_to_be_a_key_is_not_scrubbed(tmp_path: Path) -> None:
    quarantine = Quarantine(tmp_path, redact=["k"], clock_ms=lambda: NOW)
    relative = quarantine.add(response(b'{"kind": "ok"}'), kind="wrong_shape")
    assert relative is not None
    assert json.loads((tmp_path / relative).read_text())["body"] == '{"kind": "ok"}'


def test_at_most_n_files_per_endpoint_and_hour_and_the_drop_is_logged_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    now = [NOW]
    quarantine = Quarantine(tmp_path, clock_ms=lambda: now[0], max_files_per_hour=3)
    for _ in range(5):
        quarantine.add(response(), kind="invalid_json")
    quarantine.add(response(endpoint="depth"), kind="invalid_json")
    assert len([p for p in files(tmp_path) if p.is_file()]) == 4
    assert quarantine.dropped == {("ticker-24hr", "invalid_json"): 2}
    drops = [r for r in caplog.records if "quarantine full" in r.getMessage()]
    assert len(drops) == 1 and "ticker-24hr" in drops[0].getMessage()
    now[0] += 3_600_000  # the next hour
    assert quarantine.add(response(), kind="invalid_json") is not None


def test_a_daily_byte_cap_bounds_the_quarantine(tmp_path: Path) -> None:
    quarantine = Quarantine(tmp_path, clock_ms=lambda: NOW, max_bytes_per_day=1)
    assert quarantine.add(response(), kind="invalid_json") is not None
    assert quarantine.add(response(endpoint="depth"), kind="invalid_json") is None
    assert quarantine.dropped == {("depth", "invalid_json"): 1}


def test_a_failing_write_is_logged_and_never_raised(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    not_a_directory = tmp_path / "data"
    not_a_directory.write_text("a file where the data directory should be")
    quarantine = Quarantine(not_a_directory, clock_ms=lambda: NOW)
    with caplog.at_level(logging.WARNING):
        assert quarantine.add(response(), kind="invalid_json") is None
    assert "could not write a quarantine file" in caplog.text
    assert quarantine.written == {}


def test_temporary_files_left_by_a_crash_are_removed_but_not_a_write_under_way(
    tmp_path: Path,
) -> None:
    """Another collector (a shard) may be writing into the same quarantine: only a
    temporary file too old to be a write under way is a crash's leftover."""
    quarantine = Quarantine(tmp_path, clock_ms=lambda: NOW)
    relative = quarantine.add(response(), kind="invalid_json")
    assert relative is not None
    kept = tmp_path / relative
    crashed = kept.parent / f".{kept.name}.4242.0a1b2c3d.tmp"
    crashed.write_text("{")
    old = time.time() - ORPHAN_AGE_S - 1
    os.utime(crashed, (old, old))
    under_way = kept.parent / f".{kept.name}.4343.0a1b2c3d.tmp"
    under_way.write_text("{")
    assert quarantine.remove_orphans() == 1
    assert [p for p in files(tmp_path) if p.is_file()] == [under_way, kept]
    assert quarantine.remove_orphans(now=time.time() + ORPHAN_AGE_S + 1) == 1
    assert [p for p in files(tmp_path) if p.is_file()] == [kept]


# -- on an object store ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def s3_bucket() -> Iterator[str]:
    with s3_server_bucket() as bucket:
        yield bucket


def test_the_quarantine_on_an_object_store(
    s3_bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Files go to the bucket (one PUT each), scrubbed and bounded as on a disk, and
    nothing lands on the local disk."""
    monkeypatch.chdir(tmp_path)
    uri = fresh_prefix(s3_bucket)
    quarantine = Quarantine(uri, redact=[KEY], clock_ms=lambda: NOW, max_files_per_hour=2)
    echoed = response(f"bad key {KEY}".encode(), params={"echo": KEY})
    written = [quarantine.add(echoed, kind="invalid_json", error=KEY) for _ in range(3)]
    assert written[2] is None and quarantine.dropped == {("ticker-24hr", "invalid_json"): 1}
    archive = Archive.of(uri)
    names = archive.list_names(f"{DIR_NAME}/2025-11-24")
    assert [f"{DIR_NAME}/2025-11-24/{name}" for name in names] == sorted(
        w for w in written if w is not None
    )
    for name in names:
        data = archive.read_bytes(f"{DIR_NAME}/2025-11-24/{name}")
        assert data is not None and KEY.encode() not in data
        document = json.loads(data)
        assert (document["kind"], document["body"]) == ("invalid_json", f"bad key {REDACTED}")
    assert quarantine.remove_orphans() == 0
    assert list(tmp_path.iterdir()) == []


def test_a_quarantine_on_an_unreachable_store_never_fails_the_caller(
    s3_bucket: str, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # nothing listens there
    quarantine = Quarantine(f"s3://no-such-bucket-{uuid.uuid4().hex[:8]}", clock_ms=lambda: NOW)
    with caplog.at_level(logging.WARNING):
        assert quarantine.add(response(), kind="invalid_json") is None
    assert "could not write a quarantine file" in caplog.text
    assert quarantine.written == {}


# -- the file's size, as written (issue 14, case 12) ---------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        b"\x00" * (512 * 1024),  # six bytes each once JSON-escaped: was a 3.1 MB file
        "\U0001f600".encode() * (512 * 1024),  # four bytes each in UTF-8
        b'"\\' * (400 * 1024),  # two characters escaped to two bytes each
        bytes(range(256)) * 8192,  # not UTF-8: base64, four bytes for three
    ],
    ids=["nul", "emoji", "quotes", "binary"],
)
def test_a_file_is_capped_as_written_not_as_received(tmp_path: Path, body: bytes) -> None:
    quarantine = Quarantine(tmp_path, clock_ms=lambda: NOW)
    relative = quarantine.add(response(body), kind="invalid_json", error="x" * 100_000)
    assert relative is not None
    size = (tmp_path / relative).stat().st_size
    assert size <= quarantine.max_file_bytes == 1024 * 1024
    document = json.loads((tmp_path / relative).read_text())
    assert document["body_truncated"] is True and document["body_bytes"] == len(body)
    kept = (
        base64.b64decode(document["body"])
        if document["body_encoding"] == "base64"
        else document["body"].encode()
    )
    assert body.startswith(kept) and len(kept) > 100 * 1024, "as much as fits is kept"
    assert len(document["error"]) < 5000 and "cut" in document["error"]
    if document["body_encoding"] == "utf-8":  # escaping made it larger than the file
        assert size > 900 * 1024, "the room is used"


def test_rejected_records_are_bounded_in_number_and_size(tmp_path: Path) -> None:
    quarantine = Quarantine(tmp_path, clock_ms=lambda: NOW)
    records = [
        ({"id": str(i), "price": "\x00" * 200_000}, "price is not a number") for i in range(300)
    ]
    headers = {f"x-h{i}": "\x1b" * 5000 for i in range(500)}
    relative = quarantine.rejected(response(b"[]", headers=headers), records)
    assert relative is None  # rejected() returns nothing; the file is there
    (path,) = [p for p in files(tmp_path) if p.suffix == ".json"]
    assert path.stat().st_size <= quarantine.max_file_bytes
    document = json.loads(path.read_text())
    assert document["rejected_count"] == 300
    assert 0 < document["rejected_kept"] == len(document["rejected"]) <= 100
    first = document["rejected"][0]
    assert first["reason"] == "price is not a number"
    assert isinstance(first["record"], str) and "cut" in first["record"], "cut as JSON text"
    assert len(document["headers"]) <= 100


def test_the_clients_kinds_are_kept(tmp_path: Path) -> None:
    quarantine = Quarantine(tmp_path, clock_ms=lambda: NOW)
    quarantine(response(b"[1,1,1,"), "too big", kind="too_large")
    quarantine(response(b'[{"pr'), "timed out", kind="deadline_exceeded")
    quarantine(response(b"<html>"), "not JSON")
    kinds = sorted(json.loads(p.read_text())["kind"] for p in files(tmp_path) if p.is_file())
    assert kinds == ["deadline_exceeded", "invalid_json", "too_large"]
    assert quarantine.written[("ticker-24hr", "too_large")] == 1
