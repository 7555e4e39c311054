"""Read paper corpora in several formats, normalise them and stream them out in batches.

Readers yield `RawBatch`es (one file per batch, each row with its line or row number) so that
every error can name the file and the place, and memory stays bounded for large corpora.
"""

import ast
import csv
import dataclasses
import hashlib
import json
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pj
import pyarrow.parquet as pq

from papersim.config import build_config
from papersim.errors import PapersimError

FORMATS = ("auto", "jsonl", "csv", "parquet", "beir", "hf_pages")
FIELDS = ("id", "title", "abstract", "groups")  # what a source's `columns` mapping may rename

# Column names each format uses unless the source's `columns` maps them elsewhere.
DEFAULT_COLUMNS = {
    "jsonl": {"id": "id", "title": "title", "abstract": "abstract", "groups": "groups"},
    "csv": {"id": "id", "title": "title", "abstract": "abstract", "groups": "groups"},
    "parquet": {"id": "id", "title": "title", "abstract": "abstract", "groups": "groups"},
    "beir": {"id": "_id", "title": "title", "abstract": "text", "groups": "groups"},
    "hf_pages": {},
}

# Lines a saved listing page starts with before the first paper (the site's header).
PAGE_CHROME = frozenset(
    {"new", "Get trending papers in your email inbox!", "Subscribe", "byAK and the research community"}
)
PAGE_DATE = re.compile(r"^[A-Z][a-z]{2} \d{1,2}(, \d{4})?$")  # e.g. "Mar 14"
# A whitespace run that is not one plain space: a space followed by more whitespace, or any other
# whitespace/control character. After NFKC the only non-ASCII spaces left are U+1680 and the line
# and paragraph separators (RE2's \s is ASCII only, hence the Unicode classes).
MESSY_SPACE = r"(?: [\s\p{Z}\p{Cc}]|[\p{Cc}\p{Zl}\p{Zp}\x{1680}])[\s\p{Z}\p{Cc}]*"


@dataclass(frozen=True)
class SourceSpec:
    """One input of the ingest stage, as written in params.yaml."""

    path: str
    format: str = "auto"  # auto: by extension, or by folder contents (corpus.jsonl -> beir, *.txt -> hf_pages)
    name: str = ""  # label in the `source` column and the report; default: the file or folder name
    columns: dict[str, str] = field(default_factory=dict)  # papersim field -> column in this source
    id_prefix: str = ""  # keeps numeric ids of different sources apart, e.g. "cranfield:"
    groups: list[str] = field(default_factory=list)  # groups every paper of this source belongs to

    def __post_init__(self) -> None:
        if self.format not in FORMATS:
            raise ValueError(f"unknown format {self.format!r} for {self.path}; choose one of {', '.join(FORMATS)}")
        bad = sorted(set(self.columns) - set(FIELDS))
        if bad:
            raise ValueError(f"columns: unknown field(s) {', '.join(bad)}; mappable fields: {', '.join(FIELDS)}")
        if not self.name:
            object.__setattr__(self, "name", Path(self.path).stem or Path(self.path).name)


