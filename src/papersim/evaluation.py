"""The evaluate stage's library: judged sets, the systems compared on them, and their scores.

Systems, on the same queries in the same run: `bm25` (bm25s), `base` (the untuned model),
`trained` (this run's model), `hybrid` (reciprocal-rank fusion of bm25 and trained),
`base_hybrid` (the same fusion of bm25 and base: what a user builds without papersim),
`served` (exactly what `papersim search` answers by default: the served encoder fused with bm25
as the train stage chose, papersim.selection) and `champion` (the registry's current model, when
one is given). Metrics come from papersim.metrics (trec_eval definitions, graded relevance as
given); `served` is compared with every other system query by query (papersim.significance).
"""

import csv
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping

import numpy as np
import pandas as pd

from papersim.errors import PapersimError
from papersim.fusion import Fusion, fuse_rankings
from papersim.metrics import per_query_scores, recall_curve
from papersim.retrieval import BM25, Hits, Rankings, dense_hits, lexical_hits, passage_text
from papersim.significance import PairedDifference, paired_difference

SYSTEMS = ("bm25", "base", "trained", "hybrid", "base_hybrid", "served", "champion")
DENSE = ("base", "trained", "champion")  # dense systems reported as such
FUSED = {"hybrid": "trained", "base_hybrid": "base", "served": "served"}  # fused system -> its dense part
BASELINES = ("bm25", "base", "base_hybrid")  # what a user has without papersim: `served` must beat each
COMPARED_METRIC = "ndcg@10"  # the metric of the paired comparisons in the report


@dataclass(frozen=True)
class EvaluateConfig:
    """params.yaml `evaluate` section."""

    beir_sets: list[str] = field(default_factory=lambda: ["data/raw/beir/cranfield"])  # BEIR folders, own corpus each
    test_split: bool = True  # also score the held-out split: title -> own abstract, co-listing precision
    systems: list[str] = field(default_factory=lambda: list(SYSTEMS))  # a subset of SYSTEMS
    base_model: str = ""  # the untuned baseline; "" = the packaged all-MiniLM-L6-v2
    stemmer: str = "english"  # BM25's Snowball stemmer ("" = none), as Lucene's English analyzer
    rrf_k: int = 60  # RRF's constant: 60 is Cormack et al.'s default and robust across collections
    depth: int = 100  # ranked documents per query and system: recall@100 and MAP@100 need 100
    backend: str = "auto"  # encoder backend (papersim.encoding): auto = openvino on a CPU, torch on a GPU
    max_seq_length: int = 128  # tokens per text when encoding; same as training
    batch_size: int = 32  # texts per encoding batch
    max_group_size: int = 100  # co-listing groups larger than this say little about similarity (as mine_pairs)
    recall_ks: list[int] = field(default_factory=lambda: [1, 2, 5, 10, 20, 50, 100])  # the recall@k curve

    def __post_init__(self) -> None:
        unknown = set(self.systems) - set(SYSTEMS)
        if unknown:
            raise ValueError(f"unknown systems {sorted(unknown)}: choose from {', '.join(SYSTEMS)}")
        for fused, part in FUSED.items():
            if fused in self.systems and not ({"bm25", part} - {"served"}) <= set(self.systems):
                raise ValueError(f"the {fused} system fuses bm25 and {part}: list both")
        if min(self.rrf_k, self.depth, self.batch_size, self.max_seq_length) < 1:
            raise ValueError("rrf_k, depth, batch_size and max_seq_length must be positive")
        if not self.beir_sets and not self.test_split:
            raise ValueError("nothing to evaluate: give beir_sets or set test_split: true")


@dataclass(frozen=True)
class EvalSet:
    """Queries, a corpus of their own, and judgments (query id -> doc id -> relevance)."""

    name: str
    doc_ids: list[str]
    doc_texts: list[str]
    query_ids: list[str]
    query_texts: list[str]
    qrels: dict[str, dict[str, int]]
    content_hash: str  # of what was read: equal hashes mean the same set
    groups: dict[str, frozenset[str]] | None = None  # doc id -> co-listing groups, for colisted_precision@10
    group_queries: list[str] = field(default_factory=list)  # doc ids whose neighbours are checked for co-listing


def _read_jsonl(path: Path) -> list[dict]:
    if not path.is_file():
        raise PapersimError(f"{path}: not found (a BEIR set needs corpus.jsonl, queries.jsonl, qrels/test.tsv)")
    rows = []
    with open(path, encoding="utf-8") as handle:
        for line_no, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise PapersimError(f"{path}, line {line_no}: not valid JSON ({exc.msg})") from None
            if "_id" not in row:
                raise PapersimError(f"{path}, line {line_no}: rule `id_present` failed (no `_id` field)")
            rows.append(row)
    return rows


