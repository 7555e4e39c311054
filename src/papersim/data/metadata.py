"""Parsing a paper's optional metadata (authors, dates, links, categories) from the forms sources give it.

Pure functions of one value. A value that cannot be read raises ValueError: parse_date's message completes
"<field> '<value>' is ..." (e.g. "not a date"); paper_url, reading three fields, names the field itself.
"""

import ast
import calendar
import functools
import json
import re
from collections.abc import Callable
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

MIN_YEAR, MAX_YEAR = 1000, 2100  # outside: a typo or a placeholder (0001, 9999), not a publication year

MONTHS = {name: i for i, full in enumerate(calendar.month_name) if full
          for name in (full.lower(), full[:3].lower())} | {"sept": 9}
_MONTH = r"(?P<month>[A-Za-z]{3,9})\.?"
_WEEKDAY = r"(?:(?:mon|tue|wed|thu|fri|sat|sun)[a-z]*\.?,?\s+)?"
_CLOCK = r"\d{1,2}:\d{2}(?::\d{2}(?:[.,]\d+)?)?\s*(?:Z|UTC|GMT|[+-]\d{2}(?::?\d{2})?)?"
DATE_FORMS = [re.compile(p, re.IGNORECASE) for p in (
    # 2019, 2019-03, 2019-03-12, 2019/03/12, 2019-03-12T17:59:53Z, 2019-03-12 17:59:53+01:00
    rf"(?P<year>\d{{4}})(?:(?P<sep>[-/])(?P<mon>\d{{1,2}})(?:(?P=sep)(?P<day>\d{{1,2}})(?:[T ]{_CLOCK})?)?)?",
    r"--(?P<mon>\d{2})-(?P<day>\d{2})",  # ISO 8601's day without its year
    # Mar 12, 2019 / March 2019 / Mar 12 (a listing page's header)
    rf"{_WEEKDAY}{_MONTH}\s+(?:(?P<day>\d{{1,2}})(?:st|nd|rd|th)?(?=[\s,]|$),?\s*)?(?P<year>\d{{4}})?"
    rf"(?:\s+{_CLOCK})?",
    # 12 Mar 2019 / Tue, 12 Mar 2019 17:59:53 GMT / 12 March
    rf"{_WEEKDAY}(?P<day>\d{{1,2}})(?:st|nd|rd|th)?\s+{_MONTH},?(?:\s+(?P<year>\d{{4}}))?(?:\s+{_CLOCK})?",
)]

URL = re.compile(r"https?://[^\s/?#]+(?:[/?#]\S*)?", re.IGNORECASE)
ARXIV_ID = re.compile(  # 1706.03762, 0704.0001v2, arXiv:cs/0112017, math.GT/0309136
    r"(?:arxiv:\s*)?(?P<id>(?P<yymm>\d{4})\.(?P<number>\d{4,5})|[a-z]+(?:-[a-z]+)*(?:\.[a-z]{2})?/\d{7})(?:v\d+)?",
    re.IGNORECASE,
)
DOI = re.compile(r"(?:doi:\s*|https?://(?:dx\.)?doi\.org/)?(?P<doi>10\.\d{4,9}/\S+)", re.IGNORECASE)
CATEGORY_TOKEN = re.compile(r"[A-Za-z][A-Za-z0-9]*(?:[.\-_][A-Za-z0-9]+)+")  # cs.LG, hep-th, cond-mat.stat-mech


def parse_date(text: str | None) -> str | None:
    """ISO 8601 of the precision given: 'YYYY-MM-DD', 'YYYY-MM', 'YYYY', or '--MM-DD' for a day without its year.

    Reads ISO dates and timestamps (the time is dropped), 'YYYY/MM/DD' and English forms ('Mar 12, 2019',
    '12 March 2019', 'March 2019', 'Mar 12'). Empty -> None.
    """
    if text is None or not text.strip():
        return None
    text = text.strip()
    for form in DATE_FORMS:
        m = form.fullmatch(text)
        if m is None:
            continue
        parts = m.groupdict()
        if parts.get("month") is not None:
            month = MONTHS.get(parts["month"].lower())
            if month is None:
                continue
        else:
            month = int(parts["mon"]) if parts.get("mon") else None
        year = int(parts["year"]) if parts.get("year") else None
        day = int(parts["day"]) if parts.get("day") else None
        if year is None and day is None:  # "March" alone, or "Mar." with nothing after it
            continue
        return _checked(year, month, day)
    raise ValueError("not a date")


def _checked(year: int | None, month: int | None, day: int | None) -> str:
    if year is not None and not MIN_YEAR <= year <= MAX_YEAR:
        raise ValueError(f"not a date (years {MIN_YEAR}-{MAX_YEAR})")
    if month is None:
        return f"{year:04d}"
    if not 1 <= month <= 12:
        raise ValueError("not a date (no such month)")
    if day is None:
        return f"{year:04d}-{month:02d}"
    # A day without its year may be Feb 29: 2000 is a leap year.
    if not 1 <= day <= calendar.monthrange(year or 2000, month)[1]:
        raise ValueError("not a date (no such day)")
    return f"{year:04d}-{month:02d}-{day:02d}" if year is not None else f"--{month:02d}-{day:02d}"