@dataclass(frozen=True)
class IngestConfig:
    """params.yaml `ingest` section."""

    sources: list[SourceSpec]
    min_abstract_chars: int = 20  # shorter "abstracts" are stubs or parse debris, useless for training
    max_abstract_chars: int = 20_000  # ~10x a long abstract: anything longer is a full text or a parse error
    require_title: bool = True  # False for abstracts-only corpora (the pair miner then uses abstract crops)
    title_only: str = "reject"  # a record with a title and no abstract: reject (rule abstract_not_empty) | keep
    # (its title becomes its text, as an untitled abstract; needs require_title: false)
    on_invalid: str = "fail"  # fail: stop with a report; quarantine: set bad rows aside in rejected.parquet
    max_rejected_fraction: float = 0.01  # quarantine still fails when more than this share of rows is bad
    batch_rows: int = 20_000  # lines per batch: ~25 MB of text at arXiv lengths; 50k was 4% faster, +40% memory

    def __post_init__(self) -> None:
        if not isinstance(self.sources, (list, tuple)) or not self.sources:
            raise ValueError("sources: give at least one {path, format} entry")
        specs = [
            s if isinstance(s, SourceSpec) else build_config(SourceSpec, s, f"sources[{i}]")
            for i, s in enumerate(self.sources)
        ]
        names = [s.name for s in specs]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"sources: names must be unique, {', '.join(dupes)} repeated; set `name` per source")
        object.__setattr__(self, "sources", specs)
        if self.on_invalid not in ("fail", "quarantine"):
            raise ValueError(f"on_invalid must be 'fail' or 'quarantine', not {self.on_invalid!r}")
        if not 0 <= self.min_abstract_chars <= self.max_abstract_chars:
            raise ValueError("need 0 <= min_abstract_chars <= max_abstract_chars")
        if self.title_only not in ("reject", "keep"):
            raise ValueError(f"title_only must be 'reject' or 'keep', not {self.title_only!r}")
        if self.title_only == "keep" and self.require_title:
            raise ValueError("title_only: keep makes a title-only record's title its text (an untitled record): "
                             "set require_title: false")
        if not 0.0 <= self.max_rejected_fraction <= 1.0:
            raise ValueError("max_rejected_fraction must be within [0, 1]")
        if self.batch_rows < 1:
            raise ValueError("batch_rows must be positive")


@dataclass
class ParseFailure:
    """A record that could not be read at all (malformed JSON, a broken CSV row)."""

    line: int
    message: str
    raw: str


TEXT = pa.large_string()  # abstracts of a batch can exceed 2 GiB in total only with large offsets
GROUPS = pa.list_(pa.string())


@dataclass
class RawBatch:
    """Up to `batch_rows` records of one file, before normalisation, as Arrow columns."""

    file: str
    unit: str  # "line" for text formats, "row" for Parquet
    lines: list[int]
    ids: pa.Array  # string, null where the source has no id
    titles: pa.Array
    abstracts: pa.Array
    groups: pa.Array  # list<string>
    failures: list[ParseFailure] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.lines)


class _Rows:
    """Collects records one at a time (the slow, exact path) and turns them into a RawBatch."""

    def __init__(self, file: Path, unit: str) -> None:
        self.file, self.unit = str(file), unit
        self.lines: list[int] = []
        self.ids: list[str | None] = []
        self.titles: list[str | None] = []
        self.abstracts: list[str | None] = []
        self.groups: list[list[str]] = []
        self.failures: list[ParseFailure] = []

    def __len__(self) -> int:
        return len(self.lines) + len(self.failures)

    def add(self, line: int, id_: Any, title: Any, abstract: Any, groups: Any) -> None:
        self.lines.append(line)
        self.ids.append(_as_text(id_))
        self.titles.append(_as_text(title))
        self.abstracts.append(_as_text(abstract))
        self.groups.append(_as_groups(groups))

    def batch(self) -> RawBatch:
        return RawBatch(self.file, self.unit, self.lines, pa.array(self.ids, pa.string()),
                        pa.array(self.titles, TEXT), pa.array(self.abstracts, TEXT),
                        pa.array(self.groups, GROUPS), self.failures)


def _as_text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, float) and value != value:  # NaN from a CSV or Parquet null
        return None
    return value if isinstance(value, str) else str(value)


def _as_groups(value: Any) -> list[str]:
    """Groups arrive as a list, a JSON/Python list literal (Kaggle CSVs), or a ';'-separated string."""
    if value is None:
        return []
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            try:
                value = json.loads(text)
            except ValueError:
                try:
                    value = ast.literal_eval(text)
                except (ValueError, SyntaxError):
                    value = [text]
        else:
            value = text.split(";")
    if not isinstance(value, (list, tuple)):
        value = [value]
    return [str(g) for g in value if g is not None]


