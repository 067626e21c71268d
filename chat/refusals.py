"""What the services raise when they refuse a request: a message for a person and the HTTP
status that says why. The views turn it into JSON for the API or a page for people."""

from __future__ import annotations


class Refused(Exception):
    """`retry_after` (seconds) is sent as `Retry-After`, for a 429 or a 503."""

    def __init__(self, status: int, message: str, retry_after: int | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.retry_after = retry_after
