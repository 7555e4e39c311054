"""One reader per file format (JSONL, CSV, Parquet, saved listing pages), streaming batches with line
numbers so that errors can name the place and memory stays bounded.
"""

import csv
import json
import re
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.json as pj
import pyarrow.parquet as pq

from papersim.data.records import (
    GROUPS,
    META_LISTS,
    META_TEXT,
    TEXT,
    ParseFailure,
    RawBatch,
    _check_columns,
    _empty_file_error,
    _list_column,
    _Rows,
    _text_column,
)
from papersim.errors import PapersimError

PAGE_CHROME = frozenset(
    {"new", "Get trending papers in your email inbox!", "Subscribe", "byAK and the research community"}
)


PAGE_DATE = re.compile(r"^[A-Z][a-z]{2} \d{1,2}(, \d{4})?$")  # e.g. "Mar 14", or "Mar 14, 2024" in past years
# A whitespace run that is not one plain space: a space followed by more whitespace, or any other
# whitespace/control character. After NFKC the only non-ASCII spaces left are U+1680 and the line
# and paragraph separators (RE2's \s is ASCII only, hence the Unicode classes).


READ_BLOCK = 16 << 20  # bytes per read() of a JSONL file; batches are cut at line ends


IS_WHITESPACE = np.zeros(256, dtype=bool)  # byte -> is it ASCII whitespace (what JSON allows)
IS_WHITESPACE[[9, 10, 11, 12, 13, 32]] = True


def _read_jsonl(path: Path, columns: dict[str, str], batch_rows: int) -> Iterator[RawBatch]:
    # Fast path: numpy finds the line ends, Arrow's multi-threaded JSON parser reads a batch of
    # lines at once. A batch it rejects (a malformed line, invalid UTF-8, a number where a string
    # was expected) is parsed again line by line, which finds each bad line and keeps the good ones.
    # Metadata may come in other types than assumed (authors as one string): a second Arrow read infers them.
    parsers = _jsonl_parse_options(columns)
    n_records = 0
    first_line = 1
    with path.open("rb") as f:
        for data, n_lines in _line_batches(f, batch_rows):
            lines, longest = _record_lines(data, first_line)
            first_line += n_lines
            if not lines:
                continue
            if n_records == 0:
                _check_jsonl_columns(path, columns, data)
            n_records += len(lines)
            yield _jsonl_block(path, lines, data, longest, parsers, columns)
    if n_records == 0:
        raise _empty_file_error(path)


def _jsonl_parse_options(columns: dict[str, str]) -> list[pj.ParseOptions]:
    """How to read a batch with Arrow, in the order to try: every field typed as usually given
    (metadata text as strings, authors and categories as lists), then, where the source maps
    metadata, the core fields typed and the metadata types inferred (authors as one string, a
    year as a number). A column feeding two fields is listed once, with its first field's type."""
    core: dict[str, pa.DataType] = {}
    for name, kind in (("id", pa.string()), ("title", TEXT), ("abstract", TEXT), ("groups", GROUPS)):
        core.setdefault(columns[name], kind)
    typed = dict(core)
    for name in META_TEXT + META_LISTS:
        if name in columns:
            typed.setdefault(columns[name], pa.string() if name in META_TEXT else GROUPS)
    options = [pj.ParseOptions(explicit_schema=pa.schema(list(typed.items())), unexpected_field_behavior="ignore")]
    if len(typed) > len(core):
        options.append(pj.ParseOptions(explicit_schema=pa.schema(list(core.items())),
                                       unexpected_field_behavior="infer"))
    return options


def _line_batches(f, batch_rows: int) -> Iterator[tuple[bytes, int]]:
    """(bytes of up to `batch_rows` whole lines, number of lines) from a binary file."""
    pending: list[bytes] = []
    pending_lines = 0
    carry = b""
    while block := f.read(READ_BLOCK):
        buf = carry + block if carry else block
        ends = np.flatnonzero(np.frombuffer(buf, dtype=np.uint8) == 10)  # (lines in buf,)
        start = done = 0
        while done < len(ends):
            take = min(batch_rows - pending_lines, len(ends) - done)
            end = int(ends[done + take - 1]) + 1
            pending.append(buf[start:end])
            pending_lines += take
            start, done = end, done + take
            if pending_lines == batch_rows:
                yield b"".join(pending), pending_lines
                pending, pending_lines = [], 0
        carry = buf[start:]
    if carry:  # a last line without its newline
        pending.append(carry + b"\n")
        pending_lines += 1
    if pending:
        yield b"".join(pending), pending_lines


