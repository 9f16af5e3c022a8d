"""The archive's stack against a real S3-compatible server (SeaweedFS), started by
these tests (``tests/s3server.py``), with endpoint and credentials only in the environment.

What each client needs, proven below:

* deltalake (delta-rs 1.6): ``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``,
  ``AWS_SECRET_ACCESS_KEY``, ``AWS_ALLOW_HTTP=true`` (for http://); no storage_options.
  Commits are conditional PUTs (``If-None-Match: *``) by default: no lock, no
  ``AWS_S3_ALLOW_UNSAFE_RENAME``.
* pyarrow: ``FileSystem.from_uri("s3://...")`` reads ``AWS_ENDPOINT_URL`` itself;
  ``S3FileSystem()`` does not: give it ``endpoint_override=os.environ["AWS_ENDPOINT_URL"]``.
* DuckDB: a TEMPORARY secret (memory only) built from the environment, with ENDPOINT
  ``host:port``, ``URL_STYLE 'path'``, ``USE_SSL false``: the delta extension reads
  nothing from the environment, and without a secret it asks the EC2 metadata service.
* dask-deltatable 0.4: an ``s3a://`` URI (an ``s3://`` one sends it down a boto3 path that
  breaks, see ``test_dask_deltatable_s3_scheme_is_broken``); s3fs reads the environment.
"""

from __future__ import annotations

import dataclasses
import http.client
import http.server
import json
import os
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import Iterator
from urllib.parse import urlsplit

import dask_deltatable
import distributed
import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest
from deltalake import DeltaTable, write_deltalake
from deltalake.exceptions import DeltaError
from deltalake.transaction import AddAction

from collector.read import catalog
from tests.s3server import S3Server, start_seaweedfs

BUCKET = "archive"
#: Variables that could point a client elsewhere than the test server: cleared first.
_FOREIGN_ENV = ("AWS_", "DUCKDB_S3_")


