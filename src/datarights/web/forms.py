"""Form bodies parsed off the event loop.

Starlette parses a multipart upload on the event loop and writes it to a spooled file there, which
under 50 concurrent 4 MB uploads held every other request for seconds. The `Guard` middleware has
already read the (bounded) body, so a worker thread parses it here with python-multipart's parser
in one pass and the loop only moves bytes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import parse_qsl

from python_multipart.multipart import MultipartParseError, MultipartParser, parse_options_header

from ..errors import DatarightsError

MAX_FIELD = 64 * 1024
"""Bytes of one text field of a form."""
MAX_PARTS = 64
"""Parts of one multipart form."""


class FormError(DatarightsError):
    """A form body that cannot be read (answered 400)."""


@dataclass
class Form:
    """A parsed form: text fields (name -> every value) and at most one file per name."""

    fields: dict[str, list[str]] = field(default_factory=dict)
    files: dict[str, tuple[str, bytes]] = field(default_factory=dict)

    def get(self, name: str, default: str = "") -> str:
        values = self.fields.get(name)
        return values[0] if values else default

    def getlist(self, name: str) -> list[str]:
        return list(self.fields.get(name, []))


def parse_form(body: bytes, content_type: str) -> Form:
    """An urlencoded or multipart body as a `Form` (any other kind of body is a FormError)."""
    kind, params = parse_options_header(content_type or "")
    if kind == b"application/x-www-form-urlencoded":
        form = Form()
        try:
            pairs = parse_qsl(body.decode("utf-8"), keep_blank_values=True, max_num_fields=MAX_PARTS)
        except (UnicodeDecodeError, ValueError):
            raise FormError("the form could not be read (not UTF-8, or too many fields)") from None
        for k, v in pairs:
            form.fields.setdefault(k, []).append(v)
        return form
    if kind != b"multipart/form-data" or not params.get(b"boundary"):
        raise FormError("send this as a form (multipart/form-data, or urlencoded without a file)")
    return _multipart(body, params[b"boundary"])


def _multipart(body: bytes, boundary: bytes) -> Form:
    form = Form()
    part: dict = {}

    def begin():
        part.clear()
        part.update(headers={}, name=b"", value=b"", data=[])

    def header_field(data, start, end):
        part["name"] += data[start:end]

    def header_value(data, start, end):
        part["value"] += data[start:end]

    def header_end():
        part["headers"][part["name"].strip().lower()] = part["value"].strip()
        part["name"], part["value"] = b"", b""

    def data(data, start, end):
        part["data"].append(data[start:end])

    def end():
        if len(form.fields) + len(form.files) >= MAX_PARTS:
            raise FormError(f"the form has more than {MAX_PARTS} parts")
        _, disposition = parse_options_header(part["headers"].get(b"content-disposition", b""))
        name = disposition.get(b"name", b"").decode("utf-8", "replace")
        content = b"".join(part["data"])
        if b"filename" in disposition:
            form.files.setdefault(name, (disposition[b"filename"].decode("utf-8", "replace"), content))
        else:
            if len(content) > MAX_FIELD:
                raise FormError(f"the form field {name!r} is larger than {MAX_FIELD // 1024} kB")
            try:
                form.fields.setdefault(name, []).append(content.decode("utf-8"))
            except UnicodeDecodeError:
                raise FormError(f"the form field {name!r} is not UTF-8 text") from None

    parser = MultipartParser(boundary, {"on_part_begin": begin, "on_header_field": header_field,
                                        "on_header_value": header_value, "on_header_end": header_end,
                                        "on_part_data": data, "on_part_end": end})
    try:
        parser.write(body)
        parser.finalize()
    except MultipartParseError:
        raise FormError("the form upload is malformed") from None
    return form
