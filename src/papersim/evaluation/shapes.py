"""A titled corpus made into the shapes users bring, with its judgments carried along.

Quality is judged on collections of other shapes than the bundled ones: untitled abstracts,
title-only records, one-sentence documents. The one judged collection in the repository is
Cranfield (titled abstracts), so its shapes are made from it: the serving choice is checked on
each (benchmarks/selection_shapes.py) and the tests train on each.
"""

import hashlib
import re

import pandas as pd


SHAPES = ("titled", "untitled", "title_only", "one_sentence")
SENTENCE = re.compile(r"(?<=[.!?])\s+")  # Cranfield is lower case: any sentence end, not only before a capital
Qrels = dict[str, dict[str, int]]


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
