"""Answering "papers similar to this text / this paper" from the index that build_index wrote.

The index folder (papersim.retrieval.index) holds the faiss index, its ids, BM25 and `index.json`:
how it was built, the encoder the query encoder must match, and `serving`, the served encoder and
fusion that the train stage chose and evaluate measured as `served`.
"""

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from papersim.errors import PapersimError
from papersim.retrieval import ann
from papersim.retrieval.explain import why
from papersim.retrieval.filters import NO_FILTER, Filter, allowed_rows, date_bounds, group_rows
from papersim.retrieval.fusion import Fusion, fuse
from papersim.retrieval.index import METADATA_COLUMNS, read_details, read_index_folder, read_similar_index
from papersim.retrieval.lexical import BM25
from papersim.retrieval.passage import passage_text
from papersim.retrieval.similar import Similar, answer_similar, duplicates, excluded_rows

MODES = ("served", "dense", "bm25", "hybrid")  # served: the fusion stored with the index; hybrid: plain RRF
MAX_K = 100  # results per request: deeper lists are what the evaluation depth covers, not what a reader reads
MAX_QUERY_CHARS = 10_000  # longer than any abstract: beyond this a request is a mistake, not a query
HYBRID = Fusion(method="rrf", rrf_k=60, depth=100)  # mode hybrid: RRF as evaluate's `hybrid` (its defaults)


@dataclass
class SearchIndex:
    index: object  # faiss.Index
    ids: pd.DataFrame
    info: dict
    bm25: BM25
    embed: Callable[[list[str]], np.ndarray] | None = None  # set by the caller: the matching encoder
    papers: pd.DataFrame | None = None  # abstract, source, groups per row (None: a folder built without them)
    similar_index: object = None  # faiss.Index of the similar task's encoder (None: `index`, the same encoder)

    @property
    def fusion(self) -> Fusion:
        """The served fusion; an index built before fusion was chosen per corpus serves plain RRF."""
        serving = self.info.get("serving")
        return Fusion.from_dict(serving["fusion"]) if serving else HYBRID

    @property
    def similar(self) -> Similar | None:
        """How papers are answered; None for an index built before that was chosen (dense neighbours only)."""
        if "similar" not in self.info or self.papers is None:
            return None
        return Similar.from_dict(self.info["similar"])

    @cached_property
    def row_of(self) -> dict[str, int]:
        return {pid: row for row, pid in enumerate(self.ids["paper_id"])}

    @cached_property
    def duplicates(self) -> dict[int, list[int]]:
        return duplicates(self.ids["content_hash"].tolist())

    @cached_property
    def date_bounds(self) -> tuple[np.ndarray, np.ndarray] | None:
        """Each row's first and last day (papersim.retrieval.filters); None for an index without dates."""
        if self.papers is None or "date" not in self.papers.columns:
            return None
        return date_bounds(self.papers["date"].tolist())

    @cached_property
    def group_rows(self) -> dict[str, np.ndarray] | None:
        """Group or category -> its rows; None for an index built without paper details."""
        if self.papers is None:
            return None
        n = len(self.papers)
        groups, categories = (self.papers[c] if c in self.papers.columns else [None] * n
                              for c in ("groups", "categories"))
        return group_rows([*(g if g is not None else ()), *(c if c is not None else ())]
                          for g, c in zip(groups, categories))

    def allowed(self, flt: Filter) -> np.ndarray | None:
        """The rows a filtered request may return (sorted); None when `flt` narrows nothing."""
        if not flt.active:
            return None
        return allowed_rows(flt, len(self.ids), self.date_bounds, self.group_rows)


def load_search_index(folder: Path) -> SearchIndex:
    """Read an index folder (papersim.retrieval.index owns its layout) with its search effort set."""
    built, bm25 = read_index_folder(folder)
    ann.set_search_effort(built.index, built.info.get("search_effort", 0))
    similar = read_similar_index(folder)
    if similar is not None:
        ann.set_search_effort(similar, built.info.get("similar_search_effort", 0))
    return SearchIndex(index=built.index, ids=built.ids, info=built.info, bm25=bm25, papers=read_details(folder),
                       similar_index=similar if similar is not None else built.index)


