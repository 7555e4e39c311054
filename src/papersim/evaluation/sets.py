"""Judged evaluation sets, BEIR folders and the held-out split, read into one shape."""

import csv
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from papersim.data.groups import similarity_groups
from papersim.errors import PapersimError
from papersim.retrieval.passage import passage_text
from papersim.sampling import seeded_sample


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
    sample: dict[str, int] = field(default_factory=dict)  # a capped set: queries/docs scored of those available
    doc_hashes: list[str] = field(default_factory=list)  # content hash per doc: exact duplicates (similar task)
    facts: dict[str, int] = field(default_factory=dict)  # what the set holds, for the report (papers, groups)


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


def held_out_set(papers: pd.DataFrame, split: pd.DataFrame, max_group_size: int, max_queries: int = 0,
                 max_docs: int = 0, seed: int = 0) -> EvalSet | None:
    """Held-out papers: each test title must find its own abstract among the papers' abstracts.

    Large corpora are scored on a seeded sample (0 = no cap): up to `max_queries` titled test papers,
    over their own abstracts plus other papers up to `max_docs` in all. None when no test paper has a
    title (a tiny corpus): the stage notes the set as skipped.
    """
    test_ids = set(split.loc[split["split"] == "test", "paper_id"])
    test = papers[papers["paper_id"].isin(test_ids) & (papers["title"].str.strip() != "")]
    if test.empty:
        return None
    available = {"queries": len(test), "docs": len(papers)}
    test = test.iloc[seeded_sample(test["paper_id"].tolist(), max_queries, seed)]
    asking = set(test["paper_id"])
    others = papers[~papers["paper_id"].isin(asking)]
    room = max(max_docs - len(asking), 0) if max_docs > 0 else len(others)
    kept = asking | set(others["paper_id"].iloc[seeded_sample(others["paper_id"].tolist(), room, seed)])
    papers = papers[papers["paper_id"].isin(kept)]
    capped = len(test) < available["queries"] or len(papers) < available["docs"]
    if capped:  # co-listing neighbours too: only for the sampled queries (each costs a search of the docs)
        test_ids = asking
    similarity = similarity_groups(papers["groups"], max_group_size)
    groups = {pid: frozenset(gs) for pid, gs in zip(papers["paper_id"], similarity)}
    digest = hashlib.sha256(pd.util.hash_pandas_object(
        papers[["paper_id", "content_hash"]], index=False).values.tobytes() + "\n".join(sorted(test_ids)).encode())
    return EvalSet(
        name="test_split", doc_ids=list(papers["paper_id"]), doc_texts=list(papers["abstract"]),
        query_ids=list(test["paper_id"]), query_texts=list(test["title"]),
        qrels={pid: {pid: 1} for pid in test["paper_id"]}, content_hash=digest.hexdigest()[:32],
        groups=groups, group_queries=sorted(pid for pid in test_ids if groups.get(pid)),
        sample={"queries": len(test), "of_queries": available["queries"], "docs": len(papers),
                "of_docs": available["docs"]} if capped else {},
    )


