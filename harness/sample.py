"""Deterministic, fast sample data: provider-directory records as JSON lines or CSV.

The records look like what health-care source systems send: inconsistent case
and whitespace, specialties as one ``"; "``-separated string, phones in several
formats, ``accepting_new_patients`` as ``"Y"``/``"yes"``/``true``/..., unicode
names, and a free-text ``bio`` holding quotes, a backslash, tabs, newlines,
U+2028 and emoji. ``rating`` is a JSON number that must stay exact (some carry
20+ significant digits, so a float round trip would change them).

* :func:`provider_record` builds one record (a dict) from a ``random.Random``.
* :func:`jsonl_lines` yields JSON lines fast (about a microsecond or two each): the
  parts of a record are pre-serialised once per seed into pools built with the same
  generators as :func:`provider_record`, and line ``i`` combines ``npi(i)`` with
  part ``i mod p`` of each pool (the pool sizes are distinct primes, so
  combinations do not repeat for any practical ``n``). Line ``i`` depends only on
  ``seed`` and ``i``, so ``jsonl_lines(n, seed, start=k)`` continues
  ``jsonl_lines(k, seed)`` exactly.
* Average JSON line: about 300 bytes.
"""

from __future__ import annotations

import csv
import datetime
import functools
import gzip
import io
import itertools
import json
import random
from collections.abc import Iterator
from decimal import Decimal
from typing import IO, Any

import simplejson

__all__ = [
    "CSV_HEADER",
    "csv_bytes",
    "gzip_bytes",
    "jsonl_bytes",
    "jsonl_lines",
    "npi",
    "provider_record",
    "write_jsonl_gz",
]

CSV_HEADER = (
    "npi",
    "first_name",
    "last_name",
    "credential",
    "specialties",
    "city",
    "state",
    "zip",
    "phone",
    "accepting_new_patients",
    "bio",
)

# ---------------------------------------------------------------------------
# Vocabularies
# ---------------------------------------------------------------------------