def _read_qrels(path: Path) -> dict[str, dict[str, int]]:
    if not path.is_file():
        raise PapersimError(f"{path}: not found (a BEIR set needs corpus.jsonl, queries.jsonl, qrels/test.tsv)")
    qrels: dict[str, dict[str, int]] = {}
    with open(path, encoding="utf-8", newline="") as handle:
        reader = csv.reader(handle, delimiter="\t")
        for line_no, row in enumerate(reader, start=1):
            if line_no == 1 and row[:1] == ["query-id"]:
                continue
            try:
                query, doc, score = row
                qrels.setdefault(query, {})[doc] = int(score)
            except ValueError:
                raise PapersimError(f"{path}, line {line_no}: expected `query-id<TAB>corpus-id<TAB>integer score`, "
                                    f"got {row!r}") from None
    return qrels


def _files_hash(paths: list[Path]) -> str:
    digest = hashlib.sha256()
    for path in paths:
        digest.update(path.read_bytes())
    return digest.hexdigest()[:32]


def load_beir_set(folder: Path) -> EvalSet:
    """A BEIR folder: corpus.jsonl (_id, title, text), queries.jsonl (_id, text), qrels/test.tsv."""
    folder = Path(folder)
    files = [folder / "corpus.jsonl", folder / "queries.jsonl", folder / "qrels" / "test.tsv"]
    docs, queries, qrels = _read_jsonl(files[0]), _read_jsonl(files[1]), _read_qrels(files[2])
    docs = [d for d in docs if (d.get("title") or "").strip() or (d.get("text") or "").strip()]
    doc_ids = [str(d["_id"]) for d in docs]
    known_docs = set(doc_ids)
    qrels = {q: {d: r for d, r in judged.items() if d in known_docs} for q, judged in qrels.items()}
    queries = [q for q in queries if str(q["_id"]) in qrels]
    missing = set(qrels) - {str(q["_id"]) for q in queries}
    if missing:
        raise PapersimError(f"{files[2]}: {len(missing)} judged queries are not in {files[1]} "
                            f"(e.g. {sorted(missing)[:3]})")
    return EvalSet(
        name=folder.name, doc_ids=doc_ids,
        doc_texts=[passage_text(d.get("title") or "", d.get("text") or "") for d in docs],
        query_ids=[str(q["_id"]) for q in queries], query_texts=[str(q.get("text", "")) for q in queries],
        qrels=qrels, content_hash=_files_hash(files),
    )


def held_out_set(papers: pd.DataFrame, split: pd.DataFrame, max_group_size: int) -> EvalSet | None:
    """Held-out papers: each test title must find its own abstract among all papers' abstracts.

    None when no test paper has a title (a tiny corpus): the stage notes the set as skipped.
    """
    test_ids = set(split.loc[split["split"] == "test", "paper_id"])
    test = papers[papers["paper_id"].isin(test_ids) & (papers["title"].str.strip() != "")]
    if test.empty:
        return None
    sizes = pd.Series([g for gs in papers["groups"] for g in gs]).value_counts()
    small = set(sizes[(sizes >= 2) & (sizes <= max_group_size)].index)  # a group of one has no one to find
    groups = {pid: frozenset(g for g in gs if g in small) for pid, gs in zip(papers["paper_id"], papers["groups"])}
    digest = hashlib.sha256(pd.util.hash_pandas_object(
        papers[["paper_id", "content_hash"]], index=False).values.tobytes() + "\n".join(sorted(test_ids)).encode())
    return EvalSet(
        name="test_split", doc_ids=list(papers["paper_id"]), doc_texts=list(papers["abstract"]),
        query_ids=list(test["paper_id"]), query_texts=list(test["title"]),
        qrels={pid: {pid: 1} for pid in test["paper_id"]}, content_hash=digest.hexdigest()[:32],
        groups=groups, group_queries=sorted(pid for pid in test_ids if groups.get(pid)),
    )


Embed = Callable[[list[str]], np.ndarray]  # texts -> (n, dim) unit vectors


def _colisted_precision(neighbours: Mapping[str, list[str]], groups: Mapping[str, frozenset[str]], k: int) -> float:
    """Mean share of a paper's k nearest neighbours (itself excluded) that share a group with it."""
    shares = [sum(bool(groups.get(n, frozenset()) & groups[pid]) for n in found[:k]) / k
              for pid, found in neighbours.items()]
    return float(np.mean(shares)) if shares else float("nan")


