"""The ingest stage's core: sources -> validated, de-duplicated papers.parquet (+ rejected rows).

Memory stays bounded: pass 1 streams batches (read, normalise, validate with Great
Expectations, drop duplicates while remembering the groups they add; a duplicate's other metadata
is dropped with it, the first row's kept) into an Arrow spill file,
keeping only ids and content hashes in memory. Then id uniqueness is checked over the whole corpus;
pass 2 reads the spill back batch by batch, sets aside rows with a conflicting id (same id, different
content), adds the groups of merged duplicates, hashes each final record and writes the Parquet table.
"""

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from papersim.atomic import scratch_folder
from papersim.config import build_config
from papersim.data.normalise import normalise_batch, record_hashes, titles_as_text
from papersim.data.records import GROUPS, RawBatch
from papersim.data.rejection import REJECTED_SCHEMA, Rejection, reject_rows
from papersim.data.sources import SourceSpec, read_source, resolve_format
from papersim.data.validation import RULES, RowRules, duplicate_id_rows, merge_failures, row_failures
from papersim.errors import PapersimError

PAPERS_SCHEMA = pa.schema(
    [
        pa.field("paper_id", pa.string(), nullable=False),
        pa.field("title", pa.string(), nullable=False),
        pa.field("abstract", pa.string(), nullable=False),
        pa.field("source", pa.string(), nullable=False),  # the `name` of the source that first had it
        pa.field("groups", pa.list_(pa.string()), nullable=False),  # listing pages, categories
        # Metadata, of the first row of a merged duplicate (later rows add their groups only):
        pa.field("authors", pa.list_(pa.string()), nullable=False),  # in source order; [] where unknown
        pa.field("date", pa.string()),  # published: ISO 8601 YYYY-MM-DD, YYYY-MM, YYYY; --MM-DD from a listing page
        pa.field("updated", pa.string()),  # last revised, the same forms
        pa.field("url", pa.string()),  # http(s); from the arXiv id or DOI where the source gives no url
        pa.field("venue", pa.string()),
        pa.field("categories", pa.list_(pa.string()), nullable=False),  # in source order, e.g. arXiv's cs.LG
        pa.field("content_hash", pa.string(), nullable=False),  # SHA-1 (128 bits) of lower-cased title + abstract
        pa.field("record_hash", pa.string(), nullable=False),  # SHA-1 (128 bits) of every field above but content_hash
    ]
)
FROM_BATCH = ("groups", "authors", "date", "updated", "url", "venue", "categories")  # spilled as normalised
# Pass 1's spill: record_hash waits for pass 2, where merged duplicates add their groups.
SPILL_SCHEMA = PAPERS_SCHEMA.remove(PAPERS_SCHEMA.get_field_index("record_hash"))
# Dictionary-encode only the repetitive columns: trying it on unique texts is wasted work.
PARQUET_OPTIONS = {"use_dictionary": ["source", "groups.list.element", "date", "updated", "venue",
                                      "categories.list.element"]}


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


def _read_raw(cfg: IngestConfig) -> Iterator[tuple[SourceSpec, RawBatch]]:
    for spec in cfg.sources:
        for raw in read_source(spec, cfg.batch_rows):
            yield spec, raw


