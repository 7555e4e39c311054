"""Rows the ingest stage sets aside: written to rejected.parquet as they come, counted per rule,
and a few quoted per rule in the report that fails the stage.
"""

from collections import Counter
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.parquet as pq

from papersim.data.normalise import NormalBatch
from papersim.data.validation import RowRules, describe

REJECTED_SCHEMA = pa.schema(
    [
        pa.field("paper_id", pa.string()),
        pa.field("title", pa.string()),
        pa.field("abstract", pa.string()),
        pa.field("source", pa.string()),
        pa.field("file", pa.string()),
        pa.field("line", pa.int64()),  # line of a text file, row of a Parquet file (1-based)
        pa.field("rules", pa.list_(pa.string())),  # rule ids, see validation.RULES
        pa.field("reason", pa.string()),  # the same, readable (with the bad value of a metadata rule)
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
            details = row.get("details", {})  # the bad value, where the row's stored fields do not show it
            row["reason"] = "; ".join(describe(r, self.rules) + (f": {details[r]}" if r in details else "")
                                      for r in row["rules"])
        self.writer.write_table(pa.Table.from_pylist(rows, schema=REJECTED_SCHEMA))

    def report(self, header: str) -> str:
        lines = [header]
        for rule, count in self.counts.most_common():
            lines.append(f"  - rule '{rule}' ({describe(rule, self.rules)}): {count} row(s)")
            lines += [f"      {e}" for e in self.examples.get(rule, [])]
        return "\n".join(lines)


def _example(row: dict, rule: str) -> str:
    where = f"{row['file']} {row.get('unit', 'line')} {row['line']}"
    detail = row.get("details", {}).get(rule) or row.get("detail") or ""
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


def reject_rows(batch: NormalBatch, positions: dict[int, list[str]]) -> list[dict]:
    """Rows for `Rejection.add`: the batch rows at `positions` (row -> rules it broke), with file and line, and
    what is wrong where normalisation found it (a date that does not parse)."""
    if not positions:
        return []
    idx = pa.array(sorted(positions), pa.int64())
    pick = lambda arr: arr.take(idx).to_pylist()
    return [
        {"paper_id": pid, "title": title, "abstract": abstract, "source": batch.source, "file": batch.file,
         "line": batch.lines[i], "unit": batch.unit, "rules": positions[i], "details": batch.invalid.get(i, {})}
        for i, pid, title, abstract in zip(idx.to_pylist(), pick(batch.paper_id), pick(batch.title),
                                           pick(batch.abstract))
    ]