def resolve_format(spec: SourceSpec) -> str:
    """The concrete format of a source; `auto` looks at the extension or the folder contents."""
    path = Path(spec.path)
    if not path.exists():
        raise PapersimError(f"{spec.path}: no such file or folder (source '{spec.name}' in params.yaml ingest.sources)")
    if spec.format != "auto":
        return spec.format
    if path.is_dir():
        if (path / "corpus.jsonl").is_file():
            return "beir"
        if any(path.glob("*.txt")):
            return "hf_pages"
        raise PapersimError(f"{spec.path}: format 'auto' found neither corpus.jsonl (beir) nor *.txt (hf_pages) here")
    by_suffix = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl", ".csv": "csv",
                 ".parquet": "parquet", ".pq": "parquet", ".txt": "hf_pages"}
    fmt = by_suffix.get(path.suffix.lower())
    if fmt is None:
        raise PapersimError(
            f"{spec.path}: format 'auto' does not know the extension {path.suffix!r}; set format to one of "
            f"{', '.join(FORMATS[1:])}"
        )
    return fmt


def read_source(spec: SourceSpec, batch_rows: int) -> Iterator[RawBatch]:
    """Stream a source as batches of raw records; structural problems raise PapersimError."""
    fmt = resolve_format(spec)
    columns = {**DEFAULT_COLUMNS[fmt], **spec.columns}
    path = Path(spec.path)
    if fmt == "beir":
        path = path / "corpus.jsonl" if path.is_dir() else path
        if not path.is_file():
            raise PapersimError(f"{spec.path}: a beir source needs corpus.jsonl in this folder")
    if fmt in ("jsonl", "beir"):
        yield from _read_jsonl(path, columns, batch_rows)
    elif fmt == "csv":
        yield from _read_csv(path, columns, batch_rows)
    elif fmt == "parquet":
        yield from _read_parquet(path, columns, batch_rows)
    else:
        files = sorted(path.glob("*.txt")) if path.is_dir() else [path]
        if not files:
            raise PapersimError(f"{spec.path}: no *.txt listing pages in this folder")
        for page in files:
            yield from _read_page(page, batch_rows)


def _empty_file_error(path: Path) -> PapersimError:
    return PapersimError(f"{path}: file is empty (no records); remove it from ingest.sources or fix the export")


def _missing_column_error(path: Path, what: str, column: str, found: list[str]) -> PapersimError:
    shown = ", ".join(found[:20]) or "none"
    return PapersimError(
        f"{path}: no column {column!r} for the {what} (columns found: {shown}); "
        f"map it in params.yaml with `columns: {{{what}: <column name>}}` for this source"
    )


def _check_columns(path: Path, columns: dict[str, str], found: list[str]) -> None:
    if columns["abstract"] not in found:
        raise _missing_column_error(path, "abstract", columns["abstract"], found)


READ_BLOCK = 16 << 20  # bytes per read() of a JSONL file; batches are cut at line ends
IS_WHITESPACE = np.zeros(256, dtype=bool)  # byte -> is it ASCII whitespace (what JSON allows)
IS_WHITESPACE[[9, 10, 11, 12, 13, 32]] = True


def _read_jsonl(path: Path, columns: dict[str, str], batch_rows: int) -> Iterator[RawBatch]:
    # Fast path: numpy finds the line ends, Arrow's multi-threaded JSON parser reads a batch of
    # lines at once. A batch it rejects (a malformed line, invalid UTF-8, a number where a string
    # was expected) is parsed again line by line, which finds each bad line and keeps the good ones.
    schema = pa.schema([(columns["id"], pa.string()), (columns["title"], TEXT),
                        (columns["abstract"], TEXT), (columns["groups"], GROUPS)])
    parse = pj.ParseOptions(explicit_schema=schema, unexpected_field_behavior="ignore")
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
            yield _jsonl_block(path, lines, data, longest, parse, columns)
    if n_records == 0:
        raise _empty_file_error(path)


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
                 parse: pj.ParseOptions, columns: dict[str, str]) -> RawBatch:
    try:
        # A block must hold the longest line; 4 MiB blocks let both cores parse in parallel.
        table = pj.read_json(pa.py_buffer(data), parse_options=parse,
                             read_options=pj.ReadOptions(block_size=max(4 << 20, longest + 1)))
        table.validate(full=True)  # Arrow's JSON parser lets invalid UTF-8 through; this catches it
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        table = None
    if table is not None and table.num_rows == len(lines):
        col = lambda name: table.column(name).combine_chunks()  # noqa: E731
        return RawBatch(str(path), "line", lines, col(columns["id"]), col(columns["title"]),
                        col(columns["abstract"]), col(columns["groups"]))
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
        rows.add(lineno, obj.get(columns["id"]), obj.get(columns["title"]),
                 obj.get(columns["abstract"]), obj.get(columns["groups"]))
    return rows.batch()


