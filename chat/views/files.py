"""Attachments over HTTP: POST /api/files (docs/api.md, "Attachments"), and a file or its
thumbnail for its owner (everyone else: 404). Served so that nothing in a file can run: its
sniffed type, `nosniff`, a sandboxing policy, and a download unless it is a raster image.
"""

from __future__ import annotations

import io
import uuid

from flask import Blueprint, Response, request, send_file

from .. import files
from ..people import rate_limits
from ..people.identity import current_identity_id
from ..refusals import Refused
from ..web.security import same_site_request

bp = Blueprint("files", __name__)

# A file is never a page: no scripts, no plugins, no navigation, whatever a browser makes of it.
FILE_POLICY = "default-src 'none'; img-src 'self'; style-src 'unsafe-inline'; sandbox"


@bp.post("/api/files")
@rate_limits.uploads
def upload():
    """One file as multipart/form-data (a part named `file`): 201 with what it is."""
    if not request.headers.get("Authorization", "").lower().startswith("bearer "):
        same_site_request()  # a form on another site can post multipart with the visitor's cookie
    sent = request.files.get("file")
    if sent is None or not sent.filename:
        raise Refused(400, "Send the file as multipart/form-data, in one part named `file` with a file name.")
    stored = files.upload(current_identity_id(), sent.filename, sent.stream)
    return {"fileId": str(stored.id), "name": stored.name, "type": stored.media_type, "size": stored.size}, 201


@bp.get("/files/<uuid:file_id>")
def download(file_id: uuid.UUID):
    stored, data = files.download(file_id, current_identity_id())
    inline = files.shown_inline(stored)
    return file_response(data, stored.media_type, stored.name, inline)


@bp.get("/files/<uuid:file_id>/thumbnail")
def thumbnail(file_id: uuid.UUID):
    stored, data = files.download(file_id, current_identity_id(), thumbnail=True)
    return file_response(data, "image/webp", f"{stored.name}.webp", inline=True)


def file_response(data: bytes, media_type: str, name: str, inline: bool) -> Response:
    response = send_file(io.BytesIO(data), mimetype=media_type, as_attachment=not inline, download_name=name)
    response.headers["Content-Security-Policy"] = FILE_POLICY
    # The same id is the same bytes for ever; it is the owner's only (a shared cache must not keep it).
    response.headers["Cache-Control"] = "private, max-age=31536000, immutable"
    return response