def served_encoder_folder(info: dict) -> str:
    """The encoder an index serves, from its index.json: the trained folder or the base model's."""
    from papersim.encoders.encode import model_folder
    from papersim.retrieval.choice import Serving

    trained = info.get("model", "models/encoder")
    folder = Serving.from_dict(info["serving"]).encoder_folder(trained) if "serving" in info else trained
    return str(model_folder(folder))


def attach_encoder(si: SearchIndex, folder: str | Path | None = None, backend: str = "torch") -> None:
    """Give the index its query encoder: `folder`, or the one its index.json serves.

    torch (the default, for one-off queries): starts without the ~1 s OpenVINO conversion. A server
    passes "auto": OpenVINO on CPUs encodes a query in ~2.3 ms against torch's ~9.7 ms. Either way
    the vectors match the index's to cosine >= 0.9999 as long as the weights are the same; other
    weights are refused.
    """
    from papersim.encoders.encode import load_text_encoder

    folder = str(folder) if folder is not None else served_encoder_folder(si.info)
    encoder = load_text_encoder(folder, backend, si.info.get("max_seq_length", 128))
    if encoder.fingerprint != si.info.get("model_fingerprint"):
        raise PapersimError(f"the index was built with another model than {folder}: rebuild it "
                            "(`dvc repro build_index`)")
    si.embed = encoder.encode


def check_request(k: int, mode: str = "dense", query: str | None = None) -> None:
    if not 1 <= k <= MAX_K:
        raise PapersimError(f"k must be between 1 and {MAX_K}, got {k}")
    if mode not in MODES:
        raise PapersimError(f"unknown mode {mode!r}: use one of {', '.join(MODES)}")
    if query is not None:
        if not query.strip():
            raise PapersimError("empty query: give the text to search for")
        if len(query) > MAX_QUERY_CHARS:
            raise PapersimError(f"query too long ({len(query)} characters, at most {MAX_QUERY_CHARS})")


ANSWER_COLUMNS = ["rank", "score", "paper_id", "title", *METADATA_COLUMNS, "why"]
LIST_COLUMNS = ("authors", "categories", "why")  # lists of strings: empty when a paper has none


def _table(si: SearchIndex, rows: list[int], scores: list[float], reasons: list[list[str]] | None = None
           ) -> pd.DataFrame:
    """One answer: rank, score, paper_id, title, the papers' metadata (authors, date, url, venue,
    categories; empty where a paper or an older index has none) and `why`, the query's words with the
    largest part in each paper's BM25 match."""
    found = si.ids.iloc[rows]
    table = {"rank": range(1, len(rows) + 1), "score": np.round(scores, 4),
             "paper_id": found["paper_id"].to_list(), "title": found["title"].to_list()}
    for column in METADATA_COLUMNS:
        if si.papers is not None and column in si.papers.columns:
            values = si.papers[column]
            table[column] = [_plain(values.iat[r], column) for r in rows]
        else:
            table[column] = [[] if column in LIST_COLUMNS else None for _ in rows]
    table["why"] = reasons if reasons is not None else [[] for _ in rows]
    # object columns: a missing date stays None (pandas' string dtype would make it NaN, which JSON lacks)
    return pd.DataFrame({c: pd.Series(v, dtype="object") if c in METADATA_COLUMNS or c == "why" else v
                         for c, v in table.items()}, columns=ANSWER_COLUMNS)


def _plain(value, column: str):
    """A stored value as an answer carries it: a list of str for list columns, else a str or None."""
    if column in LIST_COLUMNS:
        return [str(v) for v in value] if value is not None else []
    return None if value is None or (isinstance(value, float) and value != value) else str(value)


def _dense(si: SearchIndex, vector: np.ndarray, k: int, skip_row: int | None = None,
           within: np.ndarray | None = None) -> tuple[list[int], list[float]]:
    return _dense_batch(si, vector[None, :], k, skip_row, within)[0]


