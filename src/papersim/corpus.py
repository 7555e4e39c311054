"""Read paper corpora in several formats, normalise them and stream them out in batches.

Readers yield `RawBatch`es (one file per batch, each row with its line or row number) so that
every error can name the file and the place, and memory stays bounded for large corpora.
"""

import ast
import csv
import hashlib
import json
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
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
WHITESPACE = r"[\s\p{Z}\p{Cc}]+"  # RE2: ASCII \s misses NBSP, U+2028 and other Unicode spaces


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
    on_invalid: str = "fail"  # fail: stop with a report; quarantine: set bad rows aside in rejected.parquet
    max_rejected_fraction: float = 0.01  # quarantine still fails when more than this share of rows is bad
    batch_rows: int = 20_000  # rows per read/validate batch: bounds memory, big enough to amortise overhead

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


@dataclass
class RawBatch:
    """Up to `batch_rows` records of one file, before normalisation."""

    file: str
    unit: str  # "line" for text formats, "row" for Parquet
    lines: list[int] = field(default_factory=list)
    ids: list[str | None] = field(default_factory=list)
    titles: list[str | None] = field(default_factory=list)
    abstracts: list[str | None] = field(default_factory=list)
    groups: list[list[str]] = field(default_factory=list)
    failures: list[ParseFailure] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.lines)

    def add(self, line: int, id_: Any, title: Any, abstract: Any, groups: Any) -> None:
        self.lines.append(line)
        self.ids.append(_as_text(id_))
        self.titles.append(_as_text(title))
        self.abstracts.append(_as_text(abstract))
        self.groups.append(_as_groups(groups))


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
    return [str(g).strip() for g in value if g is not None and str(g).strip()]


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


def _check_columns(path: Path, columns: dict[str, str], found: list[str], title_needed: bool = False) -> None:
    if columns["abstract"] not in found:
        raise _missing_column_error(path, "abstract", columns["abstract"], found)
    if title_needed and columns["title"] not in found:
        raise _missing_column_error(path, "title", columns["title"], found)


def _read_jsonl(path: Path, columns: dict[str, str], batch_rows: int) -> Iterator[RawBatch]:
    keys_seen: set[str] = set()
    checked = False
    n_records = 0
    batch = RawBatch(str(path), "line")
    with path.open("rb") as f:
        for lineno, raw in enumerate(f, start=1):
            if not raw.strip():
                continue
            n_records += 1
            # Invalid bytes become U+FFFD, which validation rejects with the row's line number.
            text = raw.decode("utf-8", errors="replace")
            try:
                obj = json.loads(text)
            except json.JSONDecodeError as exc:
                batch.failures.append(ParseFailure(lineno, f"not valid JSON: {exc.msg} at column {exc.colno}", text[:200]))
                continue
            if not isinstance(obj, dict):
                batch.failures.append(ParseFailure(lineno, f"expected a JSON object, got {type(obj).__name__}", text[:200]))
                continue
            if not checked:
                keys_seen.update(obj)
            batch.add(lineno, obj.get(columns["id"]), obj.get(columns["title"]),
                      obj.get(columns["abstract"]), obj.get(columns["groups"]))
            if len(batch) + len(batch.failures) >= batch_rows:
                if not checked:
                    _check_columns(path, columns, sorted(keys_seen))
                    checked = True
                yield batch
                batch = RawBatch(str(path), "line")
    if n_records == 0:
        raise _empty_file_error(path)
    if not checked and len(batch):
        _check_columns(path, columns, sorted(keys_seen))
    if len(batch) or batch.failures:
        yield batch


def _read_csv(path: Path, columns: dict[str, str], batch_rows: int) -> Iterator[RawBatch]:
    # Abstracts can exceed the csv module's 128 KiB default field limit; the length rule judges them.
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))
    batch = RawBatch(str(path), "line")
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
                batch.failures.append(ParseFailure(start, f"not a valid CSV record: {exc}", ""))
                start = reader.line_num + 1
                continue
            n_records += 1
            if None in row:  # more fields than the header has
                batch.failures.append(ParseFailure(start, f"{len(row) - 1 + len(row[None])} fields, header has {len(reader.fieldnames)}", ""))
            else:
                batch.add(start, row.get(columns["id"]), row.get(columns["title"]),
                          row.get(columns["abstract"]), row.get(columns["groups"]))
            start = reader.line_num + 1
            if len(batch) + len(batch.failures) >= batch_rows:
                yield batch
                batch = RawBatch(str(path), "line")
    if n_records == 0:
        raise _empty_file_error(path)
    if len(batch) or batch.failures:
        yield batch