@dataclass(frozen=True)
class SetResult:
    scores: dict[str, dict[str, float]]  # system -> metric -> value
    curves: dict[str, dict[int, float]]  # system -> k -> recall@k
    n_queries: int
    n_skipped: int
    content_hash: str = ""  # of the set scored: the champion gate compares only equal sets
    query_ids: list[str] = field(default_factory=list)  # the scored queries, in the order of `per_query`
    per_query: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)  # system -> metric -> (n_queries,)

    def served_versus(self, metric: str = COMPARED_METRIC) -> dict[str, PairedDifference]:
        """served minus each other system on `metric`, query by query (empty without `served`)."""
        if "served" not in self.per_query:
            return {}
        served = self.per_query["served"][metric]
        return {system: paired_difference(served, values[metric])
                for system, values in self.per_query.items() if system != "served"}


def _dense_parts(wanted: list[str]) -> list[str]:
    parts = [s for s in wanted if s in DENSE] + [part for s, part in FUSED.items() if s in wanted]
    return list(dict.fromkeys(parts))


def evaluate_set(eval_set: EvalSet, encoders: Mapping[str, Embed], cfg: EvaluateConfig,
                 served: Fusion | None = None) -> SetResult:
    """Score every configured system on one set.

    `encoders` maps dense parts (base, trained, champion, and `served`: the served encoder) to
    embedders; `served` is the served system's fusion. A system whose parts are missing is left out.
    """
    rrf = Fusion(method="rrf", rrf_k=cfg.rrf_k, depth=cfg.depth)
    fusions = {"hybrid": rrf, "base_hybrid": rrf, "served": served}
    wanted = [s for s in cfg.systems if (s not in DENSE or s in encoders)
              and (s not in FUSED or (FUSED[s] in encoders and fusions[s] is not None))]
    row_of = {pid: row for row, pid in enumerate(eval_set.doc_ids)}
    group_rows = np.array([row_of[pid] for pid in eval_set.group_queries] if eval_set.groups else [], dtype=np.int64)
    lexical: dict[str, Hits] = {}
    lexical_nb: dict[str, Hits] = {}  # a paper's neighbours by its own text (itself excluded)
    if "bm25" in wanted or any(s in FUSED for s in wanted):
        bm25 = BM25(eval_set.doc_ids, eval_set.doc_texts, cfg.stemmer)
        lexical = lexical_hits(bm25, eval_set.query_ids, eval_set.query_texts, cfg.depth)
        if len(group_rows):
            found = lexical_hits(bm25, eval_set.group_queries, [eval_set.doc_texts[r] for r in group_rows],
                                 cfg.depth + 1)
            lexical_nb = {pid: ([d for d in ids if d != pid], [s for d, s in zip(ids, scores) if d != pid])
                          for pid, (ids, scores) in found.items()}
    dense: dict[str, dict[str, Hits]] = {}
    dense_nb: dict[str, dict[str, Hits]] = {}
    vectors: dict[int, tuple[np.ndarray, np.ndarray]] = {}  # one encoding per embedder, shared by its parts
    for part in _dense_parts(wanted):
        embed = encoders[part]
        if id(embed) not in vectors:
            vectors[id(embed)] = (embed(eval_set.doc_texts), embed(eval_set.query_texts))  # (n_docs|n_queries, dim)
        docs, queries = vectors[id(embed)]
        dense[part] = dense_hits(eval_set.doc_ids, docs, eval_set.query_ids, queries, cfg.depth)
        if len(group_rows):
            dense_nb[part] = dense_hits(eval_set.doc_ids, docs, eval_set.group_queries, docs[group_rows], cfg.depth,
                                        exclude=group_rows)
    rankings: dict[str, Rankings] = {}
    neighbours: dict[str, Rankings] = {}
    for system in wanted:
        if system in FUSED:
            rankings[system] = fuse_rankings(lexical, dense[FUSED[system]], fusions[system])
            if len(group_rows):
                neighbours[system] = fuse_rankings(lexical_nb, dense_nb[FUSED[system]], fusions[system])
        else:
            hits, hits_nb = (lexical, lexical_nb) if system == "bm25" else (dense[system], dense_nb.get(system, {}))
            rankings[system] = {qid: list(h[0]) for qid, h in hits.items()}
            if len(group_rows):
                neighbours[system] = {pid: list(h[0]) for pid, h in hits_nb.items()}
    scores, curves, per_query = {}, {}, {}
    query_ids: list[str] = []
    for system in wanted:
        query_ids, values = per_query_scores(rankings[system], eval_set.qrels)
        per_query[system] = values
        scores[system] = {metric: float(np.mean(v)) for metric, v in values.items()}
        if system in neighbours:
            scores[system]["colisted_precision@10"] = _colisted_precision(neighbours[system], eval_set.groups, 10)
        curves[system] = recall_curve(rankings[system], eval_set.qrels, cfg.recall_ks)
    n_skipped = len(eval_set.qrels) - len(query_ids)
    return SetResult(scores=scores, curves=curves, n_queries=len(query_ids), n_skipped=n_skipped,
                     content_hash=eval_set.content_hash, query_ids=query_ids, per_query=per_query)