def _dense_batch(si: SearchIndex, vectors: np.ndarray, k: int, skip_row: int | None = None,
                 within: np.ndarray | None = None) -> list[tuple[list[int], list[float]]]:
    """One faiss search for (n, dim) query vectors: per query, the top-k rows and scores (of the rows
    `within` only, when a filter gives them)."""
    vectors, depth = np.ascontiguousarray(vectors, dtype=np.float32), k + (skip_row is not None)
    scores, rows = (si.index.search(vectors, depth) if within is None else
                    ann.search_within(si.index, vectors, depth, within))
    out = []
    for row_ids, row_scores in zip(rows, scores):
        pairs = [(int(r), float(s)) for r, s in zip(row_ids, row_scores) if r >= 0 and r != skip_row]
        out.append(([r for r, _ in pairs[:k]], [s for _, s in pairs[:k]]))
    return out


def _bm25_batch(si: SearchIndex, queries: list[str], k: int,
                within: np.ndarray | None = None) -> list[tuple[list[int], list[float]]]:
    """One BM25 call: per query, the matching rows (score > 0: a shared term) and scores (of the rows
    `within` only, when a filter gives them: every row is scored, then the best of those are taken)."""
    if within is None:
        rows, scores = si.bm25.search(queries, k)
        return [([int(r) for r in row[score > 0]], score[score > 0].tolist()) for row, score in zip(rows, scores)]
    return [top_rows(scores, within, k) for scores in si.bm25.score_rows(queries)]


def top_rows(scores: np.ndarray | None, within: np.ndarray, k: int) -> tuple[list[int], list[float]]:
    """The k best of `within` by `scores` (n_docs,), score descending then row; rows scoring 0 left out."""
    if scores is None or not len(within):
        return [], []
    kept = within[scores[within] > 0]
    if len(kept) > k:
        kept = kept[np.argpartition(-scores[kept], k - 1)[:k]]
    kept = kept[np.lexsort((kept, -scores[kept]))]
    return kept.tolist(), scores[kept].astype(float).tolist()


def search_texts(si: SearchIndex, queries: list[str], ks: list[int], modes: list[str],
                 filters: list[Filter] | None = None) -> list[pd.DataFrame]:
    """search_text for many queries at once: one encoding batch, and one faiss and one BM25 search
    per (mode, depth, filter) group; each query's answer is the one it gets alone."""
    for query, k, mode in zip(queries, ks, modes):
        check_request(k, mode, query)
    filters = filters or [NO_FILTER] * len(queries)
    within = {flt: si.allowed(flt) for flt in set(filters)}
    if si.embed is None and any(mode != "bm25" for mode in modes):
        raise PapersimError("dense search needs the encoder the index was built with")
    dense_rows = [i for i, mode in enumerate(modes) if mode != "bm25"]
    vectors = si.embed([queries[i] for i in dense_rows]) if dense_rows else None  # (n_dense, dim)
    vector_of = {i: j for j, i in enumerate(dense_rows)}
    fusion = {mode: (si.fusion if mode == "served" else HYBRID) for mode in ("served", "hybrid")}
    depth = [k if mode in ("dense", "bm25") else fusion[mode].depth for k, mode in zip(ks, modes)]
    dense: dict[int, tuple[list[int], list[float]]] = {}
    lexical: dict[int, tuple[list[int], list[float]]] = {}
    for d, flt in {(d, flt) for d, flt in zip(depth, filters)}:
        group = [i for i in dense_rows if depth[i] == d and filters[i] == flt]
        if group:
            dense.update(zip(group, _dense_batch(si, vectors[[vector_of[i] for i in group]], d,
                                                 within=within[flt])))
        group = [i for i, mode in enumerate(modes) if mode != "dense" and depth[i] == d and filters[i] == flt]
        if group:
            lexical.update(zip(group, _bm25_batch(si, [queries[i] for i in group], d, within[flt])))
    answers = []
    for i, (k, mode) in enumerate(zip(ks, modes)):
        if mode in ("dense", "bm25"):
            rows, scores = (dense if mode == "dense" else lexical)[i]
        else:
            rows, scores = fuse(lexical[i], dense[i], fusion[mode])
            rows, scores = rows[:k], scores[:k]
        answers.append(_table(si, rows, scores, why(si.bm25, queries[i], rows)))
    return answers


