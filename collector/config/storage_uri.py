"""Where the archive and this host's state live: ``storage.uri`` checked (a local path
or ``s3://bucket/prefix``, never a credential), and the default state folder."""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Mapping
from pathlib import Path

#: The environment variables an S3 archive's endpoint and credentials come from (read by
#: the object store client, never by this module): a file holding them would leak them.
AWS_ENVIRONMENT = (
    "AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION "
    "(and AWS_ALLOW_HTTP=true for a plain-http test server)"
)
_CREDENTIAL_KEY = re.compile(
    r"access_key|secret|token|password|credential|endpoint|region|allow_http|key_id",
    re.IGNORECASE,
)
_URI_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
_ARCHIVE_FORMS = "a local path (such as data) or s3://bucket/prefix"
#: What collector.storage.location accepts between the slashes of a prefix.
_PREFIX_PART = re.compile(r"[A-Za-z0-9._=+-]+")


def _bucket_problem(bucket: str) -> str | None:
    """Why ``bucket`` is not a valid S3 bucket name (AWS's naming rules), or None."""
    if not 3 <= len(bucket) <= 63:
        return "is 3 to 63 characters long"
    if not re.fullmatch(r"[a-z0-9][a-z0-9.-]*[a-z0-9]", bucket):
        return (
            "holds only lowercase letters, digits, '.' and '-', and starts and ends with a "
            "letter or digit"
        )
    if ".." in bucket:
        return "has no '..'"
    if re.fullmatch(r"\d+\.\d+\.\d+\.\d+", bucket):
        return "is not an IP address"
    if bucket.startswith(("xn--", "sthree-", "amzn-s3-demo-")) or bucket.endswith(
        ("-s3alias", "--ol-s3", ".mrap", "--x-s3", "--table-s3")
    ):
        return "does not use a prefix or suffix that S3 reserves"
    return None


def _archive_uri(value: str) -> str:
    """``value`` checked as an archive location: a local path (kept as given) or
    ``s3://bucket/prefix`` (scheme lowercased, trailing slashes dropped).

    An s3:// value may hold a credential, so no message repeats it.
    """
    if not value.strip():
        raise ValueError(f"expected {_ARCHIVE_FORMS}, got an empty string")
    scheme = _URI_SCHEME.match(value)
    if scheme is None:
        if value[:3].lower() == "s3:":
            raise ValueError("expected s3://bucket/prefix (with two slashes)")
        return value
    if scheme.group(1).lower() != "s3":
        raise ValueError(
            f"{scheme.group(1)}:// is not supported; expected {_ARCHIVE_FORMS} "
            "(S3 or an S3-compatible store)"
        )
    rest = value[scheme.end() :]
    if "?" in rest or "#" in rest:
        raise ValueError(
            "an s3:// URI takes no query string or fragment; the endpoint and credentials "
            f"come only from the environment variables {AWS_ENVIRONMENT}"
        )
    bucket, _, prefix = rest.partition("/")
    if "@" in bucket:
        raise ValueError(
            "an s3:// URI takes no user:password@ part; credentials come only from the "
            f"environment variables {AWS_ENVIRONMENT}"
        )
    if ":" in bucket:
        raise ValueError(
            "an s3:// URI names a bucket, not a host:port; the endpoint comes only from the "
            f"environment variables {AWS_ENVIRONMENT}"
        )
    problem = _bucket_problem(bucket)
    if problem is not None:
        shown = f" {bucket!r}" if re.fullmatch(r"[\w.-]{1,70}", bucket) else ""
        raise ValueError(f"the bucket name{shown} is not valid: a bucket name {problem}")
    prefix = prefix.rstrip("/")
    for part in prefix.split("/") if prefix else ():
        if part in ("", ".", ".."):
            raise ValueError("the prefix of an s3:// URI has no empty, '.' or '..' parts")
        if not _PREFIX_PART.fullmatch(part):
            raise ValueError(
                "the prefix of an s3:// URI holds only letters, digits and . _ = + - "
                "between its slashes"
            )
    return f"s3://{bucket}/{prefix}" if prefix else f"s3://{bucket}"


def split_s3_uri(uri: str) -> tuple[str, str]:
    """``(bucket, prefix)`` of a validated ``s3://bucket/prefix`` (prefix ``""`` when
    absent); a ValueError for anything else."""
    if not uri.startswith("s3://"):
        raise ValueError(f"not an s3:// URI: {uri!r}")
    bucket, _, prefix = uri.removeprefix("s3://").partition("/")
    return bucket, prefix


def default_state_dir(
    uri: str, shard: str | None, *, environ: Mapping[str, str] | None = None
) -> Path:
    """Where one host keeps its state (write-ahead log, pause file, daemon lock) for the
    archive ``uri`` and ``shard`` (None: one daemon collects everything), when
    ``storage.state_dir`` is not given.

    - a local archive, no shard: the archive folder itself, as before shards existed
      (``data/_wal``, ``data/.collector.lock``);
    - a local archive, a shard: ``<archive>/_local/<shard>``;
    - an S3 archive: ``$XDG_STATE_HOME/jex-collector/<bucket>/<prefix>/<shard or all>``,
      where ``XDG_STATE_HOME`` defaults to ``~/.local/state``, and ``<prefix>`` is the
      prefix with ``/`` replaced by ``_``, or a short hash of the URI when there is no
      prefix. A prefix that already holds ``_`` gets a short hash of itself appended,
      so that ``a/b`` and ``a_b`` never share a folder.
    """
    if not uri.startswith("s3://"):
        return Path(uri) if shard is None else Path(uri) / "_local" / shard
    environ = os.environ if environ is None else environ
    state_home = environ.get("XDG_STATE_HOME", "")
    if not os.path.isabs(state_home):  # the XDG spec: a relative value is ignored
        home = environ.get("HOME")
        state_home = os.path.join(home if home else str(Path.home()), ".local", "state")
    bucket, prefix = split_s3_uri(uri)
    if not prefix:
        folder = _short_hash(uri)
    elif "_" in prefix:
        folder = f"{prefix.replace('/', '_')}-{_short_hash(prefix)}"
    else:
        folder = prefix.replace("/", "_")
    return Path(state_home) / "jex-collector" / bucket / folder / (shard or "all")


def _short_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:12]
