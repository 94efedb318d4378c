"""One source record → the provider document the application's API would create.

This is the piece a deployment replaces with its own rules: the loader calls
:func:`build_provider_document` once per record (``transform=
"provider_directory.documents:build_provider_document"``) and stores what it
returns as the row's ``document``. Any exception it raises makes the record a bad
record, reported with its line number and the exception's message.

It accepts both shapes the loader produces:

* JSON lines, parsed exactly: nested ``address``, raw JSON types (``true``, numbers
  as ``int`` or :class:`~decimal.Decimal`, lists);
* CSV rows: a flat mapping of header → string (``city``/``state``/``zip`` columns,
  ``"Y"``/``"N"``, ``""`` for an empty cell).

Pure Python, no I/O; the normalisation of strings that repeat across records
(names, specialties, credentials, cities) is memoised, so it stays cheap per record.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Callable, Iterable, Mapping
from decimal import Decimal, InvalidOperation
from typing import Any

__all__ = ["SCHEMA_VERSION", "build_provider_document"]

SCHEMA_VERSION = 1
"""Version of the document layout built here, stored as ``schema_version``."""

_CACHE_SIZE = 1 << 14

_NPI = re.compile(r"[0-9]{10}")
_LIST_SEPARATOR = re.compile(r"[;,]")
_CREDENTIAL_SEPARATOR = re.compile(r"[,;/\s]+")
_NON_DIGIT = re.compile(r"[^0-9]+")
_PHONE_EXTENSION = re.compile(r"\s*(?:x|ext\.?|extension|#)\s*[0-9]+\s*$", re.IGNORECASE)
_STATE = re.compile(r"[A-Z]{2}")
_ZIP = re.compile(r"([0-9]{5})(?:-?([0-9]{4}))?")
_ZIP_LOST_ZEROS = re.compile(r"([0-9]{3,4})(?:-([0-9]{4}))?")
# A letter that starts a word: at the start, or after whitespace, a hyphen or a slash;
# for personal and place names also after an apostrophe or a period (O'Brien, St.Clair).
_WORD_START = re.compile(r"(?:^|(?<=[\s\-/(]))([^\W\d_])")
_NAME_START = re.compile(r"(?:^|(?<=[\s\-/(.'\u2019]))([^\W\d_])")
_MC = re.compile(r"\bMc([^\W\d_])")

_MINOR_WORDS = frozenset({"a", "an", "and", "at", "by", "for", "in", "of", "on", "or", "the", "to", "with"})
_ACRONYMS = {
    "adhd": "ADHD",
    "aids": "AIDS",
    "asl": "ASL",
    "ent": "ENT",
    "hiv": "HIV",
    "hiv/aids": "HIV/AIDS",
    "icu": "ICU",
    "lgbtq": "LGBTQ",
    "lgbtq+": "LGBTQ+",
    "ob/gyn": "OB/GYN",
    "obgyn": "OB/GYN",
}
_CREDENTIAL_SPELLINGS = {
    "DMSC": "DMSc",
    "DPHIL": "DPhil",
    "DRPH": "DrPH",
    "EDD": "EdD",
    "PHARMD": "PharmD",
    "PHD": "PhD",
    "PSYD": "PsyD",
}
_TRUE = frozenset({"y", "yes", "true", "t", "1"})
_FALSE = frozenset({"n", "no", "false", "f", "0"})


def build_provider_document(record: Mapping[str, Any]) -> dict[str, Any]:
    """Build the provider document for one source record.

    :param record: a JSON-lines record (nested ``address``, raw JSON types) or a CSV
        row (header → string, flat ``city``/``state``/``zip``).
    :return: ``npi``, ``name`` (``first``/``last``/``full``), ``credentials``,
        ``specialties``, ``organization``, ``address`` (``line1``/``city``/``state``/``zip``),
        ``phone`` (E.164 or ``None``), ``accepting_new_patients`` (``True``/``False``,
        ``None`` when not given), ``languages``, ``bio`` (as is), ``rating`` (exact:
        a ``Decimal`` stays a ``Decimal``), ``updated_at`` (as is), and the API's
        defaults ``status``, ``source`` and ``schema_version``.
    :raises ValueError: the record cannot become a document (the message says why).
    """
    get = record.get
    first = _person_name(_text(get("first_name"), "first_name"))
    last = _person_name(_text(get("last_name"), "last_name"))
    if not first and not last:
        raise ValueError("first_name or last_name is required")
    credential = get("credentials", get("credential"))
    return {
        "npi": _npi(get("npi")),
        "name": {"first": first or None, "last": last or None, "full": f"{first} {last}".strip()},
        "credentials": _list(credential, "credential", _credentials),
        "specialties": _list(get("specialties"), "specialties", _specialties),
        "organization": _text(get("organization"), "organization") or None,
        "address": _address(record),
        "phone": _phone(get("phone")),
        "accepting_new_patients": _accepting(get("accepting_new_patients")),
        "languages": _list(get("languages"), "languages", _languages),
        "bio": get("bio"),
        "rating": _rating(get("rating")),
        "updated_at": get("updated_at"),
        "status": "active",
        "source": "bulk-import",
        "schema_version": SCHEMA_VERSION,
    }


def _text(value: object, field: str) -> str:
    """``value`` as text with runs of whitespace collapsed to one space ("" for null)."""
    if value is None:
        return ""
    if isinstance(value, str):
        return " ".join(value.split())
    if isinstance(value, int | Decimal) and not isinstance(value, bool):
        return str(value)
    raise ValueError(f"{field} must be a string, got {type(value).__name__}")


def _npi(value: object) -> str:
    text = value.strip() if isinstance(value, str) else value
    if isinstance(text, int) and not isinstance(text, bool):
        text = str(text)
    if not isinstance(text, str) or not _NPI.fullmatch(text):
        raise ValueError(f"npi must be 10 digits, got {value!r}")
    return text


@functools.lru_cache(maxsize=_CACHE_SIZE)
def _person_name(text: str) -> str:
    """Title-case a name only when the source shouted or whispered it (all upper or lower case)."""
    if not (text.isupper() or text.islower()):
        return text  # mixed case is deliberate: McDonald, van der Berg, DeShawn
    titled = _NAME_START.sub(lambda m: m[1].upper(), text.lower())
    return _MC.sub(lambda m: "Mc" + m[1].upper(), titled)


def _title(text: str) -> str:
    """Title-case a phrase: minor words lower case (except first), known acronyms upper case."""
    words = []
    for n, word in enumerate(text.lower().split()):
        if word in _ACRONYMS:
            words.append(_ACRONYMS[word])
        elif n and word in _MINOR_WORDS:
            words.append(word)
        else:
            words.append(_WORD_START.sub(lambda m: m[1].upper(), word))
    return " ".join(words)


def _unique(items: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(item for item in items if item))


@functools.lru_cache(maxsize=_CACHE_SIZE)
def _specialties(text: str) -> tuple[str, ...]:
    return _unique(_title(part) for part in _LIST_SEPARATOR.split(text))


@functools.lru_cache(maxsize=_CACHE_SIZE)
def _languages(text: str) -> tuple[str, ...]:
    return _unique(_title(part) for part in _LIST_SEPARATOR.split(text))


@functools.lru_cache(maxsize=_CACHE_SIZE)
def _credentials(text: str) -> tuple[str, ...]:
    tokens = (token.replace(".", "").upper() for token in _CREDENTIAL_SEPARATOR.split(text))
    return _unique(_CREDENTIAL_SPELLINGS.get(token, token) for token in tokens)


def _list(value: object, field: str, split: Callable[[str], tuple[str, ...]]) -> list[str]:
    """A de-duplicated list from a separated string or a list of strings (empty for null)."""
    if value is None:
        return []
    if isinstance(value, str):
        return list(split(value))
    if isinstance(value, list | tuple):
        items: list[str] = []
        for item in value:
            if not isinstance(item, str):
                raise ValueError(f"{field} must hold strings, got {type(item).__name__}")
            items.extend(split(item))
        return list(dict.fromkeys(items))
    raise ValueError(f"{field} must be a string or a list of strings, got {type(value).__name__}")


def _address(record: Mapping[str, Any]) -> dict[str, str | None]:
    nested = record.get("address")
    if isinstance(nested, Mapping):
        source: Mapping[str, Any] = nested
        line1 = nested.get("line1")
    elif nested is None or isinstance(nested, str):  # flat columns (CSV); a string address is line 1
        source = record
        line1 = nested if nested is not None else record.get("line1", record.get("address_line1"))
    else:
        raise ValueError(f"address must be an object, got {type(nested).__name__}")
    city = _text(source.get("city"), "city")
    return {
        "line1": _text(line1, "address line1") or None,
        "city": _person_name(city) or None,
        "state": _state(source.get("state")),
        "zip": _zip(source.get("zip", source.get("postal_code"))),
    }


def _state(value: object) -> str | None:
    text = _text(value, "state").upper()
    if not text:
        return None
    if not _STATE.fullmatch(text):
        raise ValueError(f"state must be a 2-letter code, got {value!r}")
    return text


def _zip(value: object) -> str | None:
    if isinstance(value, int) and not isinstance(value, bool) and 0 < value < 100_000:
        return f"{value:05d}"  # typed as a number somewhere upstream: leading zeros lost
    text = _text(value, "zip")
    if not text:
        return None
    match = _ZIP.fullmatch(text)
    if match is None:
        match = _ZIP_LOST_ZEROS.fullmatch(text)  # "2115" from a spreadsheet is 02115
    if match is None:
        raise ValueError(f"zip must be 5 digits or ZIP+4, got {value!r}")
    zip5 = match[1].zfill(5)
    return zip5 if match[2] is None else f"{zip5}-{match[2]}"


def _phone(value: object) -> str | None:
    """E.164 (``+1XXXXXXXXXX``) for a 10-digit North American number, else ``None``."""
    if not isinstance(value, str | int) or isinstance(value, bool):
        return None
    digits = _NON_DIGIT.sub("", _PHONE_EXTENSION.sub("", str(value)))
    if len(digits) == 11 and digits[0] == "1":
        digits = digits[1:]
    return "+1" + digits if len(digits) == 10 else None


def _accepting(value: object) -> bool | None:
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        word = value.strip().lower()
        if word in _TRUE:
            return True
        if word in _FALSE:
            return False
        if not word:
            return None
    raise ValueError(f"accepting_new_patients must be yes/no or true/false, got {value!r}")


def _rating(value: object) -> int | Decimal | float | None:
    """The rating unchanged (``Decimal`` keeps every digit); a CSV string becomes a ``Decimal``."""
    if value is None:
        return None
    if isinstance(value, str):
        text = value.strip()
        if not text:
            return None
        try:
            value = Decimal(text)
        except InvalidOperation:
            raise ValueError(f"rating must be a number, got {text!r}") from None
    if isinstance(value, bool) or not isinstance(value, int | Decimal | float):
        raise ValueError(f"rating must be a number, got {value!r}")
    if isinstance(value, int):
        return value
    if not (value.is_finite() if isinstance(value, Decimal) else math.isfinite(value)):
        raise ValueError(f"rating must be a finite number, got {value!r}")
    return value
