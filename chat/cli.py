"""Operator commands, under `flask --app app …`."""

from __future__ import annotations

import click
from flask import Flask

from .secret_key import rotate_secret_key


def init_app(app: Flask) -> None:
    @app.cli.group("secret-key")
    def secret_key() -> None:
        """The session-signing key kept in the database (when SECRET_KEY is not set)."""

    @secret_key.command("rotate")
    def rotate() -> None:
        """Make a new key; cookies signed with the old one stay valid until the next rotation."""
        rotate_secret_key()
        click.echo(
            "A new session key is stored; restart every host to sign with it. Cookies signed with "
            "the previous key are still accepted until the next rotation."
        )
