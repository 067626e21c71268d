"""What an uploaded file is, decided from its bytes alone: its type sniffed (`filetype`, never
the name's word for it), a thumbnail for an image with its location stripped (Pillow), the text
of a document (pypdf). A file that is not what it claims, or not one we take, is refused here,
before anything is stored.
"""

from __future__ import annotations

import hashlib
import io
import mimetypes
import warnings
from dataclasses import dataclass

import filetype
from PIL import Image, ImageOps, UnidentifiedImageError
from pypdf import PdfReader
from pypdf.errors import PyPdfError

from ..refusals import Refused

# What is shown inline (as its thumbnail, and the original on a click): the raster images every
# browser decodes. Everything else is a download, and SVG or HTML is never taken at all.
IMAGE_TYPES = {"image/png", "image/jpeg", "image/gif", "image/webp"}
DOCUMENT_TYPES = {"application/pdf", "text/plain"}
TAKEN_TYPES = IMAGE_TYPES | DOCUMENT_TYPES
THUMBNAIL_PIXELS = (512, 512)
GPS_INFO_TAG = 0x8825  # the EXIF block that holds where a photo was taken
MARKUP_STARTS = ("<svg", "<!doctype html", "<html", "<?xml", "<!doctype svg")
TYPE_NAMES = {
    "image/png": "a PNG image",
    "image/jpeg": "a JPEG image",
    "image/gif": "a GIF image",
    "image/webp": "a WebP image",
    "application/pdf": "a PDF",
    "text/plain": "text",
}


@dataclass(frozen=True)
class Intake:
    """A file that passed: what to store."""

    name: str
    media_type: str
    data: bytes
    sha256: str
    thumbnail: bytes | None = None
    text: str | None = None


def take_in(name: str, data: bytes, limit: int) -> Intake:
    """Decide what `data` (uploaded as `name`) is and derive what is stored with it.

    :raise Refused: 400 empty, corrupt or encrypted; 413 larger than `limit`; 415 a type we do not
        take, SVG or HTML, or bytes of another type than the name says.
    """
    name = clean_name(name)
    if not data:
        raise Refused(400, f"{name} is empty.")
    if len(data) > limit:
        raise Refused(413, f"{name} is larger than {megabytes(limit)}, the limit per file.")
    media_type = sniffed_type(name, data)
    named = mimetypes.guess_type(name)[0]
    if named in TAKEN_TYPES and named != media_type:  # (notes.md, data.json: text by any name)
        raise Refused(415, f"{name} is named like {TYPE_NAMES[named]}, but its contents are {TYPE_NAMES[media_type]}.")
    if media_type in IMAGE_TYPES:
        data, thumbnail = image_without_location(name, data, media_type)
        return Intake(name, media_type, data, hashlib.sha256(data).hexdigest(), thumbnail=thumbnail)
    text = pdf_text(name, data) if media_type == "application/pdf" else data.decode("utf-8-sig")
    return Intake(name, media_type, data, hashlib.sha256(data).hexdigest(), text=text)


def clean_name(name: str) -> str:
    """The file's own name without any folder, control characters or excess length."""
    base = name.replace("\\", "/").rsplit("/", 1)[-1]
    base = "".join(ch for ch in base if ch.isprintable()).strip()
    return (base or "file")[:200]


def megabytes(size: int) -> str:
    return f"{size / 1_000_000:.1f} MB" if size >= 100_000 else f"{size:,} bytes"


def sniffed_type(name: str, data: bytes) -> str:
    """The type the bytes say; text is UTF-8 without NULs (and without markup that a browser would
    run: SVG, HTML).

    :raise Refused: 415 for anything else.
    """
    kind = filetype.guess(data)
    if kind is not None:
        if kind.mime in TAKEN_TYPES:
            return str(kind.mime)
        raise Refused(415, f"{name} is {kind.mime}; attach an image (PNG, JPEG, GIF, WebP), a PDF or a text file.")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = None
    if text is None or "\x00" in text:
        raise Refused(
            415, f"{name} is not a type we take; attach an image (PNG, JPEG, GIF, WebP), a PDF or a text file."
        )
    if text.lstrip()[:200].lower().startswith(MARKUP_STARTS) or "<svg" in text[:2000].lower():
        raise Refused(
            415, f"{name} is SVG or HTML, which is never taken (it can carry scripts); attach a PNG or a PDF."
        )
    return "text/plain"


def image_without_location(name: str, data: bytes, media_type: str) -> tuple[bytes, bytes]:
    """The image as stored (without the EXIF block of where it was taken, when it had one) and
    its thumbnail (WebP, no metadata at all).

    :raise Refused: 400 for an image that does not decode, or decodes to more pixels than it may.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:
                image.load()
                exif = image.getexif()
                if GPS_INFO_TAG in exif:
                    del exif[GPS_INFO_TAG]
                    out = io.BytesIO()
                    keep = {"quality": "keep"} if media_type == "image/jpeg" else {}
                    image.save(out, format=image.format, exif=exif.tobytes(), **keep)
                    data = out.getvalue()
                shown = ImageOps.exif_transpose(image)
                shown.thumbnail(THUMBNAIL_PIXELS)
                if shown.mode not in ("RGB", "RGBA"):
                    shown = shown.convert("RGBA")
                thumbnail = io.BytesIO()
                shown.save(thumbnail, format="WEBP", quality=80)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError, Warning):
        raise Refused(400, f"{name} is not an image that can be read (damaged, or far too many pixels).") from None
    return data, thumbnail.getvalue()


def pdf_text(name: str, data: bytes) -> str:
    """Every page's text, pages apart by a blank line.

    :raise Refused: 400 for an encrypted or damaged PDF.
    """
    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted:
            raise Refused(400, f"{name} is encrypted; remove its password and attach it again.")
        return "\n\n".join((page.extract_text() or "").strip() for page in reader.pages).strip()
    except (PyPdfError, ValueError, KeyError, TypeError, AttributeError, IndexError, RecursionError):
        raise Refused(400, f"{name} is a damaged PDF that cannot be read.") from None