def eval_report(results: Mapping[str, SetResult]) -> dict:
    """eval.json: {set: {system: {metric: value}, served_vs: {system: {...}}, n_queries, n_skipped_queries,
    content_hash}}."""
    report = {}
    for name, r in results.items():
        versus = {system: {f"{COMPARED_METRIC}_diff": d.mean, "ci_low": d.low, "ci_high": d.high,
                           "p_value": d.p_value} for system, d in r.served_versus().items()}
        report[name] = {**r.scores, **({"served_vs": versus} if versus else {}), "n_queries": r.n_queries,
                        "n_skipped_queries": r.n_skipped, "content_hash": r.content_hash}
    return report


def comparison_lines(result: SetResult) -> list[str]:
    """One line per system: served's mean nDCG@10 difference, its 95% CI and the randomisation p-value."""
    lines = []
    for system, d in result.served_versus().items():
        verdict = "better" if d.low > 0 else "worse" if d.high < 0 else "no significant difference"
        lines.append(f"- served vs {system}: {COMPARED_METRIC} {d.mean:+.4f} (95% CI {d.low:+.4f} to {d.high:+.4f}; "
                     f"paired randomisation p = {d.p_value:.4f}; {verdict})")
    return lines


def markdown_table(results: Mapping[str, SetResult], notes: list[str]) -> str:
    """A readable table per set (one row per system, best value in bold), then served against each system."""
    lines = []
    for name, r in results.items():
        metrics = list(dict.fromkeys(m for s in r.scores.values() for m in s))
        lines += [f"### {name} ({r.n_queries} queries, {r.n_skipped} skipped: no relevant document)", "",
                  "| system | " + " | ".join(metrics) + " |", "|---" * (len(metrics) + 1) + "|"]
        best = {m: max(s.get(m, float("-inf")) for s in r.scores.values()) for m in metrics}
        for system, values in r.scores.items():
            cells = [f"**{values[m]:.4f}**" if values.get(m) == best[m] else f"{values.get(m, float('nan')):.4f}"
                     for m in metrics]
            lines.append(f"| {system} | " + " | ".join(cells) + " |")
        lines.append("")
        comparisons = comparison_lines(r)
        if comparisons:
            lines += comparisons + [""]
    lines += [f"- {note}" for note in notes]
    return "\n".join(lines) + "\n"


def per_query_table(results: Mapping[str, SetResult]) -> pd.DataFrame:
    """One row per set, system and scored query, one column per metric (eval_per_query.parquet)."""
    frames = [pd.DataFrame({"set": name, "system": system, "query_id": r.query_ids, **values})
              for name, r in results.items() for system, values in r.per_query.items()]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["set", "system", "query_id"])


def curve_table(results: Mapping[str, SetResult]) -> pd.DataFrame:
    """Recall@k per k (rows) for each set/system (columns `<set>/<system>`)."""
    columns = {f"{name}/{system}": curve for name, r in results.items() for system, curve in r.curves.items()}
    frame = pd.DataFrame(columns)
    frame.index.name = "k"
    return frame.reset_index()


def save_curve_plot(table: pd.DataFrame, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sets = sorted({c.split("/")[0] for c in table.columns if c != "k"})
    fig, axes = plt.subplots(1, len(sets), figsize=(5 * len(sets), 4), squeeze=False)
    for ax, name in zip(axes[0], sets):
        for column in (c for c in table.columns if c.startswith(f"{name}/")):
            ax.plot(table["k"], table[column], marker="o", label=column.split("/")[1])
        ax.set(xscale="log", xlabel="k", ylabel="recall@k", title=name)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100, format="png")
    plt.close(fig)