def with_year(date: str | None, year: int) -> str | None:
    """'--MM-DD' -> 'YYYY-MM-DD' in `year` (0 = unknown: unchanged); any other date unchanged."""
    if not year or date is None or not date.startswith("--"):
        return date
    month, day = int(date[2:4]), int(date[5:7])
    if day > calendar.monthrange(year, month)[1]:
        raise ValueError(f"not a date in {year}")
    return f"{year:04d}-{month:02d}-{day:02d}"


def parse_authors(value: Any) -> list[str]:
    """Author names from a list, a JSON/Python list literal, or one string of names.

    A string is split on ';' when it has one ("Smith, J.; Doe, A.": commas then belong to the names),
    else on ',' and ' and ' ("J. Smith, A. Doe and B. Roe", arXiv's form). Names stripped, empty ones dropped.
    """
    items = _listed(value)
    if isinstance(items, str):
        items = items.split(";") if ";" in items else re.split(r",|\s+and\s+", items)
    return [name for name in (str(v).strip() for v in items if v is not None) if name]


def parse_categories(value: Any) -> list[str]:
    """Categories from a list, a JSON/Python list literal, a ';'-separated string, or a space-separated one
    made only of category tokens ("cs.LG stat.ML", as arXiv's metadata gives them). Source order kept."""
    items = _listed(value)
    if isinstance(items, str):
        return list(_split_categories(items))
    return [c for c in (str(v).strip() for v in items if v is not None) if c]


@functools.lru_cache(maxsize=4096)  # a corpus repeats few category strings thousands of times
def _split_categories(text: str) -> tuple[str, ...]:
    parts = text.split()
    if ";" in text or not all(CATEGORY_TOKEN.fullmatch(p) for p in parts):
        parts = text.split(";")
    return tuple(c for c in (p.strip() for p in parts) if c)


def _listed(value: Any) -> list | str:
    """A list as is, a list literal parsed, any other string stripped (for the caller to split)."""
    if value is None:
        return []
    if isinstance(value, (list, tuple)):
        return list(value)
    text = str(value).strip()
    if text.startswith("["):
        for parse in (json.loads, ast.literal_eval):
            try:
                parsed = parse(text)
            except (ValueError, SyntaxError):
                continue
            if isinstance(parsed, (list, tuple)):
                return list(parsed)
    return text


def paper_url(url: str | None, arxiv_id: str | None, doi: str | None) -> str | None:
    """The paper's link: `url` (http or https), else its arXiv abstract page, else its doi.org page.

    Only the first of the three that is given is read (and must be well-formed). Raises ValueError with
    a message naming the field and value.
    """
    url, arxiv_id, doi = (v.strip() if v else "" for v in (url, arxiv_id, doi))
    if url:
        if not URL.fullmatch(url):
            raise ValueError(f"url {url!r} is not an http(s) URL")
        return url
    if arxiv_id:
        m = ARXIV_ID.fullmatch(arxiv_id)
        if m is None or (m["yymm"] and not _new_style_id(m["yymm"], m["number"])):
            raise ValueError(f"arxiv_id {arxiv_id!r} is not an arXiv id")
        return f"https://arxiv.org/abs/{m['id']}"
    if doi:
        m = DOI.fullmatch(doi)
        if m is None:
            raise ValueError(f"doi {doi!r} is not a DOI")
        return f"https://doi.org/{m['doi']}"
    return None


def _new_style_id(yymm: str, number: str) -> bool:
    # YYMM.NNNN from 0704 to 1412, YYMM.NNNNN since 1501; a number with the wrong width is often an
    # id read as a float (1501.00010 -> 1501.0001).
    if not 1 <= int(yymm[2:]) <= 12 or yymm < "0704":
        return False
    return len(number) == (5 if yymm >= "1501" else 4)


def map_unique(values: pa.Array, parse: Callable[[str], str | None]) -> tuple[pa.Array, dict[int, str]]:
    """`parse` applied to each distinct string of `values` (dates repeat across thousands of papers):
    (string array of the results, null where the value is null or did not parse; row -> error message)."""
    values = values.cast(pa.string())
    if values.null_count == len(values):
        return pa.nulls(len(values), pa.string()), {}
    encoded = values.dictionary_encode()
    parsed: list[str | None] = []
    failed: dict[int, str] = {}  # dictionary index -> message
    for index, text in enumerate(encoded.dictionary.to_pylist()):
        try:
            parsed.append(parse(text))
        except ValueError as exc:
            parsed.append(None)
            failed[index] = str(exc)
    indices = encoded.indices
    result = pa.array(parsed, pa.string()).take(indices)
    errors: dict[int, str] = {}
    if failed:
        bad = pc.is_in(indices, value_set=pa.array(list(failed), indices.type))
        for row in pc.indices_nonzero(bad).to_pylist():
            errors[row] = failed[indices[row].as_py()]
    return result, errors