_FIRST_NAMES = (
    "James", "Mary", "Robert", "Patricia", "John", "Jennifer", "Michael", "Linda", "David", "Elizabeth",
    "William", "Barbara", "Richard", "Susan", "Joseph", "Jessica", "Thomas", "Sarah", "Christopher", "Karen",
    "Daniel", "Nancy", "Matthew", "Lisa", "Anthony", "Betty", "Mark", "Sandra", "Steven", "Ashley",
    "José", "María", "Zoë", "Łukasz", "François", "Chloé", "Siobhán", "Björn", "Ana", "Luis",
    "Mohammed", "Aisha", "Priya", "Rahul", "Wei", "Mei", "Hiroshi", "Yuki", "Min-jun", "Thảo",
    "Olumide", "Chiamaka", "Dmitri", "Ingrid", "Søren", "Renée", "Mary Ann", "Jean-Luc", "Nikolaj", "Fatima",
)  # fmt: skip
_LAST_NAMES = (
    "Smith", "Johnson", "Williams", "Brown", "Jones", "Garcia", "Miller", "Davis", "Rodriguez", "Martinez",
    "Hernandez", "Lopez", "Gonzalez", "Wilson", "Anderson", "Thomas", "Taylor", "Moore", "Jackson", "Martin",
    "Lee", "Perez", "Thompson", "White", "Harris", "Clark", "Lewis", "Robinson", "Walker", "Young",
    "O'Brien", "McDonald", "Nguyễn", "Trần", "García", "Müller", "Kowalski", "Østergaard", "Çelik", "Patel",
    "Kim", "Park", "Nakamura", "Okafor", "Ivanova", "D'Angelo", "MacLeod", "van der Berg", "Smith-Jones", "Núñez",
)  # fmt: skip
_CJK_NAMES = (("伟", "王"), ("芳", "李"), ("美咲", "佐藤"), ("翔太", "鈴木"), ("민준", "김"), ("서연", "이"))
_CREDENTIALS = (
    ("MD", 30), ("DO", 8), ("NP", 10), ("PA-C", 6), ("M.D.", 4), ("md", 1), ("MD, PhD", 2), ("MD, MPH", 2),
    ("DNP, APRN", 2), ("FNP-BC", 3), ("LCSW", 3), ("PsyD", 2), ("Ph.D.", 1), ("DPM", 1), ("DDS", 2), ("OD", 1),
    ("CNM", 1), ("RN, NP", 1), ("MD FACC", 1), ("PharmD", 1),
)  # fmt: skip
_SPECIALTIES = (
    ("Family Medicine", 14), ("Internal Medicine", 12), ("Pediatrics", 9), ("Cardiology", 5), ("Dermatology", 4),
    ("Obstetrics and Gynecology", 5), ("Orthopaedic Surgery", 4), ("Psychiatry", 5), ("Neurology", 3),
    ("Gastroenterology", 3), ("Endocrinology", 2), ("Oncology", 3), ("Radiology", 2), ("Anesthesiology", 3),
    ("Emergency Medicine", 4), ("Ophthalmology", 2), ("Otolaryngology", 2), ("Urology", 2), ("Nephrology", 1),
    ("Pulmonology", 2), ("Rheumatology", 1), ("Geriatric Medicine", 2), ("Sports Medicine", 2),
    ("Infectious Disease", 1), ("Allergy and Immunology", 1), ("Physical Medicine and Rehabilitation", 1),
    ("Hospice and Palliative Medicine", 1), ("Clinical Social Work", 2), ("Nurse Practitioner", 3),
)  # fmt: skip
_ORGANIZATIONS = (
    "Mercy Health Partners", "St. Luke's Medical Group", "Northside Pediatrics, PLLC", "Valley Family Clinic",
    "Clínica Familiar San José", "Riverside Cardiology Associates", "Bayview Women's Health",
    "Lakeshore Orthopedics", "Summit Behavioral Health", "Harbor Community Health Center",
    "Pinecrest Internal Medicine", "Children's Hospital Physicians", "Kaiser Permanente", "UCSF Health",
    "Mass General Brigham", "Providence Medical Group", "Ochsner Health", "Intermountain Health",
)  # fmt: skip
# (city, state, zip, area code)
_CITIES = (
    ("Boston", "MA", "02115", "617"), ("Springfield", "IL", "62704", "217"), ("San Jose", "CA", "95112", "408"),
    ("Los Angeles", "CA", "90012", "213"), ("Houston", "TX", "77030", "713"), ("Austin", "TX", "78701", "512"),
    ("New York", "NY", "10016", "212"), ("Brooklyn", "NY", "11201", "718"), ("Newark", "NJ", "07102", "973"),
    ("Hartford", "CT", "06106", "860"), ("Portland", "ME", "04101", "207"), ("Seattle", "WA", "98104", "206"),
    ("Chicago", "IL", "60611", "312"), ("Miami", "FL", "33136", "305"), ("Atlanta", "GA", "30308", "404"),
    ("Denver", "CO", "80218", "303"), ("Phoenix", "AZ", "85006", "602"), ("Honolulu", "HI", "96813", "808"),
    ("Anchorage", "AK", "99508", "907"), ("San Juan", "PR", "00901", "787"), ("Nashville", "TN", "37203", "615"),
    ("Minneapolis", "MN", "55415", "612"), ("Coeur d'Alene", "ID", "83814", "208"), ("Española", "NM", "87532", "505"),
)  # fmt: skip
_STREETS = (
    "Main St", "Oak Ave", "Maple Dr", "Washington Blvd", "Park Ave", "Elm St", "Lake Shore Dr", "Cedar Ln",
    "Hospital Dr", "Medical Center Pkwy", "Broadway", "Market St", "Peachtree St NE", "Calle Loíza", "Pine St",
)  # fmt: skip
_UNITS = ("",) * 12 + (" Ste 200", " Ste 4B", " Fl 3", " #12")
_LANGUAGES = ("Spanish", "Vietnamese", "Mandarin", "Cantonese", "Korean", "Tagalog", "Arabic", "Russian",
              "French", "Haitian Creole", "Polish", "Portuguese", "Hindi", "ASL")  # fmt: skip
_ACCEPTING: tuple[tuple[object, int], ...] = (
    ("Y", 20), ("N", 8), ("yes", 6), ("no", 3), (True, 10), (False, 4), ("Yes", 3), ("TRUE", 1), ("1", 1),
    ("0", 1), ("", 1), (None, 1),
)  # fmt: skip
_BIO_SENTENCES = (
    "Board-certified in {spec}.",
    "Dr. {last} has practised in {city} since {year}.",
    "Special interest in preventive care and chronic disease management.",
    'Patients call her "Dr. {first}".',
    "Habla español. Atiende a niños y adultos.",
    "Offers telehealth visits 📞 and same-day appointments ✅.",
    "Intake forms: C:\\clinic\\notes\\intake.pdf",
    "Hours:\tMon–Fri 8–5\nSat 9–12",
    "Clinic moved.\u2028New address on file.",
    "Trained at Hôpital Necker–Enfants malades, Paris.",
    "多语言服务 — interpreters available.",
    "Fellowship-trained; 15+ years' experience, 2,000+ procedures.",
    "Vaccines for all ages 💉; walk-ins welcome.",
    'Notes: "call ahead" \\ bring insurance card.',
    "Специализируется на семейной медицине.",
    "Wheelchair accessible ♿ — free parking.",
)

