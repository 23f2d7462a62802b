"""The one configuration struct. Every field is read from FIVESTEP_<FIELD_NAME_UPPER>."""

from __future__ import annotations

import msgspec


class Settings(msgspec.Struct, frozen=True, kw_only=True):
    # Storage. The defaults are the embedded mode: a SQLite file and a folder under ./var.
    database_url: str = "sqlite+aiosqlite:///./var/fivestep.db"
    blob_store: str = "./var/blobs"
    """A folder path, or s3://ACCESS:SECRET@host:port/bucket?secure=false&region=us-east-1."""
    blob_public_endpoint: str = ""
    """host:port the devices reach the S3 store at, for presigned URLs (defaults to the store's own)."""
    blob_threads: int = 8
    blob_timeout_seconds: float = 30.0

    # HTTP.
    host: str = "127.0.0.1"
    port: int = 8000
    public_url: str = ""
    """Base URL the devices reach this server at; used in signed links. Empty: http://host:port."""

    # Secrets and sessions. An empty secret in embedded mode is generated once into ./var/secret_key.
    secret_key: str = ""
    token_ttl_hours: int = 12
    login_max_failures: int = 5
    login_lockout_seconds: int = 300
    signed_url_ttl_seconds: int = 300

    # Behaviour.
    auto_migrate: bool = True
    reveal_roles: tuple[str, ...] = ("reviewer", "approver", "admin")
    log_level: str = "INFO"
    max_upload_bytes: int = 50 * 1024 * 1024
    upload_expiry_hours: int = 24
    """An unfinished resumable upload is dropped this long after its last accepted bytes."""
    original_roles: tuple[str, ...] = ("reviewer", "approver", "admin")
    """Roles that may fetch a photo's original file (each fetch is audited with its reason)."""
    workers: int = 1
    """Server processes `fivestep serve` runs on its one port (one per CPU core to use them all)."""
    image_workers: int = 2
    """Photos decoded and processed at once, in worker threads (never on the event loop)."""
    rules_file: str = ""
    """A rule pack YAML (review levels, deadlines, forms per purpose); empty: the shipped default."""
    var_dir: str = "./var"

    @property
    def is_embedded_database(self) -> bool:
        return self.database_url.startswith("sqlite")

    @property
    def is_s3_store(self) -> bool:
        return self.blob_store.startswith("s3://")