def _read_csv(path: Path, columns: dict[str, str], batch_rows: int) -> Iterator[RawBatch]:
    # Abstracts can exceed the csv module's 128 KiB default field limit; the length rule judges them.
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))
    rows = _Rows(path, "line")
    with path.open("r", encoding="utf-8", errors="replace", newline="") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames is None:
            raise _empty_file_error(path)
        _check_columns(path, columns, list(reader.fieldnames))
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
                rows.add(start, row.get(columns["id"]), row.get(columns["title"]),
                         row.get(columns["abstract"]), row.get(columns["groups"]))
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
        try:  # the usual case: string columns, groups a list of strings (or absent)
            col = lambda field, kind: (  # noqa: E731
                rb.column(columns[field]).cast(kind) if columns[field] in wanted else pa.nulls(n, kind))
            batch = RawBatch(str(path), "row", list(range(row + 1, row + n + 1)), col("id", pa.string()),
                             col("title", TEXT), col("abstract", TEXT), col("groups", GROUPS))
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):  # e.g. groups as "a;b" strings: row by row
            data = rb.to_pydict()
            none = [None] * n
            rows = _Rows(path, "row")
            for i, id_, title, abstract, groups in zip(
                range(n), data.get(columns["id"], none), data.get(columns["title"], none),
                data[columns["abstract"]], data.get(columns["groups"], none),
            ):
                rows.add(row + i + 1, id_, title, abstract, groups)
            batch = rows.batch()
        row += n
        yield batch


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
    while skip < len(paragraphs) and skip < 6 and (
        paragraphs[skip][1] in PAGE_CHROME or PAGE_DATE.match(paragraphs[skip][1])
    ):
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
        rows.add(line, None, title, abstract, [f"page:{path.stem}"])
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


@dataclass
class NormalBatch:
    """A batch after normalisation: the columns of papers.parquet, plus each row's origin."""

    source: str
    file: str
    unit: str
    lines: list[int]
    paper_id: pa.Array  # string, null where the row has neither id, title nor abstract
    title: pa.Array
    abstract: pa.Array
    groups: pa.Array
    content_hash: pa.Array

    def __len__(self) -> int:
        return len(self.lines)


def normalise_text(values: pa.Array | list[str | None]) -> pa.Array:
    """NFKC, every run of whitespace or control characters -> one space, trimmed; null -> ''."""
    arr = pa.array(values, TEXT) if isinstance(values, list) else values.cast(TEXT)
    arr = pc.utf8_normalize(pc.fill_null(arr, ""), form="NFKC")
    # Rewrite only the rows that need it: the regex replacement is ~5x slower than the match.
    messy = pc.match_substring_regex(arr, pattern=MESSY_SPACE)
    if pc.any(messy).as_py():
        fixed = pc.replace_substring_regex(arr.filter(messy), pattern=MESSY_SPACE, replacement=" ")
        arr = pc.replace_with_mask(arr, messy, fixed)
    return pc.utf8_trim_whitespace(arr)


def normalise_groups(groups: pa.Array, extra: list[str]) -> pa.Array:
    """Each row's groups plus `extra`: trimmed, empty ones dropped, de-duplicated, sorted."""
    n = len(groups)
    rows = pc.list_parent_indices(groups)  # (n_values,) row of each group value
    values = pc.utf8_trim_whitespace(pc.list_flatten(groups).cast(pa.string()))
    pairs = pa.table({"row": rows.cast(pa.int64()), "group": values})
    if extra:
        pairs = pa.concat_tables([pairs, pa.table({
            "row": pa.array(np.repeat(np.arange(n, dtype=np.int64), len(extra))),
            "group": pa.array(extra * n, pa.string()),
        })])
    pairs = pairs.filter(pc.and_(pc.is_valid(pairs["group"]), pc.not_equal(pairs["group"], "")))
    pairs = pairs.group_by(["row", "group"], use_threads=False).aggregate([])  # distinct (row, group)
    pairs = pairs.sort_by([("row", "ascending"), ("group", "ascending")])
    lengths = np.bincount(pairs["row"].to_numpy(), minlength=n)  # (n,) groups per row
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
    return pa.ListArray.from_arrays(pa.array(offsets), pairs["group"].combine_chunks().cast(pa.string()))