@pytest.fixture(scope="module", params=["seaweedfs"])
def s3(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[S3Server]:
    """A running server with bucket ``archive``, and its variables in ``os.environ`` for
    the module's tests (and the processes they start); both undone afterwards."""
    kind = request.param
    workdir = tmp_path_factory.mktemp(kind)
    server = start_seaweedfs(workdir)
    try:
        server.create_bucket(BUCKET)
        with pytest.MonkeyPatch.context() as env:
            for name in list(os.environ):
                if name.startswith(_FOREIGN_ENV):
                    env.delenv(name)
            for name, value in server.env().items():
                env.setenv(name, value)
            yield server
    finally:
        server.stop()


def fresh_uri(name: str) -> str:
    return f"s3://{BUCKET}/prefix/{name}-{uuid.uuid4().hex[:8]}"


def key_of(uri: str) -> str:
    """``prefix/t-...`` of ``s3://archive/prefix/t-...``."""
    return uri.removeprefix(f"s3://{BUCKET}/")


def trades(writer: str, first: int, n: int) -> pa.Table:
    return pa.table(
        {
            "day": pa.array([f"2025-11-{24 + (first + i) % 3}" for i in range(n)]),
            "writer": pa.array([writer] * n),
            "seq": pa.array(range(first, first + n), pa.int64()),
            "qty": pa.array([float(first + i) for i in range(n)]),
        }
    )


def data_files(s3: S3Server, uri: str) -> set[str]:
    """The URIs of the Parquet objects under the table's folder, outside ``_delta_log``."""
    keys = s3.list_keys(BUCKET, key_of(uri) + "/")
    return {
        f"s3://{BUCKET}/{k}" for k in keys if k.endswith(".parquet") and "/_delta_log/" not in k
    }


def rows(table: pa.Table) -> list[tuple[str, str, int, float]]:
    return sorted(
        zip(
            table["day"].to_pylist(),
            table["writer"].to_pylist(),
            table["seq"].to_pylist(),
            table["qty"].to_pylist(),
            strict=True,
        )
    )


@pytest.fixture(scope="module")
def shared_table(s3: S3Server) -> tuple[str, pa.Table]:
    """A partitioned table written by three commits, read by the reader tests."""
    uri = fresh_uri("shared")
    parts = [trades("a", 0, 50), trades("b", 50, 30), trades("a", 80, 20)]
    write_deltalake(uri, parts[0], partition_by=["day"])
    for part in parts[1:]:
        write_deltalake(uri, part, mode="append")
    return uri, pa.concat_tables(parts)


# --- the servers themselves ----------------------------------------------------------------


def test_server_signatures_and_conditional_put(s3: S3Server) -> None:
    """The server refuses a second ``If-None-Match: *`` PUT (412), an unsigned request and
    a bad signature (403)."""
    key = f"probe/{uuid.uuid4().hex}"
    assert s3.put_object(BUCKET, key, b"first", {"If-None-Match": "*"}) == 200
    assert s3.put_object(BUCKET, key, b"second", {"If-None-Match": "*"}) == 412
    assert s3.get_object(BUCKET, key) == b"first"

    forged = dataclasses.replace(s3, secret_key="not-the-secret")
    status, _ = forged.request("GET", f"/{BUCKET}/{key}")
    endpoint = urlsplit(s3.endpoint)
    connection = http.client.HTTPConnection(endpoint.hostname or "", endpoint.port, timeout=10)
    connection.request("GET", f"/{BUCKET}/{key}")
    anonymous = connection.getresponse().status
    connection.close()
    assert (status, anonymous) == (403, 403)


# --- deltalake -----------------------------------------------------------------------------


def test_deltalake_partitioned_create_append_read(s3: S3Server) -> None:
    uri = fresh_uri("t")
    first, second = trades("a", 0, 6), trades("b", 6, 4)
    write_deltalake(uri, first, partition_by=["day"])  # no storage_options: environment only
    write_deltalake(uri, second, mode="append")

    table = DeltaTable(uri)
    assert table.version() == 1
    assert table.metadata().partition_columns == ["day"]
    assert rows(table.to_pyarrow_table()) == rows(pa.concat_tables([first, second]))
    keys = s3.list_keys(BUCKET, key_of(uri) + "/")
    assert [k.rpartition("/")[2] for k in keys if "/_delta_log/" in k] == [
        "00000000000000000000.json",
        "00000000000000000001.json",
    ]
    data_keys = {f"s3://{BUCKET}/{k}" for k in keys if k.endswith(".parquet")}
    assert data_keys == set(table.file_uris())
    assert {k.split("/")[2] for k in keys if k.endswith(".parquet")} == {
        "day=2025-11-24",
        "day=2025-11-25",
        "day=2025-11-26",
    }


def test_deltalake_needs_allow_http_for_an_http_endpoint(
    s3: S3Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AWS_ALLOW_HTTP")
    with pytest.raises((DeltaError, OSError), match="URL scheme is not allowed"):
        write_deltalake(fresh_uri("http"), trades("a", 0, 1))


def test_deltalake_wrong_secret_is_refused_by_seaweedfs(
    s3: S3Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")
    with pytest.raises((DeltaError, OSError), match=r"(?i)signature|forbidden|403"):
        write_deltalake(fresh_uri("forged"), trades("a", 0, 1))


class RecordingProxy:
    """A plain HTTP proxy on 127.0.0.1 in front of ``upstream`` that records each
    request's method, path and ``If-None-Match`` header, and the answer's status.

    It forwards the Host header unchanged, so SigV4 signatures made for the proxy's
    address stay valid upstream (SeaweedFS checks the signed host it receives)."""

    def __init__(self, upstream: str) -> None:
        self.records: list[tuple[str, str, str | None, int]] = []
        host, _, port = urlsplit(upstream).netloc.partition(":")
        records, lock = self.records, threading.Lock()

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # else delayed ACKs cost 40 ms a response

            def log_message(self, format: str, *args: object) -> None:
                pass

            def _forward(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                headers = {
                    k: v
                    for k, v in self.headers.items()
                    if k.lower() not in ("connection", "keep-alive", "proxy-connection")
                }
                upstream = http.client.HTTPConnection(host, int(port), timeout=30)
                try:
                    upstream.request(self.command, self.path, body=body, headers=headers)
                    answer = upstream.getresponse()
                    payload = answer.read()
                    with lock:
                        records.append(
                            (
                                self.command,
                                self.path,
                                self.headers.get("If-None-Match"),
                                answer.status,
                            )
                        )
                    self.send_response(answer.status)
                    for k, v in answer.getheaders():
                        if k.lower() in ("connection", "keep-alive", "transfer-encoding"):
                            continue
                        if k.lower() == "content-length" and self.command != "HEAD":
                            continue
                        self.send_header(k, v)
                    if self.command != "HEAD":
                        self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    if self.command != "HEAD":
                        self.wfile.write(payload)
                finally:
                    upstream.close()

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _forward

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> RecordingProxy:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


def test_deltalake_commits_are_conditional_puts(
    s3: S3Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every commit file delta-rs writes is a PUT with ``If-None-Match: *``, with no
    option set: a second writer of the same version gets 412 instead of overwriting."""
    uri = fresh_uri("cond")
    with RecordingProxy(s3.endpoint) as proxy:
        monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.endpoint)
        write_deltalake(uri, trades("a", 0, 3), partition_by=["day"])
        write_deltalake(uri, trades("a", 3, 3), mode="append")
        DeltaTable(uri).create_checkpoint()
    commits = [
        r
        for r in proxy.records
        if r[0] == "PUT" and "/_delta_log/0" in r[1] and r[1].endswith(".json")
    ]
    assert [r[1].rpartition("/")[2] for r in commits] == [
        "00000000000000000000.json",
        "00000000000000000001.json",
    ]
    assert all(r[2] == "*" and r[3] == 200 for r in commits), commits
    # no temporary commit file to rename or copy into place (the lock-less unsafe way)
    assert not any("_commit_" in r[1] for r in proxy.records)


WRITER_SCRIPT = textwrap.dedent(
    """
    import os, sys
    import pyarrow as pa
    from deltalake import write_deltalake
    uri, writer, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    sys.stdin.readline()  # start together
    for i in range(n):
        table = pa.table({"writer": [writer], "seq": pa.array([i], pa.int64())})
        write_deltalake(uri, table, mode="append")
    sys.stdout.flush()
    os._exit(0)  # deltalake + pyarrow can abort in interpreter teardown
    """
)


def test_two_concurrent_writers(s3: S3Server, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two processes append 20 commits each to one table: every row once, versions 0..40
    without gap, one add per commit. Their requests go through a recording proxy: every
    commit is an ``If-None-Match: *`` PUT, and a lost race is a 412, then a retry."""
    n = 20
    uri = fresh_uri("race")
    schema = pa.schema([("writer", pa.string()), ("seq", pa.int64())])
    DeltaTable.create(uri, schema)
    with RecordingProxy(s3.endpoint) as proxy:
        monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.endpoint)  # inherited by the writers
        writers = [
            subprocess.Popen(
                [sys.executable, "-c", WRITER_SCRIPT, uri, name, str(n)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
            for name in ("w1", "w2")
        ]
        try:
            for proc in writers:
                assert proc.stdin is not None
                proc.stdin.write(b"go\n")
                proc.stdin.flush()
            for proc in writers:
                _, err = proc.communicate(timeout=180)
                assert proc.returncode == 0, err.decode(errors="replace")[-3000:]
        finally:
            for proc in writers:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3.endpoint)

    commits = [r for r in proxy.records if r[0] == "PUT" and "/_delta_log/0" in r[1]]
    assert commits and all(r[2] == "*" for r in commits), commits
    lost = [r for r in commits if r[3] == 412]
    assert len(commits) == 2 * n + len(lost)  # each lost race retried at the next version
    assert all(r[3] in (200, 412) for r in commits), commits

    table = DeltaTable(uri)
    assert table.version() == 2 * n
    got = table.to_pyarrow_table()
    assert sorted(zip(got["writer"].to_pylist(), got["seq"].to_pylist(), strict=True)) == [
        (w, i) for w in ("w1", "w2") for i in range(n)
    ]
    log = [k.rpartition("/")[2] for k in s3.list_keys(BUCKET, key_of(uri) + "/_delta_log/")]
    assert [k for k in log if k.endswith(".json")] == [f"{v:020d}.json" for v in range(2 * n + 1)]
    for version in range(1, 2 * n + 1):
        lines = s3.get_object(BUCKET, f"{key_of(uri)}/_delta_log/{version:020d}.json").splitlines()
        actions = [next(iter(json.loads(line))) for line in lines]
        assert actions.count("add") == 1, (version, actions)
    assert [h["version"] for h in table.history()] == list(range(2 * n, -1, -1))


# --- pyarrow + the low-level commit ----------------------------------------------------------


def test_pyarrow_file_committed_by_create_write_transaction(s3: S3Server) -> None:
    """A Parquet file written by pyarrow's S3FileSystem into the table's folder becomes
    part of the table through ``create_write_transaction`` with an add action."""
    uri = fresh_uri("manual")
    write_deltalake(uri, trades("a", 0, 4), partition_by=["day"])
    table = DeltaTable(uri)

    # The constructor ignores AWS_ENDPOINT_URL (it would go to AWS): pass it on.
    fs = pafs.S3FileSystem(endpoint_override=os.environ["AWS_ENDPOINT_URL"])
    # FileSystem.from_uri reads AWS_ENDPOINT_URL itself.
    from_uri, path = pafs.FileSystem.from_uri(uri)
    assert path == f"{BUCKET}/{key_of(uri)}"
    assert from_uri.get_file_info(f"{path}/_delta_log").type == pafs.FileType.Directory

    manual = trades("manual", 100, 5)
    extra = manual.filter(pc.equal(manual["day"], "2025-11-25"))
    relative = f"day=2025-11-25/manual-{uuid.uuid4().hex}.parquet"
    pq.write_table(extra.drop_columns(["day"]), f"{path}/{relative}", filesystem=fs)
    size = fs.get_file_info(f"{path}/{relative}").size
    action = AddAction(
        path=relative,
        size=size,
        partition_values={"day": "2025-11-25"},
        modification_time=int(time.time() * 1000),
        data_change=True,
        stats="{}",
    )
    table.create_write_transaction(actions=[action], mode="append", schema=table.schema())

    after = DeltaTable(uri)
    assert after.version() == 1
    assert f"{uri}/{relative}" in after.file_uris()
    assert rows(after.to_pyarrow_table()) == rows(pa.concat_tables([trades("a", 0, 4), extra]))


# --- DuckDB --------------------------------------------------------------------------------


def duckdb_secret_sql(environ: os._Environ[str] | dict[str, str] = os.environ) -> str:
    """A TEMPORARY S3 secret (held in memory, never written) from the AWS_* variables.

    DuckDB's delta extension reads only secrets (not AWS_* nor DUCKDB_S3_*), and a secret
    without KEY_ID makes it send unsigned requests: so the key and secret go in here,
    read from the environment at run time. The endpoint must be ``host:port`` with
    USE_SSL false for http, and path-style URLs (an IP has no bucket subdomains)."""
    endpoint = urlsplit(environ["AWS_ENDPOINT_URL"])

    def literal(value: str) -> str:
        return "'" + value.replace("'", "''") + "'"

    region = environ.get("AWS_REGION") or environ.get("AWS_DEFAULT_REGION") or "us-east-1"
    return (
        "CREATE OR REPLACE TEMPORARY SECRET archive_s3 (TYPE s3, PROVIDER config, "
        f"KEY_ID {literal(environ['AWS_ACCESS_KEY_ID'])}, "
        f"SECRET {literal(environ['AWS_SECRET_ACCESS_KEY'])}, "
        f"REGION {literal(region)}, ENDPOINT {literal(endpoint.netloc)}, "
        f"URL_STYLE 'path', USE_SSL {'true' if endpoint.scheme == 'https' else 'false'})"
    )


def duckdb_with_s3() -> duckdb.DuckDBPyConnection:
    connection = duckdb.connect(config={"autoinstall_known_extensions": False})
    catalog.load_extension(connection, "httpfs")
    catalog.load_extension(connection, "delta")
    connection.execute(duckdb_secret_sql())
    return connection


def test_duckdb_delta_scan_and_read_parquet(
    s3: S3Server, shared_table: tuple[str, pa.Table]
) -> None:
    uri, expected = shared_table
    connection = duckdb_with_s3()
    try:
        persistent, storage, shown = connection.execute(
            "SELECT persistent, storage, secret_string FROM duckdb_secrets() "
            "WHERE name = 'archive_s3'"
        ).fetchone() or (None, None, "")
        assert (persistent, storage) == (False, "memory")
        assert s3.secret_key not in shown  # duckdb_secrets() redacts it

        got = connection.sql(f"SELECT day, writer, seq, qty FROM delta_scan('{uri}')")
        assert rows(got.to_arrow_table()) == rows(expected)
        total, count = connection.execute(
            "SELECT sum(qty), count(*) "
            f"FROM read_parquet('{uri}/*/*.parquet', hive_partitioning = true)"
        ).fetchone() or (None, None)
        assert (total, count) == (sum(expected["qty"].to_pylist()), expected.num_rows)
    finally:
        connection.close()


def test_dask_deltatable_on_a_local_cluster(
    s3: S3Server, shared_table: tuple[str, pa.Table]
) -> None:
    uri, expected = shared_table
    connection = duckdb_with_s3()
    try:
        duck_sum = connection.execute(f"SELECT sum(qty) FROM delta_scan('{uri}')").fetchone()
    finally:
        connection.close()
    # s3a:// : the same table, read by delta-rs and s3fs, without dask-deltatable's boto3
    # credential lookup (which breaks, see below). Worker processes inherit os.environ.
    s3a = "s3a://" + uri.removeprefix("s3://")
    with (
        distributed.LocalCluster(
            n_workers=2, processes=True, threads_per_worker=1, dashboard_address=None
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        frame = dask_deltatable.read_deltalake(s3a)
        assert frame.npartitions == len(DeltaTable(uri).file_uris())
        total = client.compute(frame["qty"].sum()).result(timeout=120)
    assert duck_sum == (total,)
    assert total == sum(expected["qty"].to_pylist())


def test_dask_deltatable_s3_scheme_is_broken(
    s3: S3Server, shared_table: tuple[str, pa.Table]
) -> None:
    """dask-deltatable 0.4.0, given ``s3://`` and no credentials in its options, looks
    them up with boto3: without boto3 (our dask extra does not need it) that fails at
    once; with it, it hands delta-rs ``AWS_SESSION_TOKEN=None`` (a TypeError) and s3fs
    ``AWS_S3_ALLOW_UNSAFE_RENAME`` (another). When this test fails, it is fixed."""
    uri, _ = shared_table
    with pytest.raises((TypeError, ModuleNotFoundError)):
        dask_deltatable.read_deltalake(uri)


# --- maintenance -----------------------------------------------------------------------------


def test_checkpoint_and_vacuum(s3: S3Server) -> None:
    uri = fresh_uri("vacuum")
    write_deltalake(uri, trades("a", 0, 6), partition_by=["day"])
    write_deltalake(uri, trades("b", 6, 6), mode="append")
    final = trades("c", 12, 6)
    write_deltalake(uri, final, mode="overwrite")
    table = DeltaTable(uri)
    assert table.version() == 2
    before = data_files(s3, uri)
    live = set(table.file_uris())
    assert live < before  # the overwritten files are still there

    table.create_checkpoint()
    log = s3.list_keys(BUCKET, key_of(uri) + "/_delta_log/")
    assert f"{key_of(uri)}/_delta_log/00000000000000000002.checkpoint.parquet" in log
    assert (
        json.loads(s3.get_object(BUCKET, f"{key_of(uri)}/_delta_log/_last_checkpoint"))["version"]
        == 2
    )

    deleted = table.vacuum(retention_hours=0, enforce_retention_duration=False, dry_run=False)
    assert {f"{uri}/{d}" for d in deleted} == before - live
    after = data_files(s3, uri)
    assert after == live

    reread = DeltaTable(uri)  # from the checkpoint
    assert reread.version() >= 2  # vacuum itself may commit (VACUUM START/END)
    assert rows(reread.to_pyarrow_table()) == rows(final)
    connection = duckdb_with_s3()
    try:
        count = connection.execute(f"SELECT count(*) FROM delta_scan('{uri}')").fetchone()
    finally:
        connection.close()
    assert count == (final.num_rows,)
