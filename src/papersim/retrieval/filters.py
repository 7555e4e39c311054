"""Narrowing an answer to papers of a date range or of some groups: the rows a request may return.

A filter chooses the rows before ranking: dense search runs over just those rows (papersim.retrieval.ann
`search_within`) and BM25 scores just those rows, so the answer is the top k of the filtered papers,
never a top k cut down afterwards (which returns fewer, or none, when the filter is narrow).

Dates are ISO 8601 of the precision a source gives (ingest keeps "2019-03-12", "2019-03" or "2019"): a
paper dated "2019-03" spans 1 to 31 March, so `since: 2019-03-15` keeps it and `until: 2019-02` does not.
A paper without a date, or with a day but no year (a listing page's "--03-20"), matches no date filter.
"""

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from papersim.errors import PapersimError

DATE = re.compile(r"^(\d{4})(?:-(\d{2})(?:-(\d{2}))?)?$")
MAX_GROUPS = 20  # groups in one filter: a reader's choice of listings, not a bulk export


def _day(text: str, last: bool) -> np.datetime64 | None:
    """The first (or last) day a date of any precision covers; None when it is not a YYYY[-MM[-DD]] date."""
    match = DATE.match(text)
    if not match:
        return None
    year, month, day = match.groups()
    try:
        if day:
            value = np.datetime64(f"{year}-{month}-{day}", "D")
            return value if str(value) == text else None  # numpy accepts 2019-02-30 as March 2nd
        if month:
            start = np.datetime64(f"{year}-{month}", "M")
            return (start + 1).astype("datetime64[D]") - 1 if last else start.astype("datetime64[D]")
        start = np.datetime64(year, "Y")
        return (start + 1).astype("datetime64[D]") - 1 if last else start.astype("datetime64[D]")
    except ValueError:
        return None


@dataclass(frozen=True)
class Filter:
    """What a request narrows its answer to; empty fields narrow nothing."""

    since: str = ""  # YYYY-MM-DD, YYYY-MM or YYYY: papers dated on or after its first day
    until: str = ""  # papers dated on or before its last day
    groups: tuple[str, ...] = ()  # papers in any of these groups (listing pages, categories)

    def __post_init__(self) -> None:
        for name in ("since", "until"):
            value = (getattr(self, name) or "").strip()
            object.__setattr__(self, name, value)
            if value and _day(value, last=False) is None:
                raise PapersimError(f"{name}: {value!r} is not a date (YYYY-MM-DD, YYYY-MM or YYYY)")
        if self.since and self.until and _day(self.since, False) > _day(self.until, True):
            raise PapersimError(f"since {self.since} is after until {self.until}: no paper can match")
        groups = tuple(dict.fromkeys(g.strip() for g in self.groups if g and g.strip()))
        if len(groups) > MAX_GROUPS:
            raise PapersimError(f"too many groups in one filter ({len(groups)}, at most {MAX_GROUPS})")
        object.__setattr__(self, "groups", groups)

    @property
    def active(self) -> bool:
        return bool(self.since or self.until or self.groups)

    def to_dict(self) -> dict:
        return {"since": self.since, "until": self.until, "groups": list(self.groups)}

    def describe(self) -> str:
        parts = [f"since {self.since}" * bool(self.since), f"until {self.until}" * bool(self.until),
                 f"in {' or '.join(self.groups)}" * bool(self.groups)]
        return ", ".join(p for p in parts if p)


NO_FILTER = Filter()


def date_bounds(dates: Sequence[str | None]) -> tuple[np.ndarray, np.ndarray]:
    """(first day, last day) each paper's date covers, (n,) datetime64[D]; NaT where it has no dated year."""
    text = pd.Series(list(dates), dtype="object").fillna("").astype(str)
    first = np.full(len(text), np.datetime64("NaT"), dtype="datetime64[D]")
    last = first.copy()
    for precision, pattern in (("D", r"^\d{4}-\d{2}-\d{2}$"), ("M", r"^\d{4}-\d{2}$"), ("Y", r"^\d{4}$")):
        rows = np.flatnonzero(text.str.match(pattern).to_numpy(bool))
        if len(rows):
            start = pd.Series(text.iloc[rows]).to_numpy().astype(f"datetime64[{precision}]")
            first[rows] = start.astype("datetime64[D]")
            last[rows] = (start + 1).astype("datetime64[D]") - 1
    return first, last


def group_rows(groups: Iterable[Iterable[str]]) -> dict[str, np.ndarray]:
    """Group -> the rows (sorted) of the papers in it."""
    rows: dict[str, list[int]] = {}
    for row, names in enumerate(groups):
        for name in (names if names is not None else ()):
            rows.setdefault(str(name), []).append(row)
    return {name: np.asarray(found, dtype=np.int64) for name, found in rows.items()}


def allowed_rows(flt: Filter, n_rows: int, bounds: tuple[np.ndarray, np.ndarray] | None,
                 groups: dict[str, np.ndarray] | None) -> np.ndarray:
    """The rows (sorted, int64) a request with filter `flt` may return."""
    keep = np.ones(n_rows, dtype=bool)
    if flt.since or flt.until:
        if bounds is None:
            raise PapersimError("this index holds no paper dates: rebuild it (`dvc repro build_index`) to filter by date")
        first, last = bounds
        dated = ~np.isnat(first)
        keep &= dated
        if flt.since:
            keep &= dated & (last >= _day(flt.since, last=False))
        if flt.until:
            keep &= dated & (first <= _day(flt.until, last=True))
    if flt.groups:
        if groups is None:
            raise PapersimError("this index holds no paper groups: rebuild it (`dvc repro build_index`) to filter "
                                "by group")
        member = np.zeros(n_rows, dtype=bool)
        for name in flt.groups:
            member[groups.get(name, np.zeros(0, dtype=np.int64))] = True
        keep &= member
    return np.flatnonzero(keep).astype(np.int64)


MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def show_date(date: str | None) -> str:
    """A stored date as a listing shows it: 12 Mar 2019, Mar 2019, 2019, or Mar 20 (a day without its year)."""
    if not date:
        return ""
    try:
        if date.startswith("--"):  # --MM-DD
            month, day = date[2:].split("-")
            return f"{MONTHS[int(month) - 1]} {int(day)}"
        parts = date.split("-")
        if len(parts) == 3:
            return f"{int(parts[2])} {MONTHS[int(parts[1]) - 1]} {parts[0]}"
        if len(parts) == 2:
            return f"{MONTHS[int(parts[1]) - 1]} {parts[0]}"
    except (ValueError, IndexError):
        pass
    return date
