"""What every reader yields: raw batches of one file, each row with its line (or Parquet row) number,
and the records that could not be read.
"""

import ast
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa

from papersim.data.metadata import parse_authors, parse_categories
from papersim.errors import PapersimError

TEXT = pa.large_string()  # abstracts of a batch can exceed 2 GiB in total only with large offsets


GROUPS = pa.list_(pa.string())
META_TEXT = ("date", "updated", "url", "arxiv_id", "doi", "venue")  # optional metadata read as text
META_LISTS = ("authors", "categories")  # optional metadata read as lists
LIST_PARSERS = (("authors", parse_authors), ("categories", parse_categories))


@dataclass
class ParseFailure:
    """A record that could not be read at all (malformed JSON, a broken CSV row)."""

    line: int
    message: str
    raw: str


@dataclass
class RawBatch:
    """Up to `batch_rows` records of one file, before normalisation, as Arrow columns.

    Metadata columns left out (None) are all null: the source does not have them.
    """

    file: str
    unit: str  # "line" for text formats, "row" for Parquet
    lines: list[int]
    ids: pa.Array  # string, null where the source has no id
    titles: pa.Array
    abstracts: pa.Array
    groups: pa.Array  # list<string>
    authors: pa.Array | None = None  # list<string>, or string: names still to split (metadata.parse_authors)
    date: pa.Array | None = None  # string as the source writes it, e.g. "Mar 12, 2019"
    updated: pa.Array | None = None
    url: pa.Array | None = None
    arxiv_id: pa.Array | None = None
    doi: pa.Array | None = None
    venue: pa.Array | None = None
    categories: pa.Array | None = None  # list<string>, or string still to split (metadata.parse_categories)
    failures: list[ParseFailure] = field(default_factory=list)

    def __post_init__(self) -> None:
        for name in META_TEXT + META_LISTS:
            if getattr(self, name) is None:
                setattr(self, name, pa.nulls(len(self.lines), pa.string()))

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
        self.meta: dict[str, list] = {name: [] for name in META_TEXT + META_LISTS}
        self.failures: list[ParseFailure] = []

    def __len__(self) -> int:
        return len(self.lines) + len(self.failures)

    def add(self, line: int, values: Mapping[str, Any]) -> None:
        """One record: `values` maps papersim fields (sources.FIELDS) to the source's values; absent = None."""
        self.lines.append(line)
        self.ids.append(_as_text(values.get("id")))
        self.titles.append(_as_text(values.get("title")))
        self.abstracts.append(_as_text(values.get("abstract")))
        self.groups.append(_as_groups(values.get("groups")))
        for name in META_TEXT:  # mostly absent: skip the conversion then
            value = values.get(name)
            self.meta[name].append(None if value is None else _as_scalar(value))
        for name, parse in LIST_PARSERS:
            value = values.get(name)
            self.meta[name].append([] if value is None else parse(_as_value(value)))

    def batch(self) -> RawBatch:
        meta = {name: pa.array(self.meta[name], pa.string()) for name in META_TEXT}
        meta |= {name: pa.array(self.meta[name], GROUPS) for name in META_LISTS}
        return RawBatch(self.file, self.unit, self.lines, pa.array(self.ids, pa.string()),
                        pa.array(self.titles, TEXT), pa.array(self.abstracts, TEXT),
                        pa.array(self.groups, GROUPS), **meta, failures=self.failures)


def _as_text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, float) and value != value:  # NaN from a CSV or Parquet null
        return None
    return value if isinstance(value, str) else str(value)


def _as_value(value: Any) -> Any:
    return None if isinstance(value, float) and value != value else value  # NaN: a Parquet/pandas null


def _as_scalar(value: Any) -> str | None:
    """A metadata value as text; a whole float as an integer (a year stored as 2019.0 reads "2019")."""
    value = _as_value(value)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return _as_text(value)


def _text_column(values: pa.Array, temporal: bool = False) -> pa.Array | None:
    """A column the Arrow readers gave for a text metadata field, as strings, written as `_as_scalar`
    writes the same values on the slow path; None for a type only the slow path reads alike."""
    kind = values.type
    if pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_null(kind):
        return values.cast(pa.string())
    if (pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_boolean(kind)
            or (temporal and (pa.types.is_timestamp(kind) or pa.types.is_date(kind)))):
        return pa.array([_as_scalar(v) for v in values.to_pylist()], pa.string())
    return None


def _list_column(values: pa.Array) -> pa.Array | None:
    """A column for a list metadata field: list<string>, or strings still to split; None for other types."""
    kind = values.type
    if pa.types.is_list(kind) or pa.types.is_large_list(kind):
        inner = kind.value_type
        if pa.types.is_string(inner) or pa.types.is_large_string(inner) or pa.types.is_null(inner):
            return values.cast(GROUPS)
        return None
    if pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_null(kind):
        return values.cast(pa.string())
    return None


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
