"""Request bodies read in memory (the size limit bounds them), never spooled to disk: a
multipart upload's fields and file, and a URL-encoded form.

An uploaded file's name is read by the parser and dropped: it may name a patient, and nothing
here needs it.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from urllib.parse import parse_qs

from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import Request

from medimg.errors import DataError

MAX_FIELD_BYTES = 4096  # any form field but the file
MAX_PARTS = 16


class BadForm(DataError):
    """The body is not the form the endpoint takes; one line, quoting nothing from the body."""


@dataclass
class Form:
    fields: dict[str, str] = field(default_factory=dict)  # text parts, as text
    files: dict[str, bytes] = field(default_factory=dict)  # every multipart part, as bytes


async def read_form(request: Request) -> Form:
    """The fields (and, for multipart, files) of a form post."""
    kind, params = parse_options_header(request.headers.get("content-type", ""))
    body = await request.body()
    if kind == b"application/x-www-form-urlencoded":
        try:
            parsed = parse_qs(
                body.decode("utf-8"),
                keep_blank_values=True,
                max_num_fields=MAX_PARTS,
                strict_parsing=False,
            )
        except (UnicodeDecodeError, ValueError):
            raise BadForm("the form is not valid URL-encoded UTF-8") from None
        return Form(fields={k: v[0] for k, v in parsed.items()})
    if kind != b"multipart/form-data" or not params.get(b"boundary"):
        raise BadForm("send the form as multipart/form-data (or URL-encoded, without a file)")
    return _multipart(body, params[b"boundary"])


def _multipart(body: bytes, boundary: bytes) -> Form:
    form = Form()
    parts: list[dict] = []
    header_field = bytearray()
    header_value = bytearray()

    def on_part_begin() -> None:
        if len(parts) >= MAX_PARTS:
            raise BadForm(f"the form has more than {MAX_PARTS} parts")
        parts.append({"headers": {}, "data": bytearray()})

    def on_header_field(data: bytes, start: int, end: int) -> None:
        header_field.extend(data[start:end])

    def on_header_value(data: bytes, start: int, end: int) -> None:
        header_value.extend(data[start:end])

    def on_header_end() -> None:
        parts[-1]["headers"][bytes(header_field).lower()] = bytes(header_value)
        header_field.clear()
        header_value.clear()

    def on_part_data(data: bytes, start: int, end: int) -> None:
        parts[-1]["data"].extend(data[start:end])

    callbacks = {
        "on_part_begin": on_part_begin,
        "on_header_field": on_header_field,
        "on_header_value": on_header_value,
        "on_header_end": on_header_end,
        "on_part_data": on_part_data,
    }
    try:
        parser = MultipartParser(boundary, callbacks)  # type: ignore[arg-type]
        parser.write(body)
        parser.finalize()
    except BadForm:
        raise
    except Exception:
        raise BadForm("the multipart body cannot be parsed") from None
    for part in parts:
        _, disposition = parse_options_header(part["headers"].get(b"content-disposition", b""))
        name = disposition.get(b"name", b"").decode("utf-8", "replace")
        if not name:
            continue
        # every part's bytes, file or not (a client may send the image without a filename)
        form.files[name] = bytes(part["data"])
        if b"filename" not in disposition and len(part["data"]) <= MAX_FIELD_BYTES:
            with contextlib.suppress(UnicodeDecodeError):  # binary: a file as a plain part
                form.fields[name] = part["data"].decode("utf-8")
    return form
