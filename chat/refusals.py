"""What the services raise when they refuse a request: a message for a person and the HTTP
status that says why. The views turn it into JSON for the API or a page for people."""

from __future__ import annotations


class Refused(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
