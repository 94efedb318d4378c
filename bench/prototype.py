"""Prototypes of plugin changes, applied by monkeypatching inside a worker process only (``--prototype``).

Nothing here changes ``plugins/``; each patch is what the report proposes, so its effect can be
measured with the same interleaved method as the plugin as it is.

* ``utf8_in_pieces``: the JSON-lines fast path still checks that each block is UTF-8, but with an
  incremental decoder fed 64 KiB pieces instead of one ``bytes.decode`` of the whole ~1 MiB block.
  Same verdict, same fallback to the per-line path (which names the byte); ~5x cheaper, because a
  1 MiB block holding a single emoji decodes into a 4 MiB UCS-4 string, a 64 KiB piece stays in cache.
* ``skip_utf8_check``: the fast path stops checking UTF-8 at all. The server checks the encoding of
  every COPY row anyway (client_encoding UTF8), and a bad row's error names its COPY line, which the
  loader maps to the source line; but strict-mode messages become the server's ("invalid byte
  sequence for encoding UTF8") and the encoder's unit tests that expect "invalid UTF-8 at byte N"
  from the fast path would change, so ``utf8_in_pieces`` is the one proposed.
* ``drop_sent_payloads``: a segment keeps its blocks (for the line numbers of a failing row) but
  not their payloads once they are sent; a strict load never needs them again (tolerant mode's
  segment retry would still keep them). The plugin does this itself since commit 40d659e, so this
  patch is a no-op on current code; kept to re-measure older revisions.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

PATCHES = ("utf8_in_pieces", "skip_utf8_check", "drop_sent_payloads")


def apply(patches: Iterable[str]) -> None:
    """Apply the named patches to the imported plugin classes."""
    from s3_postgres_copy import documents

    wanted = set(patches)
    unknown = wanted - set(PATCHES)
    if unknown:
        raise ValueError(f"unknown patches {sorted(unknown)}")
    encoder = documents.JsonLinesEncoder

    if "utf8_in_pieces" in wanted and "skip_utf8_check" in wanted:
        raise ValueError("utf8_in_pieces and skip_utf8_check exclude each other")
    if "utf8_in_pieces" in wanted or "skip_utf8_check" in wanted:
        # utf8_in_pieces is what the plugin adopted (documents.is_utf8); kept to re-measure older revisions.
        check = documents.is_utf8 if "utf8_in_pieces" in wanted else None

        def encode_block(self: Any, block: Any) -> Any:
            data = block.data
            if b"\r" in data:
                data = data.replace(b"\r\n", b"\n")
            if self._fast and documents._all_lines_open_objects(data, block.count) and (check is None or check(data)):
                docs = self.row_format.fields(data)
                if data.endswith(b"\n"):
                    docs.pop()
                lines = range(block.first_line, block.first_line + block.count)
                return documents.EncodedBlock(self.row_format.rows(docs, lines), lines, lines_read=block.count)
            return self._encode_lines(block, data)

        encoder.encode_block = encode_block

    if "drop_sent_payloads" in wanted:
        original = encoder.encode

        def encode(self: Any, blocks: Any) -> Iterator[Any]:
            previous = None
            for out in original(self, blocks):
                if previous is not None:
                    previous.payload = b""  # written to the server before the next block is asked for
                yield out
                previous = out

        encoder.encode = encode
