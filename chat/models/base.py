"""What every table module shares: the clock and core INSERTs without the ORM's unit of work."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from sqlalchemy import (
    Table,
    insert,
)
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.sql.dml import Insert

from ..extensions import db

if TYPE_CHECKING:  # what db.Model is at run time, for the type checker (it cannot see through db)
    from sqlalchemy.orm import DeclarativeBase as Model
else:
    Model = db.Model


def utcnow() -> datetime:
    return datetime.now(UTC)


def table(model: type[Model]) -> Table:
    return model.__table__  # type: ignore[return-value]


INSERT: dict[type[Model], Insert] = {}

INSERT_OR_IGNORE: dict[tuple[type[Model], str], Insert] = {}


def insert_rows(model: type[Model], rows: Sequence[Mapping[str, object]]) -> None:
    """INSERT rows of `model` (columns left out take their defaults), in the caller's
    transaction, without the ORM's unit of work: nothing here needs the objects afterwards."""
    statement = INSERT.get(model)
    if statement is None:
        statement = INSERT[model] = insert(table(model))
    db.session.execute(statement, list(rows))


def insert_or_ignore(model: type[Model], **values: object) -> bool:
    """INSERT a row unless one with its key exists (a concurrent request added it first), in the
    caller's transaction: `INSERT … ON CONFLICT DO NOTHING` on SQLite and PostgreSQL alike.
    Whether this call inserted it."""
    dialect = db.session.get_bind().dialect.name
    statement = INSERT_OR_IGNORE.get((model, dialect))
    if statement is None:
        insert_into = postgresql_insert if dialect == "postgresql" else sqlite_insert
        # RETURNING tells whether the row went in (psycopg reports no rowcount for this INSERT).
        key = table(model).primary_key.columns[0]
        statement = INSERT_OR_IGNORE[model, dialect] = insert_into(table(model)).on_conflict_do_nothing().returning(key)
    return db.session.execute(statement, values).first() is not None
