r"""Exact JSON for the record path: parse a line, serialise a document, fast and lossless.

:func:`loads_record` and :func:`dumps_document` keep every contract of the stdlib /
``simplejson`` pair they replace (same values, same output bytes, same error texts),
with :mod:`msgspec` doing the work on the common path:

* numbers stay exact: non-integers become :class:`~decimal.Decimal` (``1.0``, ``-0.0``,
  ``1E400`` keep their spelling), integers of any size stay ``int``;
  ``NaN``/``Infinity`` are refused (``invalid JSON: ...``);
* duplicate keys: the last one wins, as in ``jsonb``;
* output is compact UTF-8 (``ensure_ascii=False``); raw U+2028/U+2029/U+0085 are kept;
  a ``\u0000`` or a lone surrogate in a string is refused, since ``jsonb`` cannot store it;
* what a transform may return: ``dict`` and any :class:`~collections.abc.Mapping`,
  ``list``/``tuple``, ``str``, ``int``, ``bool``, ``None``, ``Decimal`` and finite ``float``
  (``repr`` spelling), ``datetime``/``date``/``time`` (``isoformat()``), ``uuid.UUID``
  (``str``), ``bytes`` (decoded as UTF-8), ``set``/``frozenset`` (sorted);
* non-string keys behave as they always did (``simplejson``): ``int``, ``float``,
  ``Decimal``, ``bool`` and ``None`` keys become strings (``1`` → ``"1"``, ``True`` →
  ``"true"``, ``None`` → ``"null"``; a collision such as ``{1: .., "1": ..}`` leaves two
  equal keys, and ``jsonb`` keeps the last); other keys are refused;
* nesting is limited to :data:`MAX_DEPTH` levels, the same for parsing and serialising,
  whatever the caller's stack depth.

Whatever msgspec would do differently (lone surrogate escapes, which it refuses and the
stdlib accepts; ``float`` exponent spelling; ``datetime`` with ``Z``; ``bytes`` as
base64; unsorted sets; subclasses of the built-in types; every error) is sent, for that
record only, through the reference implementation (stdlib ``json`` to parse,
``simplejson`` to serialise), so values and error texts are the reference's.
"""

from __future__ import annotations

import datetime
import decimal
import itertools
import json
import math
import re
import threading
import uuid
from collections.abc import Callable, Mapping
from typing import Any, Final, TypeVar

import msgspec
import simplejson

__all__ = ["MAX_DEPTH", "dumps_document", "loads_record", "nested_deeper_than_limit"]

MAX_DEPTH: Final = 512
"""Deepest nesting of arrays and objects the record path parses or serialises (``{}`` is 1).

Below Python's default recursion limit (1000) with room to spare, so every record within
it parses and serialises wherever the caller is; deeper records are bad records with a
message naming this limit. It is the limit of every path: lines loaded as they are (no
transform, no schema), which ``jsonb`` would take up to about 10,000 levels, are held to it
too (:func:`nested_deeper_than_limit`, which only lines long enough to be that deep cost).
"""

_PARSE_TOO_DEEP = (
    f"invalid JSON: nested deeper than {MAX_DEPTH} levels, the loader's limit for every record; flatten the record"
)
TOO_DEEP: Final = _PARSE_TOO_DEEP
"""Why a record nested deeper than :data:`MAX_DEPTH` is a bad record."""
_TOKENS = re.compile(rb'"(?:[^"\\]|\\.)*"|[\[\]{}]')  # strings (skipped whole) and brackets
_DUMP_TOO_DEEP = (
    f"document is not JSON: nested deeper than {MAX_DEPTH} levels (or it contains itself); "
    "return a flatter document from the transform"
)


def nested_deeper_than_limit(raw: bytes) -> bool:
    """Whether a JSON text nests arrays and objects deeper than :data:`MAX_DEPTH` (without parsing it).

    A text of at most ``2 * MAX_DEPTH + 1`` bytes, or with at most ``MAX_DEPTH`` opening
    brackets, cannot be (answered at C speed); only such rare long lines are scanned.
    """
    if len(raw) <= 2 * MAX_DEPTH + 1 or raw.count(b"[") + raw.count(b"{") <= MAX_DEPTH:
        return False
    depth = 0
    for token in _TOKENS.finditer(raw):
        char = token.group()
        if char in (b"[", b"{"):
            depth += 1
            if depth > MAX_DEPTH:
                return True
        elif char in (b"]", b"}"):
            depth -= 1
    return False


_NUL = "a string holds \\u0000 (NUL), which jsonb cannot store"
_NUL_ESCAPE = re.compile(rb"(?<!\\)(?:\\\\)*\\u0000")

