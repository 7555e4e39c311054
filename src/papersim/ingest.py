"""The ingest stage's core: sources -> validated, de-duplicated papers.parquet (+ rejected rows).

Two passes over a spill file keep memory bounded: pass 1 reads, normalises, validates and drops
duplicates (remembering the groups they add); pass 2 checks id uniqueness over the whole
corpus, merges the remembered groups and writes the final table.
"""

import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from papersim.corpus import IngestConfig, NormalBatch, normalise_batch, read_source, resolve_format
from papersim.errors import PapersimError
from papersim.validation import RULES, RowRules, describe, duplicate_id_rows, row_failures

PAPERS_SCHEMA = pa.schema(
    [
        pa.field("paper_id", pa.string(), nullable=False),
        pa.field("title", pa.string(), nullable=False),
        pa.field("abstract", pa.string(), nullable=False),
        pa.field("source", pa.string(), nullable=False),  # the `name` of the source that first had it
        pa.field("groups", pa.list_(pa.string()), nullable=False),  # listing pages, categories
        pa.field("content_hash", pa.string(), nullable=False),  # blake2b of case-folded title + abstract
    ]
)
_ORIGIN = [pa.field("file", pa.string()), pa.field("line", pa.int64())]
SPILL_SCHEMA = pa.schema(list(PAPERS_SCHEMA) + _ORIGIN)
REJECTED_SCHEMA = pa.schema(
    [
        pa.field("paper_id", pa.string()),
        pa.field("title", pa.string()),
        pa.field("abstract", pa.string()),
        pa.field("source", pa.string()),
        *_ORIGIN,
        pa.field("rules", pa.list_(pa.string())),  # rule ids, see validation.RULES
        pa.field("reason", pa.string()),  # the same, readable
    ]
)
EXAMPLES_PER_RULE = 5  # rows quoted per failed rule in the error report


@dataclass
class Rejection:
    """Accumulates rejected rows (written as they come) and a few examples per rule for the report."""

    writer: pq.ParquetWriter
    rules: RowRules
    counts: Counter = field(default_factory=Counter)
    rows: int = 0
    examples: dict[str, list[str]] = field(default_factory=dict)

    def add(self, rows: list[dict]) -> None:
        if not rows:
            return
        for row in rows:
            self.rows += 1
            for rule in row["rules"]:
                self.counts[rule] += 1
                shown = self.examples.setdefault(rule, [])
                if len(shown) < EXAMPLES_PER_RULE:
                    shown.append(_example(row, rule))
            row["reason"] = "; ".join(describe(r, self.rules) for r in row["rules"])
        self.writer.write_table(pa.Table.from_pylist(rows, schema=REJECTED_SCHEMA))

    def report(self, header: str) -> str:
        lines = [header]
        for rule, count in self.counts.most_common():
            lines.append(f"  - rule '{rule}' ({describe(rule, self.rules)}): {count} row(s)")
            lines += [f"      {e}" for e in self.examples.get(rule, [])]
        return "\n".join(lines)


def _example(row: dict, rule: str) -> str:
    where = f"{row['file']} {row.get('unit', 'line')} {row['line']}"
    detail = row.get("detail") or ""
    if not detail:
        abstract = row.get("abstract") or ""
        if rule == "abstract_length" or rule == "abstract_not_empty":
            detail = f"abstract has {len(abstract)} characters"
        elif rule == "utf8_valid":
            text = (row.get("title") or "") + " | " + abstract
            at = text.find("\ufffd")
            detail = f"invalid bytes near {text[max(0, at - 30):at + 30]!r}"
        elif rule == "title_not_empty":
            detail = "title is empty"
        elif rule == "id_not_null":
            detail = "no id, title or abstract"
    return f"{where}: paper_id={row.get('paper_id')!r}: {detail}"