def _record_lines(data: bytes, first_line: int) -> tuple[list[int], int]:
    """Line numbers of the non-blank lines in `data` (whole lines), and the longest line's length."""
    raw = np.frombuffer(data, dtype=np.uint8)
    ends = np.flatnonzero(raw == 10)  # (n_lines,)
    starts = np.concatenate([[0], ends[:-1] + 1])
    numbers = np.arange(first_line, first_line + len(ends))
    # Only a line that starts with whitespace (or is empty) can be blank: check just those.
    maybe_blank = np.flatnonzero(IS_WHITESPACE[raw[np.minimum(starts, len(raw) - 1)]])
    blank = [i for i in maybe_blank.tolist() if not data[starts[i]:ends[i]].strip()]
    if blank:
        numbers = np.delete(numbers, blank)
    longest = int((ends - starts).max()) + 1 if len(ends) else 0
    return numbers.tolist(), longest


def _check_jsonl_columns(path: Path, columns: dict[str, str], data: bytes) -> None:
    keys: set[str] = set()
    for raw in data.split(b"\n", 1000)[:1000]:
        try:
            obj = json.loads(raw)
        except ValueError:
            continue
        if isinstance(obj, dict):
            keys.update(obj)
    if keys:  # no readable line at all: each one is reported as a parse failure instead
        _check_columns(path, columns, sorted(keys))


def _jsonl_block(path: Path, lines: list[int], data: bytes, longest: int,
                 parsers: list[pj.ParseOptions], columns: dict[str, str]) -> RawBatch:
    for i, parse in enumerate(parsers):
        batch = _arrow_jsonl_block(path, lines, data, longest, parse, columns)
        if batch is not None:
            if i:  # the file's metadata has other types than assumed: read the next batches that way first
                parsers.insert(0, parsers.pop(i))
            return batch
    rows = _Rows(path, "line")
    records = [line for line in data.split(b"\n") if line.strip()]
    for lineno, raw in zip(lines, records):
        # Invalid bytes become U+FFFD, which validation rejects with the row's line number.
        text = raw.decode("utf-8", errors="replace")
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as exc:
            rows.failures.append(ParseFailure(lineno, f"not valid JSON: {exc.msg} at column {exc.colno}", text[:200]))
            continue
        if not isinstance(obj, dict):
            rows.failures.append(ParseFailure(lineno, f"expected a JSON object, got {type(obj).__name__}", text[:200]))
            continue
        rows.add(lineno, {name: obj.get(column) for name, column in columns.items()})
    return rows.batch()


def _arrow_jsonl_block(path: Path, lines: list[int], data: bytes, longest: int, parse: pj.ParseOptions,
                       columns: dict[str, str]) -> RawBatch | None:
    """The batch as Arrow's JSON parser reads it with `parse`; None where it cannot, or reads a column
    as a type the slow path would read differently (e.g. an inferred timestamp)."""
    try:
        # A block must hold the longest line; 4 MiB blocks let both cores parse in parallel.
        table = pj.read_json(pa.py_buffer(data), parse_options=parse,
                             read_options=pj.ReadOptions(block_size=max(4 << 20, longest + 1)))
        table.validate(full=True)  # Arrow's JSON parser lets invalid UTF-8 through; this catches it
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None
    if table.num_rows != len(lines):
        return None

    def col(name: str) -> pa.Array:
        if columns[name] not in table.column_names:  # an inferred column no row of this batch has
            return pa.nulls(table.num_rows, pa.string())
        return table.column(columns[name]).combine_chunks()

    meta = {name: _text_column(col(name)) for name in META_TEXT}
    meta |= {name: _list_column(col(name)) for name in META_LISTS}
    if any(values is None for values in meta.values()):
        return None
    return RawBatch(str(path), "line", lines, col("id"), col("title"), col("abstract"), col("groups"), **meta)


def _read_csv(path: Path, columns: dict[str, str], batch_rows: int) -> Iterator[RawBatch]:
    # Abstracts can exceed the csv module's 128 KiB default field limit; the length rule judges them.
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))
    rows = _Rows(path, "line")
    with path.open("r", encoding="utf-8", errors="replace", newline="") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames is None:
            raise _empty_file_error(path)
        _check_columns(path, columns, list(reader.fieldnames))
        columns = {name: column for name, column in columns.items() if column in reader.fieldnames}
        start = reader.line_num + 1
        n_records = 0
        while True:
            try:
                row = next(reader)
            except StopIteration:
                break
            except csv.Error as exc:
                rows.failures.append(ParseFailure(start, f"not a valid CSV record: {exc}", ""))
                start = reader.line_num + 1
                continue
            n_records += 1
            if None in row:  # more fields than the header has
                fields = len(row) - 1 + len(row[None])
                rows.failures.append(ParseFailure(start, f"{fields} fields, header has {len(reader.fieldnames)}", ""))
            else:
                rows.add(start, {name: row.get(column) for name, column in columns.items()})
            start = reader.line_num + 1
            if len(rows) >= batch_rows:
                yield rows.batch()
                rows = _Rows(path, "line")
    if n_records == 0:
        raise _empty_file_error(path)
    if len(rows):
        yield rows.batch()