T = TypeVar("T")


# -- parsing -------------------------------------------------------------------------------------

_DECODER = msgspec.json.Decoder(float_hook=decimal.Decimal)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"invalid JSON: {name} is not a JSON value")


_STDLIB_DECODER = json.JSONDecoder(parse_float=decimal.Decimal, parse_constant=_reject_constant)
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_NOT_BRACKETS = bytes(sorted(set(range(256)) - set(b"[]{}")))
_STEP = {ord("["): 1, ord("{"): 1, ord("]"): -1, ord("}"): -1}


def loads_record(raw: bytes) -> Any:
    """Parse one JSON text exactly (``Decimal`` for non-integers); ``NaN``/``Infinity`` are errors.

    :param raw: the JSON text as UTF-8 bytes.
    :raises ValueError: invalid UTF-8 (``invalid UTF-8 at byte N``), invalid JSON
        (``invalid JSON: ...``, the stdlib's message), nesting deeper than :data:`MAX_DEPTH`.
    """
    if len(raw) > MAX_DEPTH and raw.count(b"[") + raw.count(b"{") > MAX_DEPTH and _depth(raw) > MAX_DEPTH:
        raise ValueError(_PARSE_TOO_DEEP)
    try:
        return _loads(raw)
    except RecursionError:
        return _on_fresh_stack(_loads, raw, _PARSE_TOO_DEEP)


def _loads(raw: bytes) -> Any:
    try:
        return _DECODER.decode(raw)
    except (ValueError, ArithmeticError):  # msgspec.DecodeError is a ValueError
        return _reference_loads(raw)  # the stdlib's value (lone surrogates) or its error text


def _depth(raw: bytes) -> int:
    """The deepest nesting of brackets outside strings (an upper bound for malformed text)."""
    brackets = _STRING.sub(b"", raw).translate(None, _NOT_BRACKETS)
    return max(itertools.accumulate(_STEP[b] for b in brackets), default=0)


