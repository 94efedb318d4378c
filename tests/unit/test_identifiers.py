from __future__ import annotations

import re

import pytest

from s3_postgres_copy.identifiers import check_name, split_table, table_identifier

HINT = "use letters, digits and _ (not starting with a digit, at most 63 characters)"

VALID = ["a", "_", "A1_b", "document", "_123", "CamelCase", "x" * 63]
INVALID = [
    "",
    "1abc",
    "x" * 64,
    "é",
    "naïve",
    "ｆｕｌｌｗｉｄｔｈ",
    "x; DROP TABLE y",
    "a.b",
    '"quoted"',
    "a b",
    "a-b",
    "a\tb",
    "name\n",
    "\nname",
    "a\x00",
    "$a",
    "a$",
    "x'--",
]
INVALID_IDS = [
    "empty",
    "leading-digit",
    "64-chars",
    "accented",
    "unicode-letter",
    "fullwidth",
    "injection",
    "dotted",
    "quoted",
    "space",
    "dash",
    "tab",
    "trailing-newline",
    "leading-newline",
    "nul",
    "leading-dollar",
    "trailing-dollar",
    "quote-comment",
]


class TestCheckName:
    @pytest.mark.parametrize(
        "name", VALID, ids=["a", "underscore", "mixed", "word", "underscore-digits", "camel", "63-chars"]
    )
    def test_valid(self, name: str) -> None:
        assert check_name(name) == name

    @pytest.mark.parametrize("name", INVALID, ids=INVALID_IDS)
    def test_invalid(self, name: str) -> None:
        expected = f"column name {name!r} is not a plain identifier: {HINT}"
        with pytest.raises(ValueError, match=f"^{re.escape(expected)}$"):
            check_name(name)

    @pytest.mark.parametrize("name", [None, 5, b"abc", ["a"]], ids=["none", "int", "bytes", "list"])
    def test_not_a_string(self, name: object) -> None:
        with pytest.raises(ValueError, match=f"^column name {re.escape(repr(name))} is not a plain identifier"):
            check_name(name)  # type: ignore[arg-type]

    def test_what(self) -> None:
        with pytest.raises(ValueError, match="^table name '1x' is not a plain identifier"):
            check_name("1x", "table")


class TestSplitTable:
    @pytest.mark.parametrize(
        ("name", "parts"),
        [
            ("t", ("t",)),
            ("s.t", ("s", "t")),
            ("S_1.T_2", ("S_1", "T_2")),
            ("s" * 63 + "." + "t" * 63, ("s" * 63, "t" * 63)),
        ],
        ids=["table", "schema-table", "mixed-case", "long-parts"],
    )
    def test_valid(self, name: str, parts: tuple[str, ...]) -> None:
        assert split_table(name) == parts

    @pytest.mark.parametrize(
        ("name", "error"),
        [
            ("a.b.c", "table name 'a.b.c' must be 'table' or 'schema.table'"),
            ("a..b", "table name 'a..b' must be 'table' or 'schema.table'"),
            ("", "table name '' is not a plain identifier"),
            (".t", "table name '' is not a plain identifier"),
            ("s.", "table name '' is not a plain identifier"),
            ("x; DROP TABLE y", "table name 'x; DROP TABLE y' is not a plain identifier"),
            ("s.x; DROP TABLE y", "table name 'x; DROP TABLE y' is not a plain identifier"),
            ('"quoted"', "table name '\"quoted\"' is not a plain identifier"),
            ('"s"."t"', "table name '\"s\"' is not a plain identifier"),
            ("1s.t", "table name '1s' is not a plain identifier"),
            ("s." + "t" * 64, f"table name '{'t' * 64}' is not a plain identifier"),
            ("é.t", "table name 'é' is not a plain identifier"),
            ("s. t", "table name ' t' is not a plain identifier"),
        ],
        ids=[
            "three-parts",
            "empty-middle",
            "empty",
            "empty-schema",
            "empty-table",
            "injection",
            "injection-in-table",
            "quoted",
            "quoted-parts",
            "leading-digit",
            "64-char-table",
            "unicode-schema",
            "space",
        ],
    )
    def test_invalid(self, name: str, error: str) -> None:
        with pytest.raises(ValueError, match=f"^{re.escape(error)}"):
            split_table(name)

    @pytest.mark.parametrize(
        ("name", "kind"), [(None, "NoneType"), (5, "int"), (b"t", "bytes")], ids=["none", "int", "bytes"]
    )
    def test_not_a_string(self, name: object, kind: str) -> None:
        with pytest.raises(ValueError, match=f"^table name must be a string, got {kind}$"):
            split_table(name)  # type: ignore[arg-type]


class TestTableIdentifier:
    @pytest.mark.parametrize(
        ("name", "suffix", "rendered"),
        [
            ("t", "", '"t"'),
            ("s.t", "", '"s"."t"'),
            ("s.t", "_rejects", '"s"."t_rejects"'),
            ("t", "_rejects", '"t_rejects"'),
            ("MySchema.MyTable", "", '"MySchema"."MyTable"'),
            ("t" * 55, "_rejects", '"' + "t" * 55 + '_rejects"'),
        ],
        ids=["table", "schema-table", "schema-table-suffix", "table-suffix", "case-kept", "suffix-at-63"],
    )
    def test_renders(self, name: str, suffix: str, rendered: str) -> None:
        assert table_identifier(name, suffix).as_string(None) == rendered

    @pytest.mark.parametrize(
        ("name", "suffix", "error"),
        [
            ("t" * 56, "_rejects", f"table name '{'t' * 56}_rejects' is not a plain identifier"),
            ("t", "; DROP TABLE y", "table name 't; DROP TABLE y' is not a plain identifier"),
            ("a.b.c", "", "table name 'a.b.c' must be 'table' or 'schema.table'"),
            ('x"; DROP TABLE y; --', "", "table name 'x\"; DROP TABLE y; --' is not a plain identifier"),
        ],
        ids=["suffix-past-63", "hostile-suffix", "three-parts", "quote-injection"],
    )
    def test_invalid(self, name: str, suffix: str, error: str) -> None:
        with pytest.raises(ValueError, match=f"^{re.escape(error)}"):
            table_identifier(name, suffix)
