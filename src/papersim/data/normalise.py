"""Normalising raw batches: NFKC and whitespace, groups, ids from titles when a source has none, metadata,
content hashes."""

import dataclasses
import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from papersim.data.metadata import map_unique, paper_url, parse_authors, parse_categories, parse_date, with_year
from papersim.data.records import GROUPS, TEXT, RawBatch
from papersim.data.sources import SourceSpec

MESSY_SPACE = r"(?: [\s\p{Z}\p{Cc}]|[\p{Cc}\p{Zl}\p{Zp}\x{1680}])[\s\p{Z}\p{Cc}]*"


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
    authors: pa.Array  # list<string>, [] where the source names none
    date: pa.Array  # string (ISO 8601: YYYY-MM-DD, YYYY-MM, YYYY or --MM-DD), null where unknown
    updated: pa.Array
    url: pa.Array  # string (http or https), null where unknown
    venue: pa.Array
    categories: pa.Array  # list<string>, source order
    content_hash: pa.Array
    # row -> {rule: what is wrong}: metadata that does not parse (rules date_valid, url_valid)
    invalid: dict[int, dict[str, str]] = field(default_factory=dict)

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


def normalise_list(values: pa.Array, parse: Callable[[object], list[str]],
                   clean: Callable[[pa.Array], pa.Array] = pc.utf8_trim_whitespace) -> pa.Array:
    """list<string> of each row's items, each `clean`ed (trimmed by default), empty ones dropped, order kept.

    A list column is cleaned as is; a string column is split row by row by `parse` first.
    """
    if values.null_count == len(values):
        return pa.array([[]] * len(values), GROUPS)
    if not (pa.types.is_list(values.type) or pa.types.is_large_list(values.type)):
        values = pa.array([parse(v) for v in values.to_pylist()], GROUPS)
    values = values.cast(GROUPS)
    rows = pc.list_parent_indices(values)  # (n_values,) row of each item
    items = pc.fill_null(clean(pc.list_flatten(values)), "")
    keep = pc.not_equal(items, "")
    lengths = np.bincount(rows.filter(keep).to_numpy(), minlength=len(values))  # (n,) items kept per row
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
    return pa.ListArray.from_arrays(pa.array(offsets), items.filter(keep).cast(pa.string()))


def normalise_optional_text(values: pa.Array) -> pa.Array:
    """Text metadata (a venue): normalised like titles, empty -> null."""
    if values.null_count == len(values):
        return pa.nulls(len(values), pa.string())
    text = normalise_text(values).cast(pa.string())
    return pc.if_else(pc.equal(text, ""), pa.scalar(None, pa.string()), text)


def normalise_metadata(batch: RawBatch, year: int = 0) -> tuple[dict[str, pa.Array], dict[int, dict[str, str]]]:
    """(authors, date, updated, url, venue and categories columns; row -> {rule: what is wrong} for values
    that do not parse). `year` completes year-less dates ("--03-20"), 0 leaves them so."""
    invalid: dict[int, dict[str, str]] = {}
    columns = {"authors": normalise_list(batch.authors, parse_authors, normalise_text)}
    for name in ("date", "updated"):
        columns[name], errors = map_unique(getattr(batch, name), _date_reader(name, year))
        for row, message in errors.items():
            found = invalid.setdefault(row, {})
            found["date_valid"] = "; ".join(filter(None, [found.get("date_valid"), message]))
    columns["url"], errors = _urls(batch)
    for row, message in errors.items():
        invalid.setdefault(row, {})["url_valid"] = message
    columns["venue"] = normalise_optional_text(batch.venue)
    columns["categories"] = normalise_list(batch.categories, parse_categories)
    return columns, invalid


def _date_reader(name: str, year: int) -> Callable[[str], str | None]:
    def read(text: str) -> str | None:
        try:
            return with_year(parse_date(text), year)
        except ValueError as exc:
            raise ValueError(f"{name} {text.strip()!r} is {exc}") from None
    return read


