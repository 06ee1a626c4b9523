"""Streaming readers for CSV, JSON Lines and JSON arrays, resumable from a byte offset.

Every reader hands out records in batches and knows, after each record, the byte offset and
line count just past it. The import job stores that position in the same transaction as the
batch, so a resumed job seeks there and reads exactly the rows that were not committed.

Bad input never stops the reader: a ragged row, a line that is not JSON, a line that is not
UTF-8, a line with a NUL byte, a quote that never closes (see ``CsvReader``) or a row larger
than ``max_record_bytes`` (e.g. one 50 MB field) becomes a record with reasons, quarantined by
the job. Each record knows the physical lines it spans, and each reader counts the blank lines
it skips, so the job can check that every line of the file was accounted for. Only problems
that make the rest of the file unreadable (not UTF-8 at all, no header, missing identity
columns, a broken JSON array) raise ``FileFailure``.
Memory stays bounded by ``max_record_bytes`` whatever the file size.
"""

from __future__ import annotations

import abc
import codecs
import csv
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import orjson

from nodes.profile_import.models import Reason, clean_key, field_of, quarantine_text

BOM = codecs.BOM_UTF8
SNIFF_BYTES = 64 * 1024
MAX_RAW_CHARS = 4_000  # characters of a rejected row kept in the quarantine
DEFAULT_MAX_FIELD_BYTES = 1 << 20  # csv.field_size_limit: one CSV field
DEFAULT_MAX_RECORD_BYTES = 4 << 20  # one physical line / JSON element / CSV row
DEFAULT_MAX_RECORD_LINES = 1_000  # physical lines of one CSV row (quoted line breaks)
CSV_SUFFIXES = frozenset({".csv", ".tsv", ".txt", ".psv"})
JSONL_SUFFIXES = frozenset({".jsonl", ".ndjson", ".jsonlines"})
DELIMITERS = ",;\t|"
_SEP_LINE = re.compile(rb"sep=([^\r\n])[ \t]*(?:\r\n|\n|\r)")


