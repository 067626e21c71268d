"""Attachments as stored: a file row per upload (its owner, its message once sent, what it is)
and its bytes in a content-addressed blob (SHA-256), shared by every row that holds the same
bytes, so an upload made twice is stored once. Every query and write on the two tables is here.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import DateTime, ForeignKey, Integer, LargeBinary, String, Text, Uuid, delete, select, update
from sqlalchemy.engine import CursorResult
from sqlalchemy.orm import Mapped, mapped_column

from ..extensions import db
from .base import Model, insert_or_ignore, insert_rows, utcnow


class FileBlob(Model):
    """The bytes of a file, once per content; with what is derived from them once (a thumbnail
    for an image, the text of a document). `data` is None when a bucket keeps the bytes
    (chat/files/store.py)."""

    __tablename__ = "file_blobs"

    sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    data: Mapped[bytes | None] = mapped_column(LargeBinary)
    thumbnail: Mapped[bytes | None] = mapped_column(LargeBinary)
    text: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, nullable=False)


class StoredFile(Model):
    """One upload: its owner's until deleted; attached to a message once sent with one (deleting
    the message's chat deletes it). `media_type` is sniffed from the bytes, never the name's."""

    __tablename__ = "files"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    identity_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("identities.id", ondelete="CASCADE"), nullable=False, index=True
    )
    message_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("messages.id", ondelete="CASCADE"), index=True)
    sha256: Mapped[str] = mapped_column(String(64), nullable=False, index=True)
    name: Mapped[str] = mapped_column(String(255), nullable=False)
    media_type: Mapped[str] = mapped_column(String(100), nullable=False)
    size: Mapped[int] = mapped_column(Integer, nullable=False)
    text_chars: Mapped[int | None] = mapped_column(Integer)  # of a document's extracted text
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, nullable=False)

    @property
    def is_image(self) -> bool:
        return self.media_type.startswith("image/")


def add_file(
    identity_id: uuid.UUID,
    name: str,
    media_type: str,
    data: bytes,
    sha256: str,
    thumbnail: bytes | None,
    text: str | None,
    keep_bytes: bool = True,
) -> StoredFile:
    """A new unattached file of `identity_id`, in the caller's transaction; its blob row is
    stored unless one with the same content exists (`keep_bytes`: with the bytes in it)."""
    kept = data if keep_bytes else None
    insert_or_ignore(FileBlob, sha256=sha256, data=kept, thumbnail=thumbnail, text=text, created_at=utcnow())
    stored = StoredFile(
        id=uuid.uuid4(),
        identity_id=identity_id,
        sha256=sha256,
        name=name,
        media_type=media_type,
        size=len(data),
        text_chars=None if text is None else len(text),
        created_at=utcnow(),
    )
    db.session.add(stored)
    return stored


def owned_file(file_id: uuid.UUID, identity_id: uuid.UUID) -> StoredFile | None:
    """The file if it is the caller's; anyone else's looks exactly like a missing one."""
    stored = db.session.get(StoredFile, file_id)
    return stored if stored is not None and stored.identity_id == identity_id else None


def blob_of(stored: StoredFile) -> FileBlob:
    return db.session.get_one(FileBlob, stored.sha256)


def attach_files(file_ids: Sequence[uuid.UUID], identity_id: uuid.UUID, message_id: uuid.UUID) -> bool:
    """Attach the caller's unattached files to a message, in the caller's transaction: one
    conditional UPDATE, so a file is sent with one message only. False (roll back) when one of
    them was not the caller's unattached file any more."""
    if not file_ids:
        return True
    attached = db.session.execute(
        update(StoredFile)
        .where(
            StoredFile.id.in_(file_ids),
            StoredFile.identity_id == identity_id,
            StoredFile.message_id.is_(None),
        )
        .values(message_id=message_id)
    )
    return isinstance(attached, CursorResult) and attached.rowcount == len(set(file_ids))


def files_of_messages(message_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, list[StoredFile]]:
    """Each message's files in the order they were uploaded, in one query."""
    by_message: dict[uuid.UUID, list[StoredFile]] = defaultdict(list)
    if message_ids:
        for stored in db.session.scalars(
            select(StoredFile)
            .where(StoredFile.message_id.in_(message_ids))
            .order_by(StoredFile.created_at, StoredFile.id)
        ):
            if stored.message_id is not None:
                by_message[stored.message_id].append(stored)
    return by_message


def blob_texts(hashes: Sequence[str]) -> dict[str, str]:
    """The extracted text of each of these blobs that has one."""
    if not hashes:
        return {}
    rows = db.session.execute(select(FileBlob.sha256, FileBlob.text).where(FileBlob.sha256.in_(set(hashes))))
    return {sha256: text for sha256, text in rows if text is not None}


def copy_files(copied: dict[uuid.UUID, uuid.UUID], owner_id: uuid.UUID) -> None:
    """A forked chat's messages get copies of their files (the same bytes), of the fork's owner."""
    rows = [
        {
            "id": uuid.uuid4(),
            "identity_id": owner_id,
            "message_id": copied[message_id],
            "sha256": stored.sha256,
            "name": stored.name,
            "media_type": stored.media_type,
            "size": stored.size,
            "text_chars": stored.text_chars,
            "created_at": stored.created_at,
        }
        for message_id, files in files_of_messages(list(copied)).items()
        for stored in files
    ]
    if rows:
        insert_rows(StoredFile, rows)


def move_guest_files(guest_id: uuid.UUID, account_id: uuid.UUID) -> None:
    """A guest's files become the account's it signs up as (with its chats), in the caller's
    transaction."""
    db.session.execute(update(StoredFile).where(StoredFile.identity_id == guest_id).values(identity_id=account_id))


def forget_unattached(identity_id: uuid.UUID | None, older_than: datetime) -> list[str]:
    """Delete uploads never sent with a message (of one identity, or everyone's), then the bytes
    no file holds any more; in the caller's transaction. The hashes of the bytes that went."""
    where = [StoredFile.message_id.is_(None), StoredFile.created_at < older_than]
    if identity_id is not None:
        where.append(StoredFile.identity_id == identity_id)
    hashes = list(db.session.scalars(select(StoredFile.sha256).where(*where)))
    db.session.execute(delete(StoredFile).where(*where))
    return forget_unheld_blobs(hashes)


def chat_file_hashes(chat_id: uuid.UUID) -> list[str]:
    """The content hashes of a chat's files (whose bytes may go when the chat goes)."""
    from .chats import Message

    return list(
        db.session.scalars(
            select(StoredFile.sha256)
            .join(Message, Message.id == StoredFile.message_id)
            .where(Message.chat_id == chat_id)
        )
    )


def forget_unheld_blobs(hashes: Sequence[str]) -> list[str]:
    """Delete the blob rows of these hashes that no file row holds any more; the hashes deleted
    (a bucket's objects of them go next, chat/files/store.py)."""
    if not hashes:
        return []
    unheld = FileBlob.sha256.not_in(select(StoredFile.sha256).distinct())
    deleted = db.session.execute(
        delete(FileBlob).where(FileBlob.sha256.in_(set(hashes)), unheld).returning(FileBlob.sha256)
    )
    return list(deleted.scalars())