def ingest_corpus(cfg: IngestConfig, papers_path: Path, rejected_path: Path) -> dict:
    """Read every source of `cfg`, write papers and rejected rows to the given (temporary) paths.

    Returns the report of reports/ingest.json. Raises PapersimError, with a readable report,
    when validation fails (on_invalid: fail) or too many rows were rejected (quarantine).
    """
    for spec in cfg.sources:  # every path and format problem before any reading
        resolve_format(spec)
    rules = RowRules(cfg.min_abstract_chars, cfg.max_abstract_chars, cfg.require_title)
    rows_read: Counter = Counter()
    merged = 0
    id_hash: dict[str, str] = {}  # paper_id -> content_hash of the first row kept with that id
    hash_id: dict[str, str] = {}  # content_hash -> paper_id of that row
    extra_groups: dict[str, set[str]] = {}  # groups that duplicates add to an already spilled row
    units: dict[str, str] = {}  # file -> "line" or "row", for the rows read back from the spill

    with scratch_folder(papers_path.parent, "ingest") as scratch, \
            pq.ParquetWriter(rejected_path, REJECTED_SCHEMA) as rejected_writer:
        pass1 = scratch / "pass1.arrow"
        rejected = Rejection(rejected_writer, rules)
        files: list[str] = []  # origin of each written row, for the uniqueness report: file index ...
        origin_file: list[np.ndarray] = []  # (rows,) int32 per batch
        origin_line: list[np.ndarray] = []  # ... and line, (rows,) int64 per batch
        kept_ids: list[pa.Array] = []  # paper_id of each written row, for the uniqueness check
        # Pass 1 spills to an uncompressed Arrow file: writing it is a copy, reading it back a
        # memory map, so the one real encoding is the final Parquet write of pass 2.
        with pa.ipc.new_file(pass1, SPILL_SCHEMA) as out:
            for spec, raw in _read_raw(cfg):
                rows_read[spec.name] += len(raw) + len(raw.failures)
                units[raw.file] = raw.unit
                rejected.add([
                    {"paper_id": None, "title": None, "abstract": f.raw, "source": spec.name, "file": raw.file,
                     "line": f.line, "unit": raw.unit, "rules": ["parse_error"], "detail": f.message}
                    for f in raw.failures
                ])
                if not len(raw):
                    continue
                batch = normalise_batch(raw, spec)
                if cfg.title_only == "keep":
                    batch = titles_as_text(batch)
                failures = merge_failures(row_failures(batch.paper_id, batch.title, batch.abstract, rules),
                                          batch.invalid)
                rejected.add(reject_rows(batch, failures))
                keep = [False] * len(batch)
                for i, (pid, digest) in enumerate(zip(batch.paper_id.to_pylist(), batch.content_hash.to_pylist())):
                    if i in failures:
                        continue
                    first = id_hash.get(pid)
                    if first is None:
                        owner = hash_id.get(digest)
                        if owner is None:
                            id_hash[pid] = digest
                            hash_id[digest] = pid
                            keep[i] = True
                            continue
                    elif first != digest:  # same id, different content: the uniqueness rule reports both
                        keep[i] = True
                        continue
                    else:
                        owner = pid  # same id, same content: a repeat listing
                    extra_groups.setdefault(owner, set()).update(batch.groups[i].as_py())
                    merged += 1
                mask = np.array(keep)
                if batch.file not in files:
                    files.append(batch.file)
                origin_file.append(np.full(int(mask.sum()), files.index(batch.file), dtype=np.int32))
                origin_line.append(np.asarray(batch.lines, dtype=np.int64)[mask])
                arrow_mask = pa.array(mask)
                kept_ids.append(batch.paper_id.filter(arrow_mask))
                out.write_table(pa.table({
                    "paper_id": batch.paper_id.filter(arrow_mask),
                    "title": batch.title.filter(arrow_mask),
                    "abstract": batch.abstract.filter(arrow_mask),
                    "source": pa.array([batch.source] * int(mask.sum()), pa.string()),
                    **{name: getattr(batch, name).filter(arrow_mask) for name in FROM_BATCH},
                    "content_hash": batch.content_hash.filter(arrow_mask),
                }, schema=SPILL_SCHEMA))

        ids = pa.chunked_array(kept_ids, pa.string()).combine_chunks()
        conflicts = duplicate_id_rows(ids) if len(ids) else []
        del ids
        # Read back batch by batch (not memory-mapped): only one batch of texts is resident at a time.
        with pa.OSFile(str(pass1)) as spill:
            reader = pa.ipc.open_file(spill)
            origins = (files, np.concatenate(origin_file or [np.zeros(0, np.int32)]),
                       np.concatenate(origin_line or [np.zeros(0, np.int64)]))
            written = _write_papers(reader, papers_path, conflicts, origins, extra_groups, rejected, units)
        total_read = sum(rows_read.values())
        rejected_rows = rejected.rows  # parse failures, broken rules and conflicting ids

    fraction = rejected_rows / total_read
    report = {
        "rows_read": dict(rows_read),
        "rows_read_total": total_read,
        "duplicates_merged": merged,
        "rejected": {rule: rejected.counts.get(rule, 0) for rule in _rule_ids(cfg)},
        "rejected_total": rejected_rows,
        "rejected_fraction": round(fraction, 6),
        "rows_written": written,
    }
    if rejected_rows and cfg.on_invalid == "fail":
        raise PapersimError(rejected.report(
            f"ingest: {rejected_rows} of {total_read} row(s) failed validation (on_invalid: fail; "
            f"set on_invalid: quarantine to set them aside in rejected.parquet). Nothing was written."
        ))
    if fraction > cfg.max_rejected_fraction:
        raise PapersimError(rejected.report(
            f"ingest: {rejected_rows} of {total_read} row(s) rejected ({fraction:.2%}), more than "
            f"max_rejected_fraction {cfg.max_rejected_fraction:.2%}. Nothing was written."
        ))
    return report