def _read_parquet(path: Path, columns: dict[str, str], batch_rows: int) -> Iterator[RawBatch]:
    try:
        pf = pq.ParquetFile(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise PapersimError(f"{path}: not a readable Parquet file: {exc}") from None
    found = pf.schema_arrow.names
    _check_columns(path, columns, found)
    if pf.metadata.num_rows == 0:
        raise _empty_file_error(path)
    wanted = sorted({c for c in columns.values() if c in found})
    row = 0
    for rb in pf.iter_batches(batch_size=batch_rows, columns=wanted):
        n = rb.num_rows
        lines = list(range(row + 1, row + n + 1))
        batch = _arrow_parquet_batch(path, lines, rb, columns)
        if batch is None:  # e.g. groups as "a;b" strings: row by row
            data = rb.to_pydict()
            rows = _Rows(path, "row")
            for i in range(n):
                rows.add(row + i + 1, {name: data[column][i] if column in data else None
                                       for name, column in columns.items()})
            batch = rows.batch()
        row += n
        yield batch


def _arrow_parquet_batch(path: Path, lines: list[int], rb: pa.RecordBatch, columns: dict[str, str]) -> RawBatch | None:
    """The usual case, column by column: string columns, groups a list of strings (or absent), dates as
    text, dates or timestamps. None where a column needs the row-by-row path."""
    n = rb.num_rows

    def col(name: str, kind: pa.DataType) -> pa.Array:
        if columns[name] not in rb.schema.names:
            return pa.nulls(n, kind)
        return rb.column(columns[name])

    try:
        core = [col("id", pa.string()).cast(pa.string()), col("title", TEXT).cast(TEXT),
                col("abstract", TEXT).cast(TEXT), col("groups", GROUPS).cast(GROUPS)]
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None
    meta = {name: _text_column(col(name, pa.string()), temporal=True) for name in META_TEXT}
    meta |= {name: _list_column(col(name, pa.string())) for name in META_LISTS}
    if any(values is None for values in meta.values()):
        return None
    return RawBatch(str(path), "row", lines, *core, **meta)


def _paragraphs(path: Path) -> list[tuple[int, str]]:
    """(first line number, text) of each blank-line separated paragraph."""
    paragraphs: list[tuple[int, str]] = []
    current: list[str] = []
    start = 0
    with path.open("rb") as f:
        for lineno, raw in enumerate(f, start=1):
            line = raw.decode("utf-8", errors="replace").strip()
            if line:
                if not current:
                    start = lineno
                current.append(line)
            elif current:
                paragraphs.append((start, " ".join(current)))
                current = []
    if current:
        paragraphs.append((start, " ".join(current)))
    return paragraphs


def _read_page(path: Path, batch_rows: int) -> Iterator[RawBatch]:
    paragraphs = _paragraphs(path)
    if not paragraphs:
        raise _empty_file_error(path)
    # Strip the page header: the known chrome lines and the date, only at the top of the page.
    skip = 0
    date = None  # the page's date ("Mar 20", no year as the site shows it): the date of each of its papers
    while skip < len(paragraphs) and skip < 6 and (
        paragraphs[skip][1] in PAGE_CHROME or PAGE_DATE.match(paragraphs[skip][1])
    ):
        if PAGE_DATE.match(paragraphs[skip][1]):
            date = paragraphs[skip][1]
        skip += 1
    body = paragraphs[skip:]
    if not body:
        raise PapersimError(f"{path}: listing page has only its header, no papers")
    if len(body) % 2:
        raise PapersimError(
            f"{path}: listing page has {len(body)} paragraphs after the header, an odd number: papers are "
            f"title/abstract pairs, so a title has no abstract (rule: paragraphs alternate title, abstract). "
            f"{_odd_page_hint(body)}"
        )
    rows = _Rows(path, "line")
    for (line, title), (_, abstract) in zip(body[0::2], body[1::2]):
        rows.add(line, {"title": title, "abstract": abstract, "groups": [f"page:{path.stem}"], "date": date})
        if len(rows) >= batch_rows:
            yield rows.batch()
            rows = _Rows(path, "line")
    if len(rows):
        yield rows.batch()


def _odd_page_hint(body: list[tuple[int, str]]) -> str:
    # A title is one short line without a final period; an abstract is long. The first abstract
    # position holding a title-like paragraph is where the pairing broke.
    for (line, text) in body[1::2]:
        if len(text) < 250 and not text.rstrip().endswith("."):
            return f"The first abstract position holding a title-like paragraph is line {line}: {text[:80]!r}."
    return f"The last paragraph starts at line {body[-1][0]}."
