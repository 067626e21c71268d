"""Attachments: take an upload in (chat/files/intake.py decides what it is), choose the files a
message is sent with, give them to the model, serve them back to their owner only.

A file is its uploader's: everyone else gets 404 for it, everywhere. Its bytes live in the shared
database (content-addressed, chat/models/files.py), so every instance serves every upload.
"""

from __future__ import annotations

import base64
import uuid
from collections.abc import Sequence
from datetime import timedelta
from fnmatch import fnmatch
from typing import IO, Any

from flask import current_app
from sqlalchemy import inspect

from ..agents import Agent
from ..background import off_loop
from ..extensions import db
from ..models import (
    StoredFile,
    add_file,
    blob_of,
    blob_texts,
    forget_unattached,
    owned_file,
    utcnow,
)
from ..people.identity import identity_or_guest, store_guest
from ..people.rate_limits import admit_new_guest
from ..refusals import Refused
from . import store
from .intake import IMAGE_TYPES, TYPE_NAMES, Intake, take_in

UNATTACHED_KEPT = timedelta(days=1)  # an upload never sent with a message is deleted after this


def receive(name: str, stream: IO[bytes]) -> Intake:
    """Read one uploaded file (up to the limit) and decide what it is; nothing is stored.

    :raise Refused: as intake.take_in.
    """
    limit = current_app.config["MAX_UPLOAD_BYTES"]
    data = stream.read(limit + 1)
    return off_loop(take_in, name, data, limit)  # decoding and parsing: not on the worker's loop


def keep(identity_id: uuid.UUID, taken: Sequence[Intake]) -> list[StoredFile]:
    """Store files that were taken in, unattached until a message is sent with them."""
    identity = identity_or_guest(identity_id)
    if inspect(identity).transient:
        admit_new_guest()  # an upload is a new guest's first visit that stores something
    keeping = store.bucket()
    if keeping is not None:
        for intake in taken:
            keeping.put(intake.sha256, intake.data)  # before the rows: a row never names missing bytes
    store_guest(identity)
    stored = [
        add_file(identity.id, t.name, t.media_type, t.data, t.sha256, t.thumbnail, t.text, keeping is None)
        for t in taken
    ]
    db.session.commit()
    return stored


def upload(identity_id: uuid.UUID, name: str, stream: IO[bytes]) -> StoredFile:
    """POST /api/files: one file, stored unattached.

    :raise Refused: as intake.take_in; nothing is stored then.
    """
    return keep(identity_id, [receive(name, stream)])[0]


def for_form(
    identity_id: uuid.UUID, kept: Sequence[str], uploads: Sequence[tuple[str, IO[bytes]]], agent: Agent
) -> list[StoredFile]:
    """A page message's files: those a refused send kept (their ids, `kept_files`) and the new
    uploads, together within MAX_FILES_PER_MESSAGE; the uploads are stored once every one of
    them passed (what they are, and whether the agent takes them).

    :raise Refused: as `for_message`, or intake.take_in; no upload is stored then.
    """
    check_count(len(kept) + len(uploads))
    chosen = for_message(identity_id, list(kept), agent) if kept else []
    taken = [receive(name, stream) for name, stream in uploads]
    check_accepted(taken, agent)
    return chosen + (keep(identity_id, taken) if taken else [])


def still_unsent(identity_id: uuid.UUID, raw_ids: Sequence[str]) -> list[StoredFile]:
    """Of these ids, the caller's files not sent yet (a refused form shows them again)."""
    found = []
    for file_id in dict.fromkeys(filter(None, map(as_uuid, raw_ids))):
        stored = owned_file(file_id, identity_id)
        if stored is not None and stored.message_id is None:
            found.append(stored)
    return found


