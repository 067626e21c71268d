"""An S3-compatible server on loopback for FILE_STORE=s3://… (s3rver from npm, tests/s3/), with
the credentials it takes in boto3's environment variables."""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import boto3

from .servers import free_port

S3RVER = Path(__file__).resolve().parent.parent / "s3" / "node_modules" / ".bin" / "s3rver"
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "S3RVER", "AWS_SECRET_ACCESS_KEY": "S3RVER", "AWS_DEFAULT_REGION": "us-east-1"}


@contextmanager
def s3_server(folder: Path, bucket: str) -> Iterator[str]:
    """Run s3rver with an empty `bucket`; yields its endpoint URL."""
    port = free_port()
    process = subprocess.Popen(
        [str(S3RVER), "-d", str(folder), "-a", "127.0.0.1", "-p", str(port), "--silent", "--no-vhost-buckets"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise RuntimeError("s3rver did not start (run `make test-node-packages`)") from None
                time.sleep(0.1)
        endpoint = f"http://127.0.0.1:{port}"
        client(endpoint).create_bucket(Bucket=bucket)
        yield endpoint
    finally:
        process.terminate()
        process.wait(timeout=10)


def client(endpoint: str):
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        region_name=CREDENTIALS["AWS_DEFAULT_REGION"],
    )


def object_keys(endpoint: str, bucket: str) -> list[str]:
    listed = client(endpoint).list_objects_v2(Bucket=bucket)
    return sorted(item["Key"] for item in listed.get("Contents", []))
