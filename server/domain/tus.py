"""The tus 1.0 wire rules that need no database: headers, metadata, checksums, dates.

https://tus.io/protocols/resumable-upload: core, creation, creation-with-upload, checksum (sha1, sha256),
termination, expiration.
"""

from __future__ import annotations

import base64
import datetime as dt
import email.utils
import hashlib
import re
from collections.abc import Callable
from typing import Any

from server.errors import DomainError, Invalid

VERSION = "1.0.0"
EXTENSIONS = "creation,creation-with-upload,checksum,termination,expiration"
CHECKSUM_ALGORITHMS: dict[str, Callable[[], Any]] = {"sha1": hashlib.sha1, "sha256": hashlib.sha256}
OFFSET_STREAM = "application/offset+octet-stream"
MAX_METADATA_LENGTH = 4096
_SHA256 = re.compile(r"[0-9a-f]{64}")
_DIGITS = re.compile(r"[0-9]{1,19}")


class UnsupportedVersion(DomainError):
    status, code = 412, "tus_version_unsupported"


class TooLarge(DomainError):
    status, code = 413, "upload_too_large"


class ChecksumMismatch(DomainError):
    """The request's bytes do not match its Upload-Checksum; nothing of them was kept."""

    status, code = 460, "checksum_mismatch"


class BadChecksumHeader(DomainError):
    """The checksum extension answers an Upload-Checksum the server cannot use with 400, not 422."""

    status, code = 400, "bad_checksum"


class Gone(DomainError):
    """The upload's file was refused: 410 with the refusal's code."""

    status, code = 410, "upload_gone"


class StartAgain(DomainError):
    """The upload cannot go on through no fault of its file: it expired, or its staged bytes were lost.
    404 rather than 410 (tus allows either): tus-java-client, under tus-android-client, starts a new upload
    on a 404 and gives up on a 410, and every other client starts again on both."""

    status, code = 404, "upload_expired"


class WrongContentType(DomainError):
    status, code = 415, "unsupported_media_type"


def check_version(header: str | None) -> None:
    if header != VERSION:
        raise UnsupportedVersion(f"Send 'Tus-Resumable: {VERSION}'; this server speaks tus {VERSION} only.")


def parse_count(name: str, value: str | None) -> int:
    """A non-negative decimal header value (Upload-Length, Upload-Offset)."""
    if value is None or not _DIGITS.fullmatch(value.strip()):
        raise Invalid(f"{name} must be a non-negative whole number.", code=f"bad_{_snake(name)}")
    return int(value.strip())


def parse_metadata(header: str | None) -> dict[str, str]:
    """``key base64,key base64``; values decode as UTF-8. Keys without a value map to ''."""
    if not header:
        return {}
    if len(header) > MAX_METADATA_LENGTH:
        raise Invalid(
            f"Upload-Metadata is longer than {MAX_METADATA_LENGTH} characters.", code="bad_metadata"
        )
    found: dict[str, str] = {}
    for pair in header.split(","):
        key, _, encoded = pair.strip().partition(" ")
        if not key or key in found:
            raise Invalid("Upload-Metadata has an empty or repeated key.", code="bad_metadata")
        try:
            found[key] = base64.b64decode(encoded.strip(), validate=True).decode()
        except ValueError:  # binascii.Error, UnicodeDecodeError, and a non-ASCII character (plain ValueError)
            raise Invalid(
                f"Upload-Metadata {key!r} is not base64 of UTF-8 text.", code="bad_metadata"
            ) from None
        if "\x00" in found[key] or "\x00" in key:  # PostgreSQL text cannot hold it (server/nul_guard.py)
            raise Invalid(f"Upload-Metadata {key!r} contains a NUL character.", code="bad_metadata")
    return found


def parse_sha256(metadata: dict[str, str]) -> str:
    sha = metadata.get("sha256", "").strip().lower()
    if not _SHA256.fullmatch(sha):
        raise Invalid(
            "Upload-Metadata must carry sha256: the hex SHA-256 of the whole file.", code="sha256_required"
        )
    return sha


def parse_checksum(header: str | None) -> tuple[str, bytes] | None:
    """``Upload-Checksum: <algorithm> <base64 digest>``, or None when absent."""
    if header is None:
        return None
    name, _, encoded = header.strip().partition(" ")
    if name not in CHECKSUM_ALGORITHMS:
        raise BadChecksumHeader(
            f"Upload-Checksum algorithm {name!r} is not supported; use sha1 or sha256.",
            code="checksum_algorithm_unsupported",
        )
    try:
        digest = base64.b64decode(encoded.strip(), validate=True)
    except ValueError:  # binascii.Error, and a non-ASCII character (plain ValueError)
        raise BadChecksumHeader("Upload-Checksum digest is not base64.") from None
    if len(digest) != CHECKSUM_ALGORITHMS[name]().digest_size:  # missing or cut: no body could match it
        raise BadChecksumHeader(f"Upload-Checksum digest is not the base64 of a {name} digest.")
    return name, digest


def http_date(when: dt.datetime) -> str:
    return email.utils.format_datetime(when.astimezone(dt.UTC), usegmt=True)


def _snake(header: str) -> str:
    return header.lower().replace("-", "_")