def _reference_loads(raw: bytes) -> Any:
    """Today's stdlib parse, message for message."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ValueError(f"invalid UTF-8 at byte {err.start}") from None
    try:
        return _STDLIB_DECODER.decode(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"invalid JSON: {err}") from None
    except ArithmeticError:  # decimal.InvalidOperation: an exponent beyond what Decimal holds
        raise ValueError("invalid JSON: a number's exponent is too large to keep exactly") from None


# -- serialising ---------------------------------------------------------------------------------

_ENCODER = msgspec.json.Encoder(decimal_format="number")

_PLAIN, _CONVERT, _REFERENCE = 0, 1, 2
# Types whose msgspec encoding is byte for byte simplejson's (checked over every code point,
# 2**k +- 1 integers and random decimals in the tests).
_LEAVES = frozenset({str, int, bool, type(None), decimal.Decimal, uuid.UUID})
_CONTAINERS = frozenset({dict, list, tuple})
_PLAIN_TYPES = _LEAVES | _CONTAINERS
# Types whose encoding differs (float exponents, datetime "Z", bytes, sets): rebuilt by _convert.
_CONVERTED = frozenset(
    {float, datetime.datetime, datetime.date, datetime.time, bytes, set, frozenset}
)  # fmt: skip
_KNOWN = _PLAIN_TYPES | _CONVERTED
_STR_KEYS = frozenset({str})


class _Reference(Exception):
    """A value the fast path does not reproduce exactly: serialise with the reference."""


def dumps_document(document: Mapping[str, Any]) -> bytes:
    r"""Serialise a document to UTF-8 JSON that ``jsonb`` accepts, or raise ``ValueError``.

    :param document: a mapping (see the module's docstring for the value types).
    :raises ValueError: ``the document must be a JSON object, ...``; ``document is not JSON:
        ...`` (an unsupported type, a non-finite number, nesting deeper than
        :data:`MAX_DEPTH`); a ``\u0000`` or a lone surrogate in a string.
    """
    if type(document) is not dict and not isinstance(document, Mapping):
        raise ValueError(f"the document must be a JSON object, got {type(document).__name__}")
    try:
        return _dumps(document)
    except RecursionError:
        return _on_fresh_stack(_dumps, document, _DUMP_TOO_DEEP)


def _dumps(document: Mapping[str, Any]) -> bytes:
    top: Any = document if type(document) is dict else dict(document)
    kind = _scan(top, 1)
    if kind == _REFERENCE:
        return _reference_dumps(document)
    try:
        out = _ENCODER.encode(top if kind == _PLAIN else _convert(top, 1))
    except (_Reference, TypeError, ValueError, ArithmeticError):  # UnicodeEncodeError is a ValueError
        return _reference_dumps(document)
    if b"\\u0000" in out and _NUL_ESCAPE.search(out):
        raise ValueError(_NUL)
    return out


def _scan(value: dict[str, Any] | list[Any] | tuple[Any, ...], depth: int) -> int:
    """How ``value`` can be encoded: ``_PLAIN`` (as is), ``_CONVERT`` or ``_REFERENCE``.

    One plain loop (measured faster than set/map/compress variants on provider documents).
    """
    if depth > MAX_DEPTH:
        raise ValueError(_DUMP_TOO_DEEP)
    if type(value) is dict:
        try:
            "".join(value)  # C speed: a TypeError for any key that is not a str
        except TypeError:
            return _REFERENCE  # simplejson's rules for non-string keys
        items: Any = value.values()
    else:
        items = value
    kind = _PLAIN
    for item in items:
        cls = type(item)
        if cls in _LEAVES:
            continue
        if cls in _CONTAINERS:
            found = _scan(item, depth + 1)
        elif cls in _CONVERTED or isinstance(item, Mapping):
            found = _CONVERT  # _convert walks it (and its depth)
        else:
            return _REFERENCE
        if found > kind:
            kind = found
            if kind == _REFERENCE:
                break
    return kind


def _convert(value: Any, depth: int) -> Any:
    """A copy of ``value`` in types msgspec encodes as the reference would (else ``_Reference``)."""
    kind = type(value)
    if kind in _LEAVES:
        return value
    if depth > MAX_DEPTH:
        raise ValueError(_DUMP_TOO_DEEP)
    if kind is list or kind is tuple:
        return [_convert(item, depth + 1) for item in value]
    if kind is dict or (kind not in _KNOWN and isinstance(value, Mapping)):
        if not _STR_KEYS.issuperset(map(type, value)):
            raise _Reference
        return {key: _convert(item, depth + 1) for key, item in value.items()}
    if kind is float:
        if not math.isfinite(value):
            raise _Reference  # its error text
        return msgspec.Raw(float.__repr__(value).encode())
    if kind is datetime.datetime or kind is datetime.date or kind is datetime.time:
        return value.isoformat()
    if kind is bytes:
        return value.decode("utf-8")
    if kind is set or kind is frozenset:
        return _convert(sorted(value), depth)
    raise _Reference


def _json_default(value: object) -> object:
    if isinstance(value, datetime.datetime | datetime.date | datetime.time):
        return value.isoformat()
    if isinstance(value, uuid.UUID | bytes):
        return str(value) if isinstance(value, uuid.UUID) else value.decode("utf-8")
    if isinstance(value, set | frozenset):
        return sorted(value)
    if isinstance(value, Mapping):
        return dict(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


_SIMPLEJSON = simplejson.JSONEncoder(
    ensure_ascii=False,
    use_decimal=True,
    allow_nan=False,
    separators=(",", ":"),
    default=_json_default,
)


def _reference_dumps(document: Mapping[str, Any]) -> bytes:
    """Today's simplejson serialisation, message for message."""
    try:
        text = _SIMPLEJSON.encode(document)
    except (TypeError, ValueError) as err:
        raise ValueError(f"document is not JSON: {err}") from err
    if "\\u0000" in text and _NUL_ESCAPE.search(text.encode("utf-8", "surrogatepass")):
        raise ValueError(_NUL)
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError as err:
        bad = ord(text[err.start])
        raise ValueError(
            f"a string holds U+{bad:04X}, a lone surrogate (invalid UTF-8 in the source or an "
            "unpaired \\uD800-\\uDFFF escape), which jsonb cannot store"
        ) from None


# -- stack depth ---------------------------------------------------------------------------------


def _on_fresh_stack(func: Callable[[Any], T], arg: Any, too_deep: str) -> T:
    """``func(arg)`` on a new thread, for a caller whose stack left too little room.

    Within :data:`MAX_DEPTH` a record must not fail because the caller happens to be deep in
    the stack (Python's recursion limit counts the C parsers' levels too); a new thread starts
    with the whole limit.
    """
    outcome: list[tuple[bool, Any]] = []

    def run() -> None:
        try:
            outcome.append((True, func(arg)))
        except BaseException as err:  # noqa: BLE001 - handed to the calling thread
            outcome.append((False, err))

    thread = threading.Thread(target=run, name="jsoncodec-deep-record", daemon=True)
    thread.start()
    thread.join()
    ok, value = outcome[0]
    if ok:
        return value  # type: ignore[no-any-return]
    if isinstance(value, RecursionError):
        raise ValueError(too_deep) from None
    raise value