def _read_parquet(path: Path, columns: dict[str, str], batch_rows: int) -> Iterator[RawBatch]:
    try:
        pf = pq.ParquetFile(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise PapersimError(f"{path}: not a readable Parquet file: {exc}") from None
    found = pf.schema_arrow.names
    _check_columns(path, columns, found)
    if pf.metadata.num_rows == 0:
        raise _empty_file_error(path)
    wanted = [c for c in (columns["id"], columns["title"], columns["abstract"], columns["groups"]) if c in found]
    row = 0
    for rb in pf.iter_batches(batch_size=batch_rows, columns=sorted(set(wanted))):
        data = rb.to_pydict()
        n = rb.num_rows
        none = [None] * n
        batch = RawBatch(str(path), "row")
        for i, id_, title, abstract, groups in zip(
            range(n), data.get(columns["id"], none), data.get(columns["title"], none),
            data[columns["abstract"]], data.get(columns["groups"], none),
        ):
            batch.add(row + i + 1, id_, title, abstract, groups)
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
    batch = RawBatch(str(path), "line")
    for (line, title), (_, abstract) in zip(body[0::2], body[1::2]):
        batch.add(line, None, title, abstract, [f"page:{path.stem}"])
        if len(batch) >= batch_rows:
            yield batch
            batch = RawBatch(str(path), "line")
    if len(batch):
        yield batch


def _odd_page_hint(body: list[tuple[int, str]]) -> str:
    # A title is one short line without a final period; an abstract is long. The first abstract
    # position holding a title-like paragraph is where the pairing broke.
    for (line, text) in body[1::2]:
        if len(text) < 250 and not text.rstrip().endswith("."):
            return f"The first abstract position holding a title-like paragraph is line {line}: {text[:80]!r}."
    return f"The last paragraph starts at line {body[-1][0]}."


@dataclass
class NormalBatch:
    """A batch after normalisation: the columns papers.parquet is built from, plus each row's origin."""

    source: str
    file: str
    unit: str
    lines: list[int]
    paper_id: list[str | None]
    title: list[str]
    abstract: list[str]
    groups: list[list[str]]
    content_hash: list[str]

    def __len__(self) -> int:
        return len(self.lines)


def normalise_text(values: list[str | None]) -> list[str]:
    """NFKC, every run of whitespace or control characters -> one space, trimmed; None -> ''."""
    arr = pa.array(values, type=pa.large_string())
    arr = pc.fill_null(arr, "")
    arr = pc.utf8_normalize(arr, form="NFKC")
    arr = pc.replace_substring_regex(arr, pattern=WHITESPACE, replacement=" ")
    arr = pc.utf8_trim_whitespace(arr)
    return arr.to_pylist()


def title_id(title: str, abstract: str) -> str:
    """Stable id for sources without one: a hash of the normalised title (of the abstract if untitled)."""
    key = (title or abstract).casefold()
    return "title-" + hashlib.sha1(key.encode("utf-8")).hexdigest()[:16]


def content_hash(title: str, abstract: str) -> str:
    """Hash of the case-folded normalised title and abstract: equal hashes are the same paper."""
    key = f"{title.casefold()}\x1f{abstract.casefold()}"
    return hashlib.blake2b(key.encode("utf-8"), digest_size=16).hexdigest()


def normalise_batch(batch: RawBatch, spec: SourceSpec) -> NormalBatch:
    """Normalise one raw batch; ids fall back to a title hash, groups gain the source's groups."""
    titles = normalise_text(batch.titles)
    abstracts = normalise_text(batch.abstracts)
    ids: list[str | None] = []
    for raw_id, title, abstract in zip(batch.ids, titles, abstracts):
        raw_id = raw_id.strip() if raw_id is not None else ""
        if raw_id:
            ids.append(spec.id_prefix + raw_id)
        elif title or abstract:
            ids.append(spec.id_prefix + title_id(title, abstract))
        else:
            ids.append(None)
    extra = list(spec.groups)
    groups = [sorted(set(g + extra)) for g in batch.groups]
    hashes = [content_hash(t, a) for t, a in zip(titles, abstracts)]
    return NormalBatch(spec.name, batch.file, batch.unit, list(batch.lines), ids, titles, abstracts, groups, hashes)