def search_text(si: SearchIndex, query: str, k: int = 10, mode: str = "served",
                flt: Filter = NO_FILTER) -> pd.DataFrame:
    """The k papers closest to `query` (of those `flt` keeps): rank, score (fused, cosine or BM25),
    paper_id, title, metadata and why."""
    return search_texts(si, [query], [k], [mode], [flt])[0]


def similar_rows(si: SearchIndex, rows: list[int], ks: list[int],
                 filters: list[Filter] | None = None) -> list[pd.DataFrame]:
    """The served "papers similar to this one" for index rows: their stored vectors' neighbours and a
    more-like-this BM25 query of their telling terms, fused as the index's `similar` says
    (papersim.retrieval.similar); themselves and their exact duplicates left out; of the papers each
    request's filter keeps. Each answer's `why`: the words of the paper with the largest part in the
    match of its lexical query (its telling terms, or the whole paper)."""
    if not rows:
        return []
    filters = filters or [NO_FILTER] * len(rows)
    within = [si.allowed(flt) for flt in filters]
    cfg, exclude = si.similar, excluded_rows(rows, si.duplicates)
    # One element at a time: a whole Arrow-backed column taken as an array is copied on every call.
    titles = si.ids["title"]
    abstracts = si.papers["abstract"] if si.papers is not None else None
    texts = [passage_text(titles.iat[r], abstracts.iat[r] if abstracts is not None else "") for r in rows]
    if cfg is None:  # an index built before papers were answered by both signals: its dense neighbours
        answers = [_dense(si, ann.reconstruct_rows(si.index, [r])[0], k, skip_row=r, within=w)
                   for r, k, w in zip(rows, ks, within)]
        return [_table(si, h[0], h[1], why(si.bm25, t, h[0])) for h, t in zip(answers, texts)]
    depth = min(cfg.fusion.depth + max(len(e) for e in exclude), si.similar_index.ntotal)
    vectors = ann.reconstruct_rows(si.similar_index, rows)  # (n_rows, dim)
    dense = []
    for i, w in enumerate(within):
        scores, found = (si.similar_index.search(vectors[i:i + 1], depth) if w is None else
                         ann.search_within(si.similar_index, vectors[i:i + 1], depth, w))
        dense.append(([int(r) for r in found[0] if r >= 0], [float(x) for r, x in zip(found[0], scores[0]) if r >= 0]))
    answers = answer_similar(si.bm25, texts, dense, exclude, cfg, within)
    only = si.bm25.telling_terms(texts, cfg.terms) if cfg.lexical == "mlt" else [None] * len(rows)
    return [_table(si, hits[0][:k], hits[1][:k], why(si.bm25, text, hits[0][:k], terms))
            for hits, k, text, terms in zip(answers, ks, texts, only)]


def similar_papers(si: SearchIndex, paper_id: str, k: int = 10, flt: Filter = NO_FILTER) -> pd.DataFrame:
    """The k papers most like an indexed paper (itself and its duplicates excluded; of those `flt`
    keeps): rank, score, paper_id, title, metadata and why."""
    check_request(k)
    row = si.row_of.get(paper_id)
    if row is None:
        raise PapersimError(f"unknown paper id {paper_id!r}: not in the index ({len(si.ids)} papers)")
    return similar_rows(si, [row], [k], [flt])[0]


def stored_vectors(si: SearchIndex, paper_ids: list[str]) -> np.ndarray:
    """The index's own vectors of indexed papers, (n, dim) float32 (exact for Flat and HNSW)."""
    row_of = si.row_of
    missing = [pid for pid in paper_ids if pid not in row_of]
    if missing:
        raise PapersimError(f"{len(missing)} paper(s) not in the index, e.g. {missing[0]!r}")
    if not paper_ids:
        return np.zeros((0, si.index.d), dtype=np.float32)
    return ann.reconstruct_rows(si.index, [row_of[pid] for pid in paper_ids])