# Pool sizes: distinct primes, so part i mod p of each pool gives combinations that do not repeat.
_POOL_SIZES = {"person": 4093, "practice": 2039, "location": 4091, "tail": 1999, "bio": 1013}
_EPOCH = datetime.datetime(2023, 1, 1, tzinfo=datetime.UTC)


@functools.cache
def _cumulative(choices: tuple[tuple[Any, int], ...]) -> tuple[list[Any], list[int]]:
    values = [c[0] for c in choices]
    return values, list(itertools.accumulate(c[1] for c in choices))


def _weighted(rng: random.Random, choices: tuple[tuple[Any, int], ...]) -> Any:
    values, cum_weights = _cumulative(choices)
    return rng.choices(values, cum_weights=cum_weights)[0]


def _messy_case(rng: random.Random, text: str, upper: float = 0.1, lower: float = 0.05) -> str:
    r = rng.random()
    if r < upper:
        return text.upper()
    if r < upper + lower:
        return text.lower()
    return text


def _messy_space(rng: random.Random, text: str, p: float = 0.05) -> str:
    if rng.random() >= p:
        return text
    return " " + text.replace(" ", "  ") + " " if " " in text else "  " + text + " "


# ---------------------------------------------------------------------------
# NPI
# ---------------------------------------------------------------------------

_MAX_RECORDS = 900_000_000


def _luhn_sum(value: int) -> int:
    """Luhn digit sum of ``value`` with its rightmost digit doubled."""
    total, double = 0, True
    while value:
        value, digit = divmod(value, 10)
        if double:
            digit *= 2
            digit -= 9 if digit > 9 else 0
        total += digit
        double = not double
    return total


_LUHN4 = [_luhn_sum(v) for v in range(10_000)]
_LUHN1 = [_luhn_sum(d) for d in range(10)]


