"""Where attachments' bytes live: the shared database (the default: every instance reads every
upload, nothing else to run), or an S3-compatible bucket (`FILE_STORE=s3://bucket/prefix`),
with the database keeping the rest of the blob row (thumbnail, extracted text) either way.

Objects are named by their SHA-256, like the blob rows, so a put is idempotent and an object is
deleted only once no file row holds its bytes (chat/models/files.py says when).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from flask import Flask, current_app

log = logging.getLogger(__name__)


class FileStoreError(RuntimeError):
    """FILE_STORE is unusable; the message says why (raised at start)."""


@dataclass
class Bucket:
    """An S3-compatible bucket (AWS, MinIO, R2…) through boto3; keys and region come from the
    environment as boto3 reads them (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_DEFAULT_REGION)."""

    name: str
    prefix: str
    client: Any

    def key(self, sha256: str) -> str:
        return f"{self.prefix}{sha256}"

    def put(self, sha256: str, data: bytes) -> None:
        self.client.put_object(Bucket=self.name, Key=self.key(sha256), Body=data)

    def get(self, sha256: str) -> bytes:
        return bytes(self.client.get_object(Bucket=self.name, Key=self.key(sha256))["Body"].read())

    def delete(self, hashes: Sequence[str]) -> None:
        for start in range(0, len(hashes), 1000):  # the most one DeleteObjects takes
            objects = [{"Key": self.key(sha256)} for sha256 in hashes[start : start + 1000]]
            self.client.delete_objects(Bucket=self.name, Delete={"Objects": objects, "Quiet": True})


def bucket_from(url: str, endpoint_url: str | None) -> Bucket:
    parts = urlsplit(url)
    if parts.scheme != "s3" or not parts.netloc:
        raise FileStoreError(f"FILE_STORE must be `database` or s3://bucket/prefix, not {url!r}")
    try:
        import boto3
    except ImportError:
        raise FileStoreError("FILE_STORE names an S3 bucket: install boto3 (pip install 'durable-chat[s3]')") from None
    prefix = parts.path.strip("/")
    client = boto3.client("s3", endpoint_url=endpoint_url or None)
    return Bucket(parts.netloc, f"{prefix}/" if prefix else "", client)


def init_app(app: Flask) -> None:
    """Check FILE_STORE at start (a typo stops the app with a message, not the first upload)."""
    url = app.config["FILE_STORE"]
    app.extensions["file_bucket"] = None if url in ("", "database") else bucket_from(url, app.config["S3_ENDPOINT_URL"])


def bucket() -> Bucket | None:
    """The app's bucket, or None when bytes are kept in the database."""
    return current_app.extensions["file_bucket"]


def forget(hashes: Sequence[str]) -> None:
    """Delete the bucket's objects of bytes no file holds any more (after their rows went)."""
    store = bucket()
    if store is not None and hashes:
        try:
            store.delete(list(hashes))
        except Exception:  # the rows are gone either way: an object left behind is only space
            log.warning("could not delete %d objects from the bucket %s", len(hashes), store.name, exc_info=True)