def _reject_rows(batch: NormalBatch, positions: dict[int, list[str]]) -> list[dict]:
    return [
        {"paper_id": batch.paper_id[i], "title": batch.title[i], "abstract": batch.abstract[i],
         "source": batch.source, "file": batch.file, "line": batch.lines[i], "unit": batch.unit, "rules": rules}
        for i, rules in sorted(positions.items())
    ]


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

    with tempfile.TemporaryDirectory(dir=papers_path.parent, prefix=".ingest-") as scratch, \
            pq.ParquetWriter(rejected_path, REJECTED_SCHEMA) as rejected_writer:
        spill_path = Path(scratch) / "pass1.parquet"
        rejected = Rejection(rejected_writer, rules)
        with pq.ParquetWriter(spill_path, SPILL_SCHEMA) as spill:
            for spec in cfg.sources:
                for raw in read_source(spec, cfg.batch_rows):
                    rows_read[spec.name] += len(raw) + len(raw.failures)
                    units[raw.file] = raw.unit
                    rejected.add([
                        {"paper_id": None, "title": None, "abstract": f.raw, "source": spec.name, "file": raw.file,
                         "line": f.line, "unit": raw.unit, "rules": ["parse_error"], "detail": f.message}
                        for f in raw.failures
                    ])
                    batch = normalise_batch(raw, spec)
                    failures = row_failures(batch.paper_id, batch.title, batch.abstract, rules) if len(batch) else {}
                    rejected.add(_reject_rows(batch, failures))
                    keep = []
                    for i in range(len(batch)):
                        if i in failures:
                            continue
                        pid, digest = batch.paper_id[i], batch.content_hash[i]
                        first = id_hash.get(pid)
                        if first is None:
                            owner = hash_id.get(digest)
                            if owner is not None:  # same title+abstract under another id: one paper
                                extra_groups.setdefault(owner, set()).update(batch.groups[i])
                                merged += 1
                                continue
                            id_hash[pid] = digest
                            hash_id[digest] = pid
                        elif first == digest:  # same id, same content: a repeat listing
                            extra_groups.setdefault(pid, set()).update(batch.groups[i])
                            merged += 1
                            continue
                        # else: same id, different content; kept so the uniqueness rule reports both rows
                        keep.append(i)
                    spill.write_table(pa.table({
                        "paper_id": [batch.paper_id[i] for i in keep],
                        "title": [batch.title[i] for i in keep],
                        "abstract": [batch.abstract[i] for i in keep],
                        "source": [batch.source] * len(keep),
                        "groups": [batch.groups[i] for i in keep],
                        "content_hash": [batch.content_hash[i] for i in keep],
                        "file": [batch.file] * len(keep),
                        "line": [batch.lines[i] for i in keep],
                    }, schema=SPILL_SCHEMA))

        spilled = pq.read_table(spill_path, columns=["paper_id"]).column("paper_id").to_pylist()
        conflicts = set(duplicate_id_rows(spilled)) if spilled else set()
        del spilled
        total_read = sum(rows_read.values())
        rejected_rows = rejected.rows + len(conflicts)

        # Conflicting rows are reported (and quarantined) before anything is decided.
        with pq.ParquetWriter(papers_path, PAPERS_SCHEMA) as out:
            position, written = 0, 0
            for rb in pq.ParquetFile(spill_path).iter_batches(batch_size=cfg.batch_rows):
                table = rb.to_pydict()
                n = rb.num_rows
                bad = [i for i in range(n) if position + i in conflicts]
                if bad:
                    rejected.add([
                        {"paper_id": table["paper_id"][i], "title": table["title"][i],
                         "abstract": table["abstract"][i], "source": table["source"][i], "file": table["file"][i],
                         "line": table["line"][i], "unit": units[table["file"][i]], "rules": ["id_unique"],
                         "detail": "this id has a different title/abstract in another row"}
                        for i in bad
                    ])
                good = [i for i in range(n) if position + i not in conflicts]
                groups = [
                    sorted(set(table["groups"][i]) | extra_groups.get(table["paper_id"][i], set())) for i in good
                ]
                out.write_table(pa.table({
                    "paper_id": [table["paper_id"][i] for i in good],
                    "title": [table["title"][i] for i in good],
                    "abstract": [table["abstract"][i] for i in good],
                    "source": [table["source"][i] for i in good],
                    "groups": groups,
                    "content_hash": [table["content_hash"][i] for i in good],
                }, schema=PAPERS_SCHEMA))
                position += n
                written += len(good)

    if total_read == 0:
        raise PapersimError("ingest: the sources hold no records")
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


def _rule_ids(cfg: IngestConfig) -> list[str]:
    return [r for r in RULES if cfg.require_title or r != "title_not_empty"]