class FileFailure(Exception):
    """The file as a whole cannot be imported (the job fails with this clear message)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(slots=True)
class RawRecord:
    """One record as read: its data, or the reasons it could not be read."""

    line: int
    data: dict[str, Any] | None
    raw: str = ""
    errors: list[Reason] = field(default_factory=list)
    lines: int = 1  # physical lines of the file this record spans


@dataclass
class Layout:
    """What discovery learned about a file; stored with the job so a resume reads it alike."""

    format: str  # csv | jsonl | json
    data_offset: int  # byte offset of the first record
    data_line: int  # lines before the first record
    dialect: dict[str, Any] = field(default_factory=dict)
    header: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Limits:
    max_field_bytes: int = DEFAULT_MAX_FIELD_BYTES
    max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES
    max_record_lines: int = DEFAULT_MAX_RECORD_LINES


def _clip(text: str) -> str:
    return text if len(text) <= MAX_RAW_CHARS else text[:MAX_RAW_CHARS] + "…[truncated]"


# -- discovery ----------------------------------------------------------------------------------


def check_encoding(head: bytes, complete: bool) -> None:
    """Refuse anything but UTF-8 (with or without BOM) before a single row is imported."""
    sample = head[:4096]
    # UTF-16/32 text without a BOM has a NUL in every other (or every) byte of ASCII text;
    # a few NULs in UTF-8 text are bad rows (quarantined), not a bad file
    if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)) or \
            sample.count(b"\x00") * 4 > len(sample):
        raise FileFailure("invalid_encoding", "the file is UTF-16/UTF-32 or binary, not UTF-8 "
                                              "text: save it as UTF-8 and import it again")
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as exc:
        if not complete and exc.start >= len(head) - 3 and "end of data" in exc.reason:
            return  # a multi-byte character cut by the sample's end
        line = head.count(b"\n", 0, exc.start) + 1
        raise FileFailure(
            "invalid_encoding",
            f"the file is not UTF-8: byte 0x{head[exc.start]:02X} on line {line} (byte offset "
            f"{exc.start}) is not valid UTF-8 (Latin-1 or Windows-1252?); save it as UTF-8 and "
            "import it again") from None


def detect_format(path: Path, head: bytes) -> str:
    suffix = path.suffix.lower()
    if suffix in CSV_SUFFIXES:
        return "csv"
    if suffix in JSONL_SUFFIXES:
        return "jsonl"
    first = head.removeprefix(BOM).lstrip()[:1]
    if first == b"[":
        return "json"
    if first == b"{":
        return "jsonl"
    if suffix == ".json":
        raise FileFailure("invalid_json", "a .json file must hold a JSON array of objects or "
                                          "one JSON object per line")
    return "csv"


def sniff_dialect(sample: str) -> dict[str, Any]:
    """Delimiter and quoting of a CSV sample (csv.Sniffer, checked against the header line)."""
    lines = sample.splitlines()
    header = lines[0] if lines else ""
    complete = "\n".join(lines[:-1] if len(lines) > 1 else lines)
    try:
        sniffed = csv.Sniffer().sniff(complete, delimiters=DELIMITERS)
        delimiter, quotechar = sniffed.delimiter, sniffed.quotechar or '"'
        skipinitialspace = bool(sniffed.skipinitialspace)
    except csv.Error:
        delimiter, quotechar, skipinitialspace = ",", '"', False
    if delimiter not in header:  # the sniffer guessed from noise: count in the header instead
        counts = {d: header.count(d) for d in DELIMITERS}
        best = max(counts, key=lambda d: counts[d])
        delimiter = best if counts[best] else ","
    if quotechar not in ('"', "'"):
        quotechar = '"'
    return {"delimiter": delimiter, "quotechar": quotechar, "skipinitialspace": skipinitialspace}


def discover(fh: BinaryIO, path: Path, limits: Limits, *,
             require_identity: bool = True) -> Layout:
    """Format, encoding, dialect and header of a file; FileFailure if it cannot be imported
    (``require_identity=False``: a CSV header without an e-mail or profile URL column is
    accepted, for reading CSV as such)."""
    fh.seek(0)
    head = fh.read(SNIFF_BYTES)
    if not head:
        raise FileFailure("empty_file", "the file is empty (0 bytes): nothing to import")
    complete = len(head) < SNIFF_BYTES
    check_encoding(head, complete)
    start = len(BOM) if head.startswith(BOM) else 0
    if not head[start:].strip():
        raise FileFailure("empty_file", "the file holds only whitespace: nothing to import")
    fmt = detect_format(path, head)
    if fmt == "jsonl":
        return Layout("jsonl", start, 0)
    if fmt == "json":
        body = head[start:]
        skipped = len(body) - len(body.lstrip())
        return Layout("json", start + skipped + 1, body[:skipped].count(b"\n"))
    body = head[start:]
    # CR-only line breaks (old Mac exports): lines are split on CR instead of LF
    terminator = "\r" if b"\r" in body and b"\n" not in body else "\n"
    line = 0
    sep = _SEP_LINE.match(body)  # Excel's "sep=;" first line names the delimiter
    if sep is not None:
        start += sep.end()
        line = 1
        body = head[start:]
    text = body.decode("utf-8", errors="ignore")
    if terminator == "\r":
        text = text.replace("\r", "\n")
    dialect = sniff_dialect(text)
    if sep is not None:
        dialect["delimiter"] = sep[1].decode()
    dialect["lineterminator"] = terminator
    reader = CsvReader(fh, offset=start, line=line, dialect=dialect, header=None, limits=limits)
    first = reader.read(1)
    if not first or first[0].data is None:
        reasons = "; ".join(m for _, m in first[0].errors) if first else "no header row"
        raise FileFailure("no_header", f"cannot read the header row: {reasons}")
    header, warnings = unique_header(
        [str(v).strip() or f"column_{i + 1}" for i, v in enumerate(first[0].data["_row"])])
    fields = {field_of(h) for h in header}
    if require_identity and not fields & {"email", "profile_url"}:
        raise FileFailure(
            "missing_columns",
            "missing required column: the header needs an e-mail or a profile URL column "
            f"(e.g. 'email', 'profile_url'); found: {', '.join(header)[:300]}")
    if sep is not None:
        warnings.insert(0, f"delimiter {dialect['delimiter']!r} taken from the file's "
                           "'sep=' first line")
    return Layout("csv", reader.offset, reader.line, dialect, header, warnings)


def unique_header(names: list[str]) -> tuple[list[str], list[str]]:
    """Column names made unique so no value is lost: a name seen before (compared as
    ``clean_key`` spells it) becomes ``name_2``, ``name_3``... (kept in ``extra``), each
    rename with a warning."""
    seen: dict[str, int] = {}
    taken = {clean_key(n) for n in names}
    out: list[str] = []
    warnings: list[str] = []
    for i, name in enumerate(names):
        key = clean_key(name)
        if key not in seen:
            seen[key] = i
            out.append(name)
            continue
        n = 2
        while f"{key}_{n}" in taken:
            n += 1
        renamed = f"{key}_{n}"
        taken.add(renamed)
        out.append(renamed)
        warnings.append(f"duplicate column {name!r} (columns {seen[key] + 1} and {i + 1}): the "
                        f"first feeds the field, column {i + 1} is kept in extra as "
                        f"{renamed!r}")
    return out, warnings


def open_reader(fh: BinaryIO, layout: Layout, offset: int, line: int,
                limits: Limits) -> Reader:
    """A reader positioned at ``offset`` (``line`` lines already consumed)."""
    if layout.format == "csv":
        return CsvReader(fh, offset=offset, line=line, dialect=layout.dialect,
                         header=layout.header, limits=limits)
    if layout.format == "jsonl":
        return JsonLinesReader(fh, offset=offset, line=line, limits=limits)
    return JsonArrayReader(fh, offset=offset, line=line, data_offset=layout.data_offset,
                           limits=limits)


# -- readers ------------------------------------------------------------------------------------


class Reader(abc.ABC):
    """Common position bookkeeping: ``offset``/``line`` are just past the last record read;
    ``skipped`` counts the blank lines passed over (so records' lines + skipped = lines)."""

    offset: int
    line: int
    eof: bool = False
    skipped: int = 0

    @abc.abstractmethod
    def read(self, n: int) -> list[RawRecord]:
        """Up to ``n`` records from the current position."""


def _drain_line(fh: BinaryIO) -> int:
    """Skip the rest of an oversized physical line; returns the bytes skipped."""
    skipped = 0
    while True:
        more = fh.readline(1 << 20)
        skipped += len(more)
        if not more or more.endswith(b"\n"):
            return skipped


class _Unclosed(Exception):
    """The csv parser asked for more lines inside a quoted field than the limits allow."""

    def __init__(self, why: str) -> None:
        super().__init__(why)
        self.why = why


class _Lines:
    """Physical lines of a binary file, split on ``\\n`` (LF and CRLF files) or on ``\\r``
    (CR-only files), each at most ``cap + 1`` bytes (a longer one is cut there)."""

    CHUNK = 1 << 16

    def __init__(self, fh: BinaryIO, terminator: bytes) -> None:
        self.fh = fh
        self.cr = terminator == b"\r"
        self._buf = b""

    def readline(self, cap: int) -> bytes:
        if not self.cr:
            return self.fh.readline(cap + 1)
        while True:
            end = self._buf.find(b"\r", 0, cap + 1)
            if end >= 0 or len(self._buf) > cap:
                cut = end + 1 if end >= 0 else cap + 1
                line, self._buf = self._buf[:cut], self._buf[cut:]
                return line
            more = self.fh.read(self.CHUNK)
            if not more:
                line, self._buf = self._buf, b""
                return line
            self._buf += more

    def drain(self) -> int:
        """Skip the rest of an oversized physical line; returns the bytes skipped."""
        skipped = 0
        while True:
            more = self.readline(1 << 20)
            skipped += len(more)
            if not more or more.endswith(b"\r" if self.cr else b"\n"):
                return skipped


class CsvReader(Reader):
    """CSV rows as dicts keyed by header; ragged and unreadable rows come back with reasons.

    Lines are fed to ``csv.reader`` one at a time from the binary file, so the byte offset
    after each row is exact (the csv module never reads ahead). Rows whose cells are all empty
    are blank lines: skipped and counted in ``skipped``.

    A quoted field may span lines, but not without bound: when a row is still inside a quote
    after ``max_record_lines`` lines or ``max_record_bytes`` bytes, at the end of the file, or
    when a row spanning several lines comes out with the wrong number of fields (a stray quote
    swallowed the lines after it), the row's first line is quarantined as ``unclosed_quote``
    and parsing starts again on the next line: every later row is read as if the broken line
    were not there.
    """

    def __init__(self, fh: BinaryIO, *, offset: int, line: int, dialect: dict[str, Any],
                 header: list[str] | None, limits: Limits) -> None:
        csv.field_size_limit(limits.max_field_bytes)
        self.fh = fh
        self.header = header
        self.limits = limits
        self.dialect = dialect
        self._terminator = dialect.get("lineterminator", "\n").encode()
        self.skipped = 0
        self._restart(offset, line)

    def _restart(self, offset: int, line: int) -> None:
        self.fh.seek(offset)
        self.offset, self.line = offset, line
        self._src = _Lines(self.fh, self._terminator)
        self._pending: Reason | None = None
        self._lines_of_row: list[str] = []
        self._first_len = 0  # bytes of the current row's first line
        self._row_bytes = 0
        self._row_offset = offset  # where the current row starts
        self._ended = True  # the last line read ended with the terminator
        self._rows = csv.reader(self._feed(), strict=True, **self._csv_dialect())

    def _csv_dialect(self) -> dict[str, Any]:
        d = self.dialect
        return {"delimiter": d.get("delimiter", ","), "quotechar": d.get("quotechar", '"'),
                "doublequote": True, "skipinitialspace": bool(d.get("skipinitialspace", False))}

    def _lenient(self, text: str) -> list[str] | None:
        """One line read as csv does without ``strict`` (``a,"b"c`` -> ``['a', 'bc']``)."""
        try:
            return next(csv.reader([text], **self._csv_dialect()))
        except (csv.Error, StopIteration):
            return None

    def _feed(self) -> Iterator[str]:
        readline, cap = self._src.readline, self.limits.max_record_bytes
        max_lines = self.limits.max_record_lines
        while True:
            mid_row = bool(self._lines_of_row)  # csv wants more: we are inside a quote
            if mid_row and (len(self._lines_of_row) >= max_lines or self._row_bytes > cap):
                raise _Unclosed(f"still open after {len(self._lines_of_row):,} lines "
                                f"({self._row_bytes:,} bytes)")
            raw = readline(cap)
            if not raw:
                if mid_row and not self._ended:  # end the last line and see if csv is done
                    self._ended = True
                    yield "\n"
                    continue
                if mid_row:
                    raise _Unclosed("still open at the end of the file")
                return
            self._ended = raw.endswith(self._terminator)
            self.offset += len(raw)
            self.line += 1
            if not mid_row:
                self._first_len = len(raw)
            self._row_bytes += len(raw)
            if len(raw) > cap and not raw.endswith(self._terminator):
                self.offset += self._src.drain()
                self._pending = ("row_too_large",
                                 f"line {self.line}: row is larger than {cap:,} bytes")
                self._lines_of_row.append(raw[:MAX_RAW_CHARS].decode("utf-8", "replace"))
                yield "\n"
                continue
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                self._pending = ("invalid_encoding",
                                 f"line {self.line}: byte 0x{raw[exc.start]:02X} at column "
                                 f"{exc.start + 1} is not valid UTF-8")
                self._lines_of_row.append(raw.decode("utf-8", "replace"))
                yield "\n"
                continue
            self._lines_of_row.append(text)
            if "\x00" in text:
                self._pending = ("nul_byte", f"line {self.line}: a NUL byte at column "
                                             f"{text.index(chr(0)) + 1} (binary data?)")
                yield "\n"
                continue
            yield text

    def _unclosed(self, start: int, why: str) -> RawRecord:
        """Quarantine the first line of the row at ``start`` and parse again after it."""
        first = self._lines_of_row[0] if self._lines_of_row else ""
        self._restart(self._row_offset + self._first_len, start)
        return RawRecord(start, None, _clip(first.rstrip("\r\n")), [(
            "unclosed_quote", f"line {start}: a quoted field opened on this line is {why}: "
                              "the line is set aside and the rows after it are read again")])

    def read(self, n: int) -> list[RawRecord]:
        out: list[RawRecord] = []
        header = self.header
        width = len(header) if header is not None else 0
        while len(out) < n and not self.eof:
            start = self.line + 1
            self._lines_of_row = []
            self._row_bytes = 0
            self._row_offset = self.offset
            try:
                row = next(self._rows)
            except StopIteration:
                self.eof = True
                break
            except _Unclosed as exc:
                out.append(self._unclosed(start, exc.why))
                continue
            except csv.Error as exc:
                # strict: text after a closing quote. Across lines that is a stray quote that
                # joined lines (`a,"Ann` ... `b,"Bob`); on one line, read it leniently as before
                too_large = "field limit" in str(exc)
                if self.line > start:
                    out.append(self._unclosed(start, f"still open after {self.line - start + 1:,}"
                                                     " lines (a field over the size limit)"
                                              if too_large else "closed only lines later, "
                                              "where no field ends"))
                    continue
                lenient = None if too_large else self._lenient("".join(self._lines_of_row))
                if lenient is None:
                    code = "field_too_large" if too_large else "malformed_csv"
                    msg = (f"a field is larger than {self.limits.max_field_bytes:,} bytes"
                           if too_large else f"malformed CSV: {exc}")
                    out.append(RawRecord(start, None, _clip("".join(self._lines_of_row)),
                                         [(code, f"line {start}: {msg}")]))
                    continue
                row = lenient
            lines = self.line - start + 1
            if self._pending is not None:
                reason, self._pending = self._pending, None
                out.append(RawRecord(start, None, _clip("".join(self._lines_of_row)),
                                     [reason], lines))
                continue
            if not any(cell.strip() for cell in row):
                self.skipped += lines  # a blank line
                continue
            if header is None:
                out.append(RawRecord(start, {"_row": row}, lines=lines))
                continue
            if len(row) != width and not (len(row) > width
                                          and not any(c.strip() for c in row[width:])):
                if lines > 1:  # a stray quote joined lines into one malformed row
                    out.append(self._unclosed(start, "not closed where a well-formed row "
                                                     f"would end ({len(row)} fields over "
                                                     f"{lines} lines)"))
                    continue
                cells = {**dict(zip(header, row, strict=False)), "_cells": row[len(header):]}
                out.append(RawRecord(
                    start, None, quarantine_text(cells, _clip("".join(self._lines_of_row))),
                    [("ragged_row", f"line {start}: row has {len(row)} fields, the header has "
                                    f"{width} (a stray or missing delimiter?)")]))
                continue
            out.append(RawRecord(start, dict(zip(header, row, strict=False)),
                                 "".join(self._lines_of_row), lines=lines))
        return out


def _json_record(line: int, text: str, value: Any) -> RawRecord:
    if isinstance(value, dict):
        return RawRecord(line, value, text)
    return RawRecord(line, None, _clip(text),
                     [("not_an_object", f"line {line}: expected a JSON object, got "
                                        f"{type(value).__name__}")])


class JsonLinesReader(Reader):
    """One JSON object per line; a line that is not JSON is a record with its reason."""

    def __init__(self, fh: BinaryIO, *, offset: int, line: int, limits: Limits) -> None:
        self.fh = fh
        self.offset, self.line = offset, line
        self.limits = limits
        fh.seek(offset)

    def read(self, n: int) -> list[RawRecord]:
        out: list[RawRecord] = []
        readline, cap = self.fh.readline, self.limits.max_record_bytes
        while len(out) < n:
            raw = readline(cap + 1)
            if not raw:
                self.eof = True
                break
            self.offset += len(raw)
            self.line += 1
            line = self.line
            if len(raw) > cap and not raw.endswith(b"\n"):
                self.offset += _drain_line(self.fh)
                out.append(RawRecord(line, None,
                                     _clip(raw[:MAX_RAW_CHARS].decode("utf-8", "replace")),
                                     [("row_too_large",
                                       f"line {line}: row is larger than {cap:,} bytes")]))
                continue
            if not raw.strip():
                self.skipped += 1
                continue
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                out.append(RawRecord(line, None, _clip(raw.decode("utf-8", "replace")),
                                     [("invalid_encoding",
                                       f"line {line}: byte 0x{raw[exc.start]:02X} at column "
                                       f"{exc.start + 1} is not valid UTF-8")]))
                continue
            try:
                value = orjson.loads(text)
            except orjson.JSONDecodeError as exc:
                out.append(RawRecord(line, None, _clip(text.rstrip("\r\n")),
                                     [("invalid_json", f"line {line}: invalid JSON: {exc}")]))
                continue
            out.append(_json_record(line, text.rstrip("\r\n"), value))
        return out


_WS = re.compile(r"[ \t\r\n]*")
_STRUCT = re.compile(r'["\\\[\]{}]')


class JsonArrayReader(Reader):
    """Elements of one top-level JSON array, parsed incrementally from a bounded buffer.

    ``offset`` is just past the last element read (or just past ``[``); a resume there expects
    ``,`` or ``]`` next. A syntax error between elements cannot be skipped reliably, so it is a
    FileFailure (after the rows before it were imported and reported).
    """

    CHUNK = 1 << 16

    def __init__(self, fh: BinaryIO, *, offset: int, line: int, data_offset: int,
                 limits: Limits) -> None:
        self.fh = fh
        self.offset, self.line = offset, line
        self.limits = limits
        self._after_element = offset > data_offset
        self._decoder = codecs.getincrementaldecoder("utf-8")()
        self._json = json.JSONDecoder()
        self._buf = ""
        self._pos = 0
        self._file_eof = False
        fh.seek(offset)

    # buffer --------------------------------------------------------------------------------
    def _fill(self, size: int | None = None) -> bool:
        """Read more text; False at the end of the file."""
        if self._file_eof:
            return False
        raw = self.fh.read(size or self.CHUNK)
        try:
            text = self._decoder.decode(raw, final=not raw)
        except UnicodeDecodeError as exc:
            raise FileFailure("invalid_encoding",
                              f"the JSON array is not valid UTF-8 near line {self.line + 1}: "
                              f"{exc.reason}") from None
        if not raw:
            self._file_eof = True
        self._buf = self._buf[self._pos:] + text
        self._pos = 0
        return bool(raw) or bool(text)

    def _consume(self, end: int) -> str:
        piece = self._buf[self._pos:end]
        self.offset += len(piece) if piece.isascii() else len(piece.encode("utf-8"))
        self.line += piece.count("\n")
        self._pos = end
        return piece

    def _peek(self) -> str | None:
        while True:
            ws = _WS.match(self._buf, self._pos)
            assert ws is not None  # a starred pattern matches anywhere
            end = ws.end()
            self._consume(end)
            if self._pos < len(self._buf):
                return self._buf[self._pos]
            if not self._fill():
                return None

    def _fail(self, what: str) -> FileFailure:
        return FileFailure("invalid_json", f"invalid JSON array at line {self.line + 1}: {what}; "
                                           "rows after this point cannot be read")

    # elements ------------------------------------------------------------------------------
    def _element(self) -> tuple[Any, str] | None:
        """The next value and its text; None when it is larger than the record limit."""
        cap = self.limits.max_record_bytes
        grow = self.CHUNK
        while True:
            try:
                value, end = self._json.raw_decode(self._buf, self._pos)
                if end < len(self._buf) or self._file_eof:
                    return value, self._consume(end)
            except json.JSONDecodeError as exc:
                if self._file_eof:
                    raise self._fail(exc.msg) from None
            if len(self._buf) - self._pos > cap:
                return None
            grow = min(grow * 2, cap)
            self._fill(grow)

    def _skip_value(self) -> str:
        """Skip one oversized value without holding it; returns its first characters."""
        head = self._buf[self._pos:self._pos + MAX_RAW_CHARS]
        depth, in_string, escaped = 0, False, False
        while True:
            buf, i = self._buf, self._pos
            while i < len(buf):
                if escaped:
                    escaped, i = False, i + 1
                    continue
                m = _STRUCT.search(buf, i)
                if m is None:
                    i = len(buf)
                    break
                c, i = m.group(), m.end()
                if in_string:
                    if c == "\\":
                        escaped = True
                    elif c == '"':
                        in_string = False
                        if depth == 0:
                            self._consume(i)
                            return head
                elif c == '"':
                    in_string = True
                elif c in "[{":
                    depth += 1
                elif c in "]}":
                    depth -= 1
                    if depth == 0:
                        self._consume(i)
                        return head
            self._consume(min(i, len(buf)))
            if not self._fill(1 << 20):
                raise self._fail("the file ends inside an oversized value")

    def read(self, n: int) -> list[RawRecord]:
        out: list[RawRecord] = []
        while len(out) < n and not self.eof:
            c = self._peek()
            if c is None:
                raise self._fail("the file ends before the closing ']'")
            if c == "]":
                self._consume(self._pos + 1)
                if self._peek() is not None:
                    raise self._fail("unexpected content after the closing ']'")
                self.eof = True
                break
            if self._after_element:
                if c != ",":
                    raise self._fail(f"expected ',' or ']' after an element, found {c!r}")
                self._consume(self._pos + 1)
                self._after_element = False
                continue
            line = self.line + 1
            got = self._element()
            if got is None:
                head = self._skip_value()
                cap = self.limits.max_record_bytes
                out.append(RawRecord(line, None, _clip(head), [
                    ("row_too_large", f"line {line}: element is larger than {cap:,} bytes")]))
            else:
                value, text = got
                out.append(_json_record(line, text, value))
            self._after_element = True
        return out

