"""Operator commands, under `flask --app app …`."""

from __future__ import annotations

import uuid

import click
from flask import Flask

from .extensions import db
from .models import Identity, account_by_email, ledger
from .people import accounts, credits, operators
from .people.secret_key import rotate_secret_key
from .replies import replies


def account_or_fail(email: str) -> Identity:
    account = account_by_email(email.strip().lower())
    if account is None:
        raise click.ClickException(f"No account with the email {email!r}.")
    return account


def new_password() -> str:
    return click.prompt("Password", hide_input=True, confirmation_prompt=True)


def init_app(app: Flask) -> None:
    @app.cli.group("users")
    def users() -> None:
        """Accounts."""

    @users.command("create")
    @click.argument("email")
    @click.option("--admin", is_flag=True, help="Mark the account as an operator's.")
    def create_user(email: str, admin: bool) -> None:
        """Create an account (with the sign-up grant); asks for its password."""
        try:
            account = accounts.create_account(email, new_password(), admin=admin)
        except accounts.AccountError as error:
            raise click.ClickException(error.message) from None
        click.echo(f"Created {account.email}{' (admin)' if admin else ''}, balance {account.balance:.4f} credits.")

    @users.command("set-password")
    @click.argument("email")
    def set_password(email: str) -> None:
        """Give an account a new password; its sessions everywhere end."""
        try:
            accounts.set_password(account_or_fail(email), new_password())
        except accounts.AccountError as error:
            raise click.ClickException(error.message) from None
        click.echo(f"New password set for {email}; it is signed out everywhere.")

    @app.cli.group("replies")
    def replies_group() -> None:
        """Replies being generated."""

    @replies_group.command("status")
    def status() -> None:
        """Every reply still marked generating: its chat, stream, age and whether its producer lives."""
        live = operators.live_replies()
        for reply in live:
            state = "generating" if reply.producing else "producer gone (the reaper will interrupt it)"
            click.echo(f"chat {reply.chat_id}  stream {reply.stream_id}  {reply.age_seconds:7.1f}s  {state}")
        click.echo(f"{len(live)} replies generating.")

    @replies_group.command("reap")
    def reap() -> None:
        """Finish now, as interrupted, every reply whose producer is gone (the reaper does it too)."""
        click.echo(f"{replies().reap()} replies interrupted.")

    @app.cli.group("credits")
    def credits_group() -> None:
        """Balances and the ledger."""

    @credits_group.command("grant")
    @click.argument("email")
    @click.argument("amount", type=click.FloatRange(min=0, min_open=True))
    @click.option("--note", default="Granted by an operator", help="Shown in the account's ledger.")
    def grant(email: str, amount: float, note: str) -> None:
        """Give an account AMOUNT credits (a ledger row, like every charge)."""
        account = account_or_fail(email)
        credits.grant(account.id, credits.credits_to_micros(amount), f"grant-{uuid.uuid4()}", note)
        db.session.commit()
        db.session.refresh(account)
        click.echo(f"Granted {amount:g} credits to {account.email}; balance {account.balance:.4f}.")

    @credits_group.command("show")
    @click.argument("email")
    def show(email: str) -> None:
        """An account's balance and its newest ledger rows."""
        account = account_or_fail(email)
        click.echo(f"{account.email}: balance {account.balance:.4f} credits")
        for entry in ledger(account.id):
            what = entry.note or entry.kind
            click.echo(
                f"  {entry.created_at:%Y-%m-%d %H:%M}  {-entry.cost_micros / 1e6:+12.4f}  {entry.kind:<8}  {what}"
            )

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