def _write_papers(spill: pa.ipc.RecordBatchFileReader, papers_path: Path, conflicts: list[int],
                  origins: tuple[list[str], np.ndarray, np.ndarray], extra_groups: dict[str, set[str]],
                  rejected: Rejection, units: dict[str, str]) -> int:
    """Pass 2: move rows with conflicting ids to rejected, add merged groups and record hashes, write the
    Parquet table."""
    files, origin_file, origin_line = origins
    drop = np.zeros(len(origin_line), dtype=bool)
    drop[conflicts] = True
    merged_ids = pa.array(list(extra_groups), pa.string())
    written = position = 0
    with pq.ParquetWriter(papers_path, PAPERS_SCHEMA, **PARQUET_OPTIONS) as out:
        for b in range(spill.num_record_batches):
            table = pa.Table.from_batches([spill.get_batch(b)])
            n = table.num_rows
            dropped = drop[position:position + n]
            if dropped.any():
                bad = np.flatnonzero(dropped)
                rows = table.take(pa.array(bad)).to_pylist()
                rejected.add([
                    {**row, "file": files[origin_file[position + i]], "line": int(origin_line[position + i]),
                     "unit": units[files[origin_file[position + i]]], "rules": ["id_unique"],
                     "detail": "this id has a different title/abstract in another row"}
                    for i, row in zip(bad, rows)
                ])
                table = table.filter(pa.array(~dropped))
            touched = np.flatnonzero(pc.is_in(table.column("paper_id"), value_set=merged_ids).to_numpy(False))
            if len(touched):  # rebuild the groups of just these rows: (old groups, new lists) -> take
                groups = table.column("groups").combine_chunks().cast(GROUPS)
                ids = table.column("paper_id").take(pa.array(touched)).to_pylist()
                patched = pa.array([sorted(set(g) | extra_groups[pid])
                                    for pid, g in zip(ids, groups.take(pa.array(touched)).to_pylist())], GROUPS)
                index = np.arange(table.num_rows)
                index[touched] = table.num_rows + np.arange(len(touched))
                groups = pa.concat_arrays([groups, patched]).take(pa.array(index))
                table = table.set_column(table.schema.get_field_index("groups"), PAPERS_SCHEMA.field("groups"), groups)
            out.write_table(table.append_column(PAPERS_SCHEMA.field("record_hash"), record_hashes(table)))
            position += n
            written += table.num_rows
    return written


def _rule_ids(cfg: IngestConfig) -> list[str]:
    return [r for r in RULES if cfg.require_title or r != "title_not_empty"]
