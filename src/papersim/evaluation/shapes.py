"""A titled corpus made into the shapes users bring, with its judgments carried along.

Quality is judged on collections of other shapes than the bundled ones: untitled abstracts,
title-only records, one-sentence documents. The one judged collection in the repository is
Cranfield (titled abstracts), so its shapes are made from it: the serving choice is checked on
each (benchmarks/selection_shapes.py) and the tests train on each.
"""

import hashlib
import re
from pathlib import Path

import pandas as pd

from papersim.evaluation.sets import _read_jsonl, _read_qrels


SHAPES = ("titled", "untitled", "title_only", "one_sentence")
SENTENCE = re.compile(r"(?<=[.!?])\s+")  # Cranfield is lower case: any sentence end, not only before a capital
Qrels = dict[str, dict[str, int]]


def read_beir_papers(folder: Path) -> tuple[pd.DataFrame, dict[str, str], Qrels]:
    """A BEIR folder as papers (paper_id, title, abstract; empty documents left out), its judged queries
    (id -> text, those with a relevant paper) and its judgments on those papers."""
    folder = Path(folder)
    docs = [d for d in _read_jsonl(folder / "corpus.jsonl") if (d.get("text") or "").strip()]
    papers = pd.DataFrame({"paper_id": [str(d["_id"]) for d in docs], "title": [d.get("title") or "" for d in docs],
                           "abstract": [d["text"].strip() for d in docs]})
    known = set(papers["paper_id"])
    qrels = {q: {d: r for d, r in judged.items() if d in known}
             for q, judged in _read_qrels(folder / "qrels" / "test.tsv").items()}
    queries = {str(q["_id"]): str(q.get("text", "")) for q in _read_jsonl(folder / "queries.jsonl")
               if qrels.get(str(q["_id"]))}
    return papers, queries, {q: qrels[q] for q in queries}


def reshape(papers: pd.DataFrame, qrels: Qrels, shape: str) -> tuple[pd.DataFrame, Qrels]:
    """`papers` (paper_id, title, abstract) as `shape`, with papers.parquet's groups (none) and content_hash,
    and `qrels` on its documents:

    - titled: as given; untitled: the abstracts alone;
    - title_only: the titles alone, as untitled text (ingest's `title_only: keep`); untitled papers drop out;
    - one_sentence: every sentence of at least 3 words its own untitled document (`<id>.<n>`); a query is
      relevant to each sentence of a relevant abstract, with that abstract's grade.
    """
    if shape == "titled":
        out = papers
    elif shape == "untitled":
        out = papers.assign(title="")
    elif shape == "title_only":
        out = papers.assign(abstract=papers["title"], title="")
        out = out[out["abstract"].str.strip() != ""]
    elif shape == "one_sentence":
        rows, parts = [], {}
        for pid, abstract in zip(papers["paper_id"], papers["abstract"]):
            sentences = [s.strip() for s in SENTENCE.split(abstract) if len(s.split()) >= 3]
            parts[pid] = [f"{pid}.{j}" for j in range(len(sentences))]
            rows += [(f"{pid}.{j}", "", s) for j, s in enumerate(sentences)]
        out = pd.DataFrame(rows, columns=["paper_id", "title", "abstract"])
        qrels = {q: {part: r for d, r in judged.items() for part in parts.get(d, [])} for q, judged in qrels.items()}
    else:
        raise ValueError(f"unknown shape {shape!r}: choose from {', '.join(SHAPES)}")
    out = out[["paper_id", "title", "abstract"]].reset_index(drop=True)
    out = out.assign(groups=[[] for _ in range(len(out))],
                     content_hash=[hashlib.sha1(f"{t}\n{a}".encode()).hexdigest() for t, a in
                                   zip(out["title"], out["abstract"])])
    known = set(out["paper_id"])
    return out, {q: {d: r for d, r in judged.items() if d in known} for q, judged in qrels.items()}
