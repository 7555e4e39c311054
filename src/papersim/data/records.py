"""What every reader yields: raw batches of one file, each row with its line (or Parquet row) number,
and the records that could not be read.
"""

import ast
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa

from papersim.errors import PapersimError

TEXT = pa.large_string()  # abstracts of a batch can exceed 2 GiB in total only with large offsets


GROUPS = pa.list_(pa.string())


@dataclass
class ParseFailure:
    """A record that could not be read at all (malformed JSON, a broken CSV row)."""

    line: int
    message: str
    raw: str


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
