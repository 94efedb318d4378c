"""The record path's JSON before ``jsoncodec`` (stdlib ``json`` to parse, ``simplejson`` to serialise), verbatim.

``documents.loads_record`` and ``documents.dumps_document`` are ``jsoncodec``'s since #14;
these are the functions they replaced, kept as the reference ``test_jsoncodec`` compares the
codec with (values, output bytes and error texts).
"""

from __future__ import annotations

import datetime
import decimal
import json
import re
import uuid
from collections.abc import Mapping
from typing import Any

import simplejson

_NUL_ESCAPE = re.compile(r"(?<!\\)(?:\\\\)*\\u0000")


def _json_default(value: object) -> object:
    if isinstance(value, datetime.datetime | datetime.date | datetime.time):
        return value.isoformat()
    if isinstance(value, uuid.UUID | bytes):
        return str(value) if isinstance(value, uuid.UUID) else value.decode("utf-8")
    if isinstance(value, set | frozenset):
        return sorted(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


_ENCODER = simplejson.JSONEncoder(
    ensure_ascii=False,
    use_decimal=True,
    allow_nan=False,
    separators=(",", ":"),
    default=_json_default,
)


def dumps_document(document: Mapping[str, Any]) -> bytes:
    """Serialise a document to UTF-8 JSON that ``jsonb`` accepts, or raise ``ValueError``."""
    if not isinstance(document, Mapping):
        raise ValueError(f"the document must be a JSON object, got {type(document).__name__}")
    try:
        text = _ENCODER.encode(document)
    except (TypeError, ValueError) as err:
        raise ValueError(f"document is not JSON: {err}") from err
    if "\\u0000" in text and _NUL_ESCAPE.search(text):
        raise ValueError("a string holds \\u0000 (NUL), which jsonb cannot store")
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError as err:
        bad = ord(text[err.start])
        raise ValueError(
            f"a string holds U+{bad:04X}, a lone surrogate (invalid UTF-8 in the source or an "
            "unpaired \\uD800-\\uDFFF escape), which jsonb cannot store"
        ) from None


def _reject_constant(name: str) -> Any:
    raise ValueError(f"invalid JSON: {name} is not a JSON value")


# The stdlib decoder (C scanner) with exact numbers: Decimal for non-integers, int for integers.
_DECODER = json.JSONDecoder(parse_float=decimal.Decimal, parse_constant=_reject_constant)


def loads_record(raw: bytes) -> Any:
    """Parse one JSON text exactly (``Decimal`` for non-integers); ``NaN``/``Infinity`` are errors."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ValueError(f"invalid UTF-8 at byte {err.start}") from None
    try:
        return _DECODER.decode(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"invalid JSON: {err}") from None
    except RecursionError:
        raise ValueError("JSON nested too deeply to parse") from None
