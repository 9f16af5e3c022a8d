"""Where an archive is: a local folder or an S3-compatible object store.

``storage.uri`` (and ``--data-dir``) is a local path (``data``, the default) or
``s3://bucket/prefix``. An :class:`Archive` names it once, absolutely, and gives every
module the same three things:

* the Delta table of a dataset (:meth:`Archive.table_uri`, opened by ``deltalake``);
* a ``pyarrow.fs`` file system and paths on it, for the data files the writer and
  compaction write (:meth:`Archive.filesystem`, :meth:`Archive.fs_path`);
* small objects beside the tables (``_state/``, ``_quarantine/``), written whole
  (:meth:`Archive.write_bytes`: a temporary file renamed into place on a disk, one PUT
  on an object store; a reader sees the old object or the new one).

Endpoint and credentials of an object store come only from the standard environment
variables, which ``deltalake``, pyarrow and DuckDB each read themselves:
``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_REGION``
(and ``AWS_ALLOW_HTTP=true`` for a plain-http test server). Nothing here stores or
logs them. The store must support conditional writes (``If-None-Match``), which
Delta's commits need to be safe with several writers.

What belongs to one host (the write-ahead log, the pause file after a 429/418, the
daemon's lock) never goes to an object store: see :func:`collector.config.Settings.state_dir`.
"""

from __future__ import annotations

import contextlib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import pyarrow as pa
import pyarrow.fs as pafs

from collector.errors import ConfigError, StorageError
from collector.storage.files import write_atomically

SCHEME = "s3://"
#: S3 bucket names: 3-63 lowercase letters, digits, dots and hyphens.
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
#: Prefix segments we create and accept: no empty segment, no dot segment, printable.
_SEGMENT = re.compile(r"^[A-Za-z0-9._=+-]+$")


def is_remote(value: str | Path) -> bool:
    return str(value).startswith(SCHEME)


def _check_s3(uri: str) -> tuple[str, str]:
    """(bucket, prefix) of an ``s3://bucket/prefix`` URI; ConfigError naming the problem."""
    parts = urlsplit(uri)
    if parts.query or parts.fragment or "@" in parts.netloc or ":" in parts.netloc:
        # The URI is not repeated: a user:secret@ part would end up in a log.
        raise ConfigError(
            "an archive URI is s3://bucket/prefix, without credentials, port or query; "
            "the endpoint and credentials come from AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID "
            "and AWS_SECRET_ACCESS_KEY",
            source="storage.uri",
        )
    bucket = parts.netloc
    if not _BUCKET.match(bucket) or ".." in bucket:
        raise ConfigError(
            f"{uri!r}: {bucket!r} is not an S3 bucket name (3-63 lowercase letters, "
            "digits, dots and hyphens)",
            source="storage.uri",
        )
    prefix = parts.path.strip("/")
    for segment in prefix.split("/") if prefix else ():
        if not _SEGMENT.match(segment) or segment in (".", ".."):
            raise ConfigError(
                f"{uri!r}: the prefix segment {segment!r} is not accepted (letters, "
                "digits and . _ = + - only)",
                source="storage.uri",
            )
    return bucket, prefix


@dataclass(frozen=True)
class Archive:
    """An archive's location: ``uri`` is an absolute local path or ``s3://bucket[/prefix]``
    (normalised: no trailing slash)."""

    uri: str
    _fs: list[pafs.FileSystem] = field(default_factory=list, compare=False, repr=False)

    @classmethod
    def of(cls, value: str | Path | Archive) -> Archive:
        if isinstance(value, Archive):
            return value
        text = str(value)
        if is_remote(text):
            bucket, prefix = _check_s3(text)
            return cls(f"{SCHEME}{bucket}/{prefix}" if prefix else f"{SCHEME}{bucket}")
        if "://" in text:
            raise ConfigError(
                f"{text!r}: an archive is a local path or s3://bucket/prefix",
                source="storage.uri",
            )
        return cls(str(Path(text).resolve()))

    def __str__(self) -> str:
        return self.uri

    @property
    def remote(self) -> bool:
        return is_remote(self.uri)

    @property
    def path(self) -> Path:
        """The local folder; a StorageError for an object store."""
        if self.remote:
            raise StorageError(f"{self.uri} is not a local folder", path=self.uri)
        return Path(self.uri)

    def table_uri(self, dataset: str) -> str:
        from collector.storage import delta

        return delta.table_uri(self.uri, dataset)

    # -- pyarrow ---------------------------------------------------------------------------

    def filesystem(self) -> pafs.FileSystem:
        """The file system of the archive (one per Archive, made on first use)."""
        if not self._fs:
            self._fs.append(s3_filesystem() if self.remote else pafs.LocalFileSystem())
        return self._fs[0]

    def fs_path(self, *parts: str) -> str:
        """A path on :meth:`filesystem` under the archive (``bucket/prefix/...`` on S3)."""
        base = self.uri[len(SCHEME) :] if self.remote else self.uri
        return "/".join([base.rstrip("/"), *(p.strip("/") for p in parts if p)])

    # -- small objects ---------------------------------------------------------------------

    def write_bytes(self, relative: str, data: bytes) -> None:
        """Write the object ``relative`` whole: readers see the old bytes or the new ones."""
        path = self.fs_path(relative)
        if self.remote:
            with self.filesystem().open_output_stream(path) as sink:
                sink.write(data)
            return
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(target, data, fsync=False)  # not fsynced: a power cut may lose it

    def read_bytes(self, relative: str) -> bytes | None:
        """The object's bytes, or None when there is none."""
        path = self.fs_path(relative)
        if not self.remote:
            try:
                return Path(path).read_bytes()
            except (FileNotFoundError, NotADirectoryError):
                return None
        try:
            with self.filesystem().open_input_stream(path) as source:
                return bytes(source.read())
        except FileNotFoundError:
            return None
        except OSError as exc:
            if "NoSuchKey" in str(exc) or "does not exist" in str(exc):
                return None
            raise

    def list_names(self, relative: str) -> list[str]:
        """Names of the files directly under ``relative`` (none when it does not exist),
        temporary files (a leading dot) left out."""
        selector = pafs.FileSelector(self.fs_path(relative), allow_not_found=True)
        names = [
            info.base_name
            for info in self.filesystem().get_file_info(selector)
            if info.type == pafs.FileType.File
        ]
        return sorted(n for n in names if not n.startswith("."))

    def delete(self, relative: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.filesystem().delete_file(self.fs_path(relative))


def s3_filesystem() -> pafs.S3FileSystem:
    """pyarrow's S3 file system, configured only from the standard AWS variables.

    pyarrow reads the credentials and region itself; the endpoint is passed on from
    ``AWS_ENDPOINT_URL`` (scheme and host), so a plain-http test server works too.
    """
    endpoint = os.environ.get("AWS_ENDPOINT_URL") or os.environ.get("AWS_ENDPOINT_URL_S3")
    options: dict[str, object] = {}
    if endpoint:
        parts = urlsplit(endpoint)
        options["endpoint_override"] = parts.netloc or parts.path
        options["scheme"] = parts.scheme or "https"
        options["force_virtual_addressing"] = False
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    if region:
        options["region"] = region
    try:
        return pafs.S3FileSystem(**options)
    except (pa.ArrowInvalid, OSError) as exc:
        raise StorageError(f"cannot use the S3 store: {exc}") from exc