def colisting_set(papers: pd.DataFrame, asking: set[str], pool: set[str], max_group_size: int, name: str,
                  max_queries: int = 0, max_docs: int = 0, seed: int = 0,
                  only_groups: set[str] | None = None) -> EvalSet | None:
    """"Papers similar to this one", judged by co-listing: each paper of `asking` is the query (its title and
    abstract) over the papers of `pool` (itself included, as in the served index); the relevant papers are
    those sharing a similarity group with it (a listing page, a small category: `similarity_groups`, sizes
    counted over all `papers`), itself and its exact duplicates excepted; with `only_groups`, only those
    groups count (unseen listings: the held-out ones). Only askers with at least one such paper in the pool
    are queries. Large sets are capped as `held_out_set`. None when no paper asks.
    """
    papers = papers.reset_index(drop=True)
    similarity = similarity_groups(papers["groups"], max_group_size)
    if only_groups is not None:
        similarity = [[g for g in gs if g in only_groups] for gs in similarity]
    groups = {pid: frozenset(gs) for pid, gs in zip(papers["paper_id"], similarity)}
    in_pool = papers["paper_id"].isin(pool).to_numpy()
    members: dict[str, set[str]] = {}
    for pid, gs in zip(papers["paper_id"][in_pool], papers.loc[in_pool, "paper_id"].map(groups)):
        for g in gs:
            members.setdefault(g, set()).add(pid)
    hash_of = dict(zip(papers["paper_id"], papers["content_hash"]))
    relevant = {}
    for pid in sorted(asking):
        found = {d for g in groups.get(pid, ()) for d in members.get(g, ())}
        found = {d for d in found if d != pid and hash_of[d] != hash_of[pid]}
        if found:
            relevant[pid] = found
    if not relevant:
        return None
    available = {"queries": len(relevant), "docs": int(in_pool.sum())}
    queries = [relevant_id for relevant_id in sorted(relevant)]
    queries = [queries[i] for i in seeded_sample(queries, max_queries, seed)]
    docs = papers[in_pool]
    keep = set(queries) | {d for q in queries for d in relevant[q]}
    others = docs[~docs["paper_id"].isin(keep)]
    room = max(max_docs - len(keep), 0) if max_docs > 0 else len(others)
    keep |= set(others["paper_id"].iloc[seeded_sample(others["paper_id"].tolist(), room, seed)])
    docs = docs[docs["paper_id"].isin(keep) | docs["paper_id"].isin(queries)]
    text_of = {pid: passage_text(t, a) for pid, t, a in zip(docs["paper_id"], docs["title"], docs["abstract"])}
    for pid in queries:  # an asker outside the pool is still searched from: its text joins the corpus
        if pid not in text_of:
            row = papers[papers["paper_id"] == pid].iloc[0]
            text_of[pid] = passage_text(row["title"], row["abstract"])
    doc_ids = list(text_of)
    qrels = {q: {d: 1 for d in sorted(relevant[q]) if d in text_of} for q in queries}
    used_groups = {g for q in queries for g in groups[q] if any(d in members.get(g, ()) for d in qrels[q])}
    capped = len(queries) < available["queries"] or len(doc_ids) < available["docs"]
    digest = hashlib.sha256(("\n".join(f"{d}:{hash_of[d]}" for d in sorted(doc_ids)) + "|"
                             + "\n".join(queries)).encode())
    return EvalSet(
        name=name, doc_ids=doc_ids, doc_texts=[text_of[d] for d in doc_ids], query_ids=queries,
        query_texts=[text_of[q] for q in queries], qrels=qrels, content_hash=digest.hexdigest()[:32],
        groups={pid: groups[pid] for pid in doc_ids}, doc_hashes=[hash_of[d] for d in doc_ids],
        facts={"papers": len(queries), "groups": len(used_groups), "docs": len(doc_ids),
               "relevant_per_paper": round(sum(map(len, qrels.values())) / len(queries), 1)},
        sample={"queries": len(queries), "of_queries": available["queries"], "docs": len(doc_ids),
                "of_docs": available["docs"]} if capped else {},
    )


def listing_sets(papers: pd.DataFrame, split: pd.DataFrame, part: str, max_group_size: int, pool: set[str],
                 max_queries: int = 0, max_docs: int = 0, seed: int = 0, prefix: str = "similar"
                 ) -> dict[str, EvalSet]:
    """"Papers similar to this one" for the papers of split `part`, in two settings (split.parquet as
    mine_pairs writes it; an old one without `unseen_groups` has known listings only):

    - `<prefix>` (known listings): the part's papers of no held-out listing ask for their co-listed papers,
      which training has mostly seen (the listing's other papers are training papers);
    - `<prefix>_unseen` (unseen listings): the papers of the part's held-out listings ask for each other;
      no paper of those listings was in any training pair or choice.

    Both search `pool`; a setting with no asking paper is left out."""
    rows = split[split["split"] == part]
    held = rows["unseen_groups"] if "unseen_groups" in rows else pd.Series([[]] * len(rows), index=rows.index)
    unseen_mask = held.map(len).to_numpy() > 0
    known_papers = set(rows.loc[~unseen_mask, "paper_id"])
    unseen_papers = set(rows.loc[unseen_mask, "paper_id"])
    groups = {g for gs in held for g in gs}
    sets = {prefix: colisting_set(papers, known_papers, pool, max_group_size, prefix, max_queries, max_docs, seed),
            f"{prefix}_unseen": colisting_set(papers, unseen_papers, pool, max_group_size, f"{prefix}_unseen",
                                              max_queries, max_docs, seed, only_groups=groups)}
    return {name: s for name, s in sets.items() if s is not None}


def listing_clusters(eval_set: EvalSet, query_ids: list[str]) -> list[str]:
    """Each query paper's listing (its first similarity group by name): the unit a cluster bootstrap resamples."""
    groups = eval_set.groups or {}
    return [min(groups.get(q) or {q}) for q in query_ids]