def as_uuid(raw: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(raw)
    except ValueError:
        return None


def check_count(count: int) -> None:
    limit = current_app.config["MAX_FILES_PER_MESSAGE"]
    if count > limit:
        raise Refused(400, f"That is {count} files; a message takes at most {limit}.")


def for_message(identity_id: uuid.UUID, raw_ids: object, agent: Agent) -> list[StoredFile]:
    """The files a message is sent with, from the API's `files` (a list of file ids): the
    caller's, not sent before, of types the agent takes.

    :raise Refused: 400 not a list of ids, too many, or a type the agent refuses; 404 a file
        that is not the caller's (or was sent with another message).
    """
    if raw_ids is None:
        return []
    if not isinstance(raw_ids, list) or not all(isinstance(raw, str) for raw in raw_ids):
        raise Refused(400, 'files must be a list of file ids, e.g. ["<fileId>"].')
    check_count(len(raw_ids))
    chosen = still_unsent(identity_id, raw_ids)
    found = {stored.id for stored in chosen}
    missing = next((raw for raw in raw_ids if as_uuid(raw) not in found), None)
    if missing is not None:
        raise Refused(404, f"No file {missing[:60]!r} of yours waits to be sent.")
    check_accepted(chosen, agent)
    return chosen


def check_accepted(files: Sequence[StoredFile | Intake], agent: Agent) -> None:
    """:raise Refused: 400 naming the first file whose type the agent does not take."""
    for stored in files:
        if not any(fnmatch(stored.media_type, pattern) for pattern in agent.accepts):
            takes = ", ".join(agent.accepts) if agent.accepts else "no attachments"
            raise Refused(
                400, f"{agent.name} does not take {TYPE_NAMES[stored.media_type]} ({stored.name}); it takes {takes}."
            )


def history_entries(files: Sequence[StoredFile], texts: dict[str, str], budget: int) -> tuple[list[dict], int]:
    """The files as a model message carries them (chat/agents/attachments.py), documents' text
    cut to what is left of the history budget; returns them and the budget then left."""
    entries = []
    for stored in files:
        entry: dict[str, Any] = {"id": str(stored.id), "name": stored.name, "type": stored.media_type}
        entry["size"] = stored.size
        if stored.sha256 in texts:
            text = texts[stored.sha256]
            kept = text[: max(budget, 0)]
            entry["text"] = kept
            if len(kept) < len(text):
                entry["cut"] = len(text) - len(kept)
            budget -= len(kept)
        entries.append(entry)
    return entries, budget


def texts_of(files: Sequence[StoredFile]) -> dict[str, str]:
    return blob_texts([stored.sha256 for stored in files if stored.text_chars is not None])


def bytes_of(stored: StoredFile) -> bytes:
    """A file's bytes, from its blob row or the bucket that keeps them."""
    data = blob_of(stored).data
    if data is not None:
        return data
    keeping = store.bucket()
    if keeping is None:
        raise RuntimeError(f"the bytes of {stored.sha256} are in a bucket, and FILE_STORE names none")
    return keeping.get(stored.sha256)


def data_url(file_id: str) -> str:
    """An image as a `data:` URL, for a model request (which cannot fetch our links)."""
    stored = db.session.get_one(StoredFile, uuid.UUID(file_id))
    return f"data:{stored.media_type};base64,{base64.b64encode(bytes_of(stored)).decode()}"


def download(file_id: uuid.UUID, identity_id: uuid.UUID, thumbnail: bool = False) -> tuple[StoredFile, bytes]:
    """A file's bytes (or its thumbnail's) for its owner.

    :raise Refused: 404 for anyone else, and for the thumbnail of a file that has none.
    """
    stored = owned_file(file_id, identity_id)
    if stored is None:
        raise Refused(404, "No such file.")
    if not thumbnail:
        return stored, bytes_of(stored)
    data = blob_of(stored).thumbnail
    if data is None:
        raise Refused(404, "This file has no thumbnail.")
    return stored, data


def shown_inline(stored: StoredFile) -> bool:
    return stored.media_type in IMAGE_TYPES


def forget_unsent() -> int:
    """Delete uploads never sent with a message after a day, and bytes nothing holds (a chore);
    how many blobs went."""
    gone = forget_unattached(None, utcnow() - UNATTACHED_KEPT)
    db.session.commit()
    store.forget(gone)
    return len(gone)