def npi(i: int) -> int:
    """The NPI of record ``i``: 10 digits, unique per ``i``, with a valid NPI (Luhn) check digit."""
    if not 0 <= i < _MAX_RECORDS:
        raise ValueError(f"record index must be in [0, {_MAX_RECORDS}), got {i}")
    base = 100_000_000 + i  # 9 digits; the check digit makes 10
    high, low = divmod(base, 10_000)
    # 24 is the Luhn contribution of the NPI prefix 80840; digit positions keep their parity by 4s.
    total = 24 + _LUHN4[low] + _LUHN4[high % 10_000] + _LUHN1[high // 10_000]
    return base * 10 + (10 - total % 10) % 10


# ---------------------------------------------------------------------------
# Record parts (shared by provider_record and the JSON-lines pools)
# ---------------------------------------------------------------------------


def _person(rng: random.Random) -> dict[str, Any]:
    if rng.random() < 0.03:
        first, last = rng.choice(_CJK_NAMES)
    else:
        first, last = rng.choice(_FIRST_NAMES), rng.choice(_LAST_NAMES)
        first, last = _messy_space(rng, _messy_case(rng, first)), _messy_space(rng, _messy_case(rng, last))
    return {"first_name": first, "last_name": last, "credential": _weighted(rng, _CREDENTIALS)}


def _specialties(rng: random.Random) -> str:
    k = _weighted(rng, ((1, 70), (2, 25), (3, 5)))
    picked = [_messy_case(rng, _weighted(rng, _SPECIALTIES), 0.1, 0.25) for _ in range(k)]
    if rng.random() < 0.08:  # the same specialty twice, as some feeds send it
        picked.append(picked[0].lower())
    sep = _weighted(rng, (("; ", 70), (";", 15), (" ; ", 8), (", ", 7)))
    text = sep.join(picked)
    return _messy_space(rng, text, 0.05)


def _practice(rng: random.Random) -> dict[str, Any]:
    part: dict[str, Any] = {"specialties": _specialties(rng)}
    if rng.random() < 0.25:
        part["organization"] = _messy_space(rng, rng.choice(_ORGANIZATIONS), 0.05)
    return part


def _phone(rng: random.Random, area: str) -> str:
    line = f"{rng.randrange(100, 200):04d}"  # 555-0100..0199 are reserved for fiction
    fmt = _weighted(rng, ((0, 35), (1, 20), (2, 12), (3, 12), (4, 8), (5, 6), (6, 4), (7, 3)))
    return (
        f"({area}) 555-{line}",
        f"{area}.555.{line}",
        f"+1 {area} 555 {line}",
        f"{area}-555-{line}",
        f"{area}555{line}",
        f"1-{area}-555-{line}",
        f"{area}-555-{line} x{rng.randrange(10, 999)}",
        rng.choice(("", "n/a")),
    )[fmt]


def _location(rng: random.Random) -> dict[str, Any]:
    city, state, zip5, area = rng.choice(_CITIES)
    zip_code: object = zip5
    r = rng.random()
    if r < 0.06:
        zip_code = f"{zip5}-{rng.randrange(10_000):04d}"
    elif r < 0.08:
        zip_code = f"{zip5}{rng.randrange(10_000):04d}"
    elif r < 0.16 and zip5.startswith("0"):
        zip_code = int(zip5)  # a feed that typed ZIP codes as numbers and lost the leading zero
    state_out = _weighted(rng, ((state, 90), (state.lower(), 7), (f" {state} ", 3)))
    line1 = f"{rng.randrange(1, rng.choice((100, 1000, 10_000)))} {rng.choice(_STREETS)}{rng.choice(_UNITS)}"
    part: dict[str, Any] = {
        "address": {
            "line1": _messy_space(rng, line1, 0.05),
            "city": _messy_case(rng, city, 0.1, 0.03),
            "state": state_out,
            "zip": zip_code,
        }
    }
    if rng.random() < 0.92:  # some feeds have no phone for a provider
        part["phone"] = _phone(rng, area)
    return part


def _rating(rng: random.Random) -> object:
    r = rng.random()
    if r < 0.05:
        return None
    if r < 0.1:
        return rng.randrange(3, 6)
    whole = Decimal(rng.randrange(300, 501)) / 100  # 3.00 .. 5.00
    if r < 0.25:  # more digits than a double holds: only an exact parser keeps them
        return whole + Decimal(f"1E-{rng.randrange(17, 25)}")
    return whole


def _tail(rng: random.Random) -> dict[str, Any]:
    part: dict[str, Any] = {}
    if rng.random() < 0.9:  # unknown for some providers
        part["accepting_new_patients"] = _weighted(rng, _ACCEPTING)
    if rng.random() < 0.16:
        langs = ["English"] + rng.sample(_LANGUAGES, 1 if rng.random() < 0.8 else 2)
        part["languages"] = [_messy_case(rng, lang, 0.0, 0.1) for lang in langs]
    moment = _EPOCH + datetime.timedelta(seconds=rng.randrange(2 * 365 * 86_400))
    part["updated_at"] = moment.strftime("%Y-%m-%dT%H:%M:%SZ")
    if rng.random() < 0.4:
        part["rating"] = _rating(rng)
    return part


def _bio(rng: random.Random) -> dict[str, Any]:
    if rng.random() < 0.78:
        return {}
    values = {
        "spec": rng.choice(_SPECIALTIES)[0].lower(),
        "last": rng.choice(_LAST_NAMES),
        "first": rng.choice(_FIRST_NAMES),
        "city": rng.choice(_CITIES)[0],
        "year": rng.randrange(1985, 2023),
    }
    k = _weighted(rng, ((1, 60), (2, 32), (3, 8)))
    text = " ".join(s.format(**values) for s in rng.sample(_BIO_SENTENCES, k))
    return {"bio": text}


def provider_record(i: int, rng: random.Random) -> dict[str, Any]:
    """One raw provider record as a source system would send it.

    :param i: the record's index; determines its unique ``npi``.
    :param rng: the source of everything else (the record is deterministic for its state).
    """
    record: dict[str, Any] = {"npi": str(npi(i))}
    for part in (_person, _practice, _location, _tail, _bio):
        record.update(part(rng))
    return record


# ---------------------------------------------------------------------------
# JSON lines
# ---------------------------------------------------------------------------


def _fragment(part: dict[str, Any], ensure_ascii: bool = False) -> bytes:
    """``part`` as JSON object members without the braces, with a leading comma ("" if empty)."""
    if not part:
        return b""
    text = simplejson.dumps(part, ensure_ascii=ensure_ascii, use_decimal=True, separators=(",", ":"))
    return b"," + text[1:-1].encode("utf-8")


@functools.lru_cache(maxsize=8)
def _pools(seed: int) -> tuple[tuple[bytes, ...], ...]:
    rng = random.Random(f"provider-directory-sample:{seed}")
    pools = []
    for name, make in (
        ("person", _person),
        ("practice", _practice),
        ("location", _location),
        ("tail", _tail),
        ("bio", _bio),
    ):
        # about one bio in ten is written with \\uXXXX escapes, as ensure_ascii serialisers do
        pools.append(
            tuple(
                _fragment(make(rng), ensure_ascii=name == "bio" and rng.random() < 0.1)
                for _ in range(_POOL_SIZES[name])
            )
        )
    return tuple(pools)


def jsonl_lines(n: int, seed: int = 0, start: int = 0) -> Iterator[bytes]:
    """Yield records ``start`` .. ``start + n - 1`` as JSON lines (UTF-8, each ending in ``b"\\n"``).

    Line ``i`` depends only on ``seed`` and ``i``; ``npi`` is unique per ``i``.
    """
    if n < 0 or start < 0 or start + n > _MAX_RECORDS:
        raise ValueError(f"records must lie in [0, {_MAX_RECORDS}), got start={start} n={n}")
    person, practice, location, tail, bio = _pools(seed)
    sp, sr, sl, st, sb = (len(p) for p in (person, practice, location, tail, bio))
    luhn4, luhn1 = _LUHN4, _LUHN1
    for i in range(start, start + n):
        base = 100_000_000 + i
        high, low = divmod(base, 10_000)
        check = (10 - (24 + luhn4[low] + luhn4[high % 10_000] + luhn1[high // 10_000]) % 10) % 10
        yield b'{"npi":"%d%d"%s%s%s%s%s}\n' % (
            base,
            check,
            person[i % sp],
            practice[i % sr],
            location[i % sl],
            tail[i % st],
            bio[i % sb],
        )


def jsonl_bytes(n: int, seed: int = 0) -> bytes:
    """``n`` records as one JSON-lines document."""
    return b"".join(jsonl_lines(n, seed))


def write_jsonl_gz(fileobj: IO[bytes], n: int, seed: int = 0, compresslevel: int = 1) -> int:
    """Write ``n`` records as gzipped JSON lines to ``fileobj``; return the uncompressed size.

    The output is deterministic (no file name or time stamp in the gzip header) and is
    written in chunks of 10 000 lines, so memory stays small for any ``n``.
    """
    total = 0
    with gzip.GzipFile(filename="", mode="wb", fileobj=fileobj, compresslevel=compresslevel, mtime=0) as gz:
        for first in range(0, n, 10_000):
            chunk = b"".join(jsonl_lines(min(10_000, n - first), seed, start=first))
            gz.write(chunk)
            total += len(chunk)
    return total


def gzip_bytes(data: bytes, compresslevel: int = 1) -> bytes:
    """``data`` as one deterministic gzip member."""
    return gzip.compress(data, compresslevel=compresslevel, mtime=0)


# ---------------------------------------------------------------------------
# CSV
# ---------------------------------------------------------------------------


def _csv_accepting(value: object) -> str:
    if value is None or value == "":
        return ""
    return "Y" if value in (True, "Y", "yes", "Yes", "TRUE", "1") else "N"


def csv_bytes(n: int, seed: int = 0) -> bytes:
    """``n`` records as UTF-8 CSV with a header row (:data:`CSV_HEADER`), RFC 4180 quoting.

    Fields hold commas (specialties, bios), double quotes and line breaks (bios), so
    records span several physical lines.
    """
    rng = random.Random(f"provider-directory-csv:{seed}")
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(CSV_HEADER)
    for i in range(n):
        rec = provider_record(i, rng)
        address = rec["address"]
        zip_code = address["zip"]
        writer.writerow(
            (
                rec["npi"],
                rec["first_name"],
                rec["last_name"],
                rec["credential"],
                rec["specialties"],
                address["city"],
                address["state"].strip(),
                str(zip_code),  # a ZIP typed as a number has lost its leading zero, as in spreadsheets
                rec.get("phone", ""),
                _csv_accepting(rec.get("accepting_new_patients")),
                rec.get("bio", ""),
            )
        )
    return out.getvalue().encode("utf-8")


if __name__ == "__main__":  # pragma: no cover - quick look: python -m harness.sample [n]
    import sys

    count = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    for raw in jsonl_lines(count):
        print(json.dumps(json.loads(raw), ensure_ascii=False))
