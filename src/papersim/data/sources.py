"""A corpus source as params.yaml names it (path, format, column names, id prefix, groups, year), and
reading it batch by batch.
"""

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from papersim.data.formats import _read_csv, _read_jsonl, _read_page, _read_parquet
from papersim.data.metadata import MAX_YEAR, MIN_YEAR
from papersim.data.records import RawBatch
from papersim.errors import PapersimError

FORMATS = ("auto", "jsonl", "csv", "parquet", "beir", "hf_pages")


# What a source's `columns` mapping may rename. Every field but abstract is optional: a column the
# source lacks reads as null (an empty list for groups, authors and categories). arxiv_id and doi are
# not stored: they make the url of a source that has none.
FIELDS = ("id", "title", "abstract", "groups", "authors", "date", "updated", "url", "arxiv_id", "doi", "venue",
          "categories")

# Column names each format uses unless the source's `columns` maps them elsewhere. One column may feed
# two fields (`columns: {groups: categories}` keeps categories as categories too).
SAME_NAMES = {name: name for name in FIELDS}
DEFAULT_COLUMNS = {
    "jsonl": SAME_NAMES,
    "csv": SAME_NAMES,
    "parquet": SAME_NAMES,
    "beir": {**SAME_NAMES, "id": "_id", "abstract": "text"},  # BEIR has no metadata: those columns stay absent
    "hf_pages": {},  # a listing page has titles, abstracts and its date, no columns
}

# Lines a saved listing page starts with before the first paper (the site's header).


@dataclass(frozen=True)
class SourceSpec:
    """One input of the ingest stage, as written in params.yaml."""

    path: str
    format: str = "auto"  # auto: by extension, or by folder contents (corpus.jsonl -> beir, *.txt -> hf_pages)
    name: str = ""  # label in the `source` column and the report; default: the file or folder name
    columns: dict[str, str] = field(default_factory=dict)  # papersim field -> column in this source
    id_prefix: str = ""  # keeps numeric ids of different sources apart, e.g. "cranfield:"
    groups: list[str] = field(default_factory=list)  # groups every paper of this source belongs to
    year: int = 0  # the year of a listing page's year-less date ("Mar 20" -> 2024-03-20); 0 = unknown: "--03-20"

    def __post_init__(self) -> None:
        if self.format not in FORMATS:
            raise ValueError(f"unknown format {self.format!r} for {self.path}; choose one of {', '.join(FORMATS)}")
        bad = sorted(set(self.columns) - set(FIELDS))
        if bad:
            raise ValueError(f"columns: unknown field(s) {', '.join(bad)}; mappable fields: {', '.join(FIELDS)}")
        if self.year and not (isinstance(self.year, int) and MIN_YEAR <= self.year <= MAX_YEAR):
            raise ValueError(f"year must be 0 (unknown) or within [{MIN_YEAR}, {MAX_YEAR}], not {self.year!r}")
        if not self.name:
            object.__setattr__(self, "name", Path(self.path).stem or Path(self.path).name)


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


def source_files(spec: SourceSpec) -> tuple[str, list[Path]]:
    """(the concrete format, the files a read of the source opens, in reading order). Paths keep the
    form params.yaml gives (relative or absolute); a folder's files are sorted."""
    fmt = resolve_format(spec)
    path = Path(spec.path)
    if fmt == "beir":
        path = path / "corpus.jsonl" if path.is_dir() else path
        if not path.is_file():
            raise PapersimError(f"{spec.path}: a beir source needs corpus.jsonl in this folder")
        return fmt, [path]
    if fmt == "hf_pages" and path.is_dir():
        files = sorted(path.glob("*.txt"))
        if not files:
            raise PapersimError(f"{spec.path}: no *.txt listing pages in this folder")
        return fmt, files
    if path.is_dir():
        raise PapersimError(f"{spec.path}: a {fmt} source is one file, not a folder (source '{spec.name}' in "
                            "params.yaml ingest.sources); list each file as a source of its own")
    return fmt, [path]


def read_source(spec: SourceSpec, batch_rows: int) -> Iterator[RawBatch]:
    """Stream a source as batches of raw records; structural problems raise PapersimError."""
    fmt, files = source_files(spec)
    columns = {**DEFAULT_COLUMNS[fmt], **spec.columns}
    for path in files:
        if fmt in ("jsonl", "beir"):
            yield from _read_jsonl(path, columns, batch_rows)
        elif fmt == "csv":
            yield from _read_csv(path, columns, batch_rows)
        elif fmt == "parquet":
            yield from _read_parquet(path, columns, batch_rows)
        else:
            yield from _read_page(path, batch_rows)