def _urls(batch: RawBatch) -> tuple[pa.Array, dict[int, str]]:
    """Each row's url (given, or made from its arXiv id or DOI) and the rows whose value is malformed."""
    given = [batch.url, batch.arxiv_id, batch.doi]
    if all(values.null_count == len(values) for values in given):
        return pa.nulls(len(batch), pa.string()), {}
    urls: list[str | None] = []
    errors: dict[int, str] = {}
    for row, (url, arxiv_id, doi) in enumerate(zip(*(values.to_pylist() for values in given))):
        try:
            urls.append(paper_url(url, arxiv_id, doi))
        except ValueError as exc:
            urls.append(None)
            errors[row] = str(exc)
    return pa.array(urls, pa.string()), errors


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


# Every stored field but the hashes.
RECORD_FIELDS = ("paper_id", "title", "abstract", "source", "groups", "authors", "date", "updated", "url", "venue",
                 "categories")


def record_hashes(table: pa.Table) -> pa.Array:
    """SHA-1 (128 bits kept) of each row's RECORD_FIELDS as stored: any edit a reader would see changes it.

    content_hash names the text a model encodes (lower-cased title + abstract); this one changes with a
    title's case, the source, a group or any metadata too. Every field (and every list item) is
    length-prefixed and a null has no prefix, so no two records hash the same bytes.
    """
    fields = [_field_bytes(table.column(name).combine_chunks()) for name in RECORD_FIELDS]
    rows = pc.binary_join_element_wise(*fields, "").cast(pa.large_binary())
    row_off, data = _offsets_and_data(rows)
    sha1 = hashlib.sha1
    return pa.array([sha1(data[a:b]).hexdigest()[:32] for a, b in zip(row_off[:-1], row_off[1:])], pa.string())


def _field_bytes(values: pa.Array) -> pa.Array | pa.Scalar:
    """One field of each row as '<bytes>:<value>'; a list as the prefixed join of its prefixed items; null as '-'."""
    is_list = pa.types.is_list(values.type) or pa.types.is_large_list(values.type)
    if values.null_count == len(values) or (is_list and not len(pc.list_flatten(values))):
        return pa.scalar("0:" if is_list else "-")  # the common case of metadata a source lacks, in one scalar
    if is_list:
        counts = pc.list_value_length(values).fill_null(0).to_numpy(zero_copy_only=False)
        offsets = pa.array(np.concatenate([[0], np.cumsum(counts)]).astype(np.int32))
        listed = pa.ListArray.from_arrays(offsets, _prefixed(pc.list_flatten(values)))
        return _prefixed(pc.binary_join(listed, ""))
    return pc.fill_null(_prefixed(values), "-")


def _prefixed(values: pa.Array) -> pa.Array:
    """Each string as '<bytes>:<string>' (a netstring without its comma)."""
    values = values.cast(pa.string())
    return pc.binary_join_element_wise(pc.binary_length(values).cast(pa.string()), values, ":")


def _offsets_and_data(arr: pa.Array) -> tuple[list[int], memoryview]:
    """Row offsets (n + 1) and the data buffer of a large_binary array."""
    offsets = np.frombuffer(arr.buffers()[1], dtype=np.int64)[arr.offset:arr.offset + len(arr) + 1]
    return offsets.tolist(), memoryview(arr.buffers()[2] or b"")


def normalise_batch(batch: RawBatch, spec: SourceSpec) -> NormalBatch:
    """Normalise one raw batch; ids fall back to a title hash, groups gain the source's groups, metadata that
    does not parse is null and named in `invalid`."""
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
    metadata, invalid = normalise_metadata(batch, spec.year)
    hashes = content_hashes(titles, abstracts)
    return NormalBatch(spec.name, batch.file, batch.unit, batch.lines, ids, titles, abstracts, groups,
                       content_hash=hashes, invalid=invalid, **metadata)


def titles_as_text(batch: NormalBatch) -> NormalBatch:
    """Title-only records (no abstract) keep their title as their text: abstract := title, title := ''."""
    only_title = pc.and_(pc.equal(batch.abstract, ""), pc.not_equal(batch.title, ""))
    if not pc.any(only_title).as_py():
        return batch
    return dataclasses.replace(batch, abstract=pc.if_else(only_title, batch.title, batch.abstract),
                               title=pc.if_else(only_title, pa.scalar("", batch.title.type), batch.title))