def title_id(title: str, abstract: str) -> str:
    """Stable id for sources without one: a hash of the normalised title (of the abstract if untitled)."""
    key = (title or abstract).casefold()
    return "title-" + hashlib.sha1(key.encode("utf-8")).hexdigest()[:16]


def content_hashes(titles: pa.Array, abstracts: pa.Array) -> pa.Array:
    """SHA-1 (hardware-accelerated, 128 bits kept) of lower-cased title + abstract, per row.

    Equal hashes are the same paper. Titles are lower-cased because sources disagree on title
    case; abstracts are compared as normalised (lower-casing 1 KB per row costs more than it finds).
    """
    titles = pc.utf8_lower(titles).cast(pa.large_binary())
    abstracts = abstracts.cast(pa.large_binary())
    sha1 = hashlib.sha1
    digests = []
    # Hash straight from Arrow's buffers: no Python string, no joined copy per row.
    t_off, t_data = _offsets_and_data(titles)
    a_off, a_data = _offsets_and_data(abstracts)
    for t0, t1, a0, a1 in zip(t_off[:-1], t_off[1:], a_off[:-1], a_off[1:]):
        h = sha1(t_data[t0:t1])
        h.update(b"\x1f")
        h.update(a_data[a0:a1])
        digests.append(h.hexdigest()[:32])
    return pa.array(digests, pa.string())


def _offsets_and_data(arr: pa.Array) -> tuple[list[int], memoryview]:
    """Row offsets (n + 1) and the data buffer of a large_binary array."""
    offsets = np.frombuffer(arr.buffers()[1], dtype=np.int64)[arr.offset:arr.offset + len(arr) + 1]
    return offsets.tolist(), memoryview(arr.buffers()[2] or b"")


def normalise_batch(batch: RawBatch, spec: SourceSpec) -> NormalBatch:
    """Normalise one raw batch; ids fall back to a title hash, groups gain the source's groups."""
    titles = normalise_text(batch.titles)
    abstracts = normalise_text(batch.abstracts)
    ids = pc.utf8_trim_whitespace(batch.ids.cast(pa.string()))
    ids = pc.if_else(pc.equal(ids, ""), pa.scalar(None, pa.string()), ids)
    if spec.id_prefix:
        ids = pc.binary_join_element_wise(spec.id_prefix, ids, "")
    missing = pc.is_null(ids)
    if pc.any(missing).as_py():
        title_list, abstract_list = titles.to_pylist(), abstracts.to_pylist()
        id_list = ids.to_pylist()
        for i in pc.indices_nonzero(missing).to_pylist():
            if title_list[i] or abstract_list[i]:
                id_list[i] = spec.id_prefix + title_id(title_list[i], abstract_list[i])
        ids = pa.array(id_list, pa.string())
    groups = normalise_groups(batch.groups, spec.groups)
    hashes = content_hashes(titles, abstracts)
    return NormalBatch(spec.name, batch.file, batch.unit, batch.lines, ids, titles, abstracts, groups, hashes)


def titles_as_text(batch: NormalBatch) -> NormalBatch:
    """Title-only records (no abstract) keep their title as their text: abstract := title, title := ''."""
    only_title = pc.and_(pc.equal(batch.abstract, ""), pc.not_equal(batch.title, ""))
    if not pc.any(only_title).as_py():
        return batch
    return dataclasses.replace(batch, abstract=pc.if_else(only_title, batch.title, batch.abstract),
                               title=pc.if_else(only_title, pa.scalar("", batch.title.type), batch.title))
