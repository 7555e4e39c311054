"""The build_index stage's library: the faiss index over every paper, built in full or incrementally.

The index folder (one owner: this module writes and reads its layout) holds `index.faiss`,
`ids.parquet` (row i of the index is paper i), `bm25/` (bm25s over the same papers) and `index.json`
(what was measured and decided, the encoder the queries must match, the served fusion).

A build is incremental when the previous index was made by the same encoder (same weights,
backend and sequence length) with the same index type, and every paper it holds is still in
the corpus unchanged: then only the new papers' vectors are added. Anything else (a new model,
a removed or edited paper, the corpus outgrowing the index type) rebuilds from scratch.
"""

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import faiss
import numpy as np
import pandas as pd

from papersim.atomic import dump_json
from papersim.errors import PapersimError
from papersim.retrieval import ann
from papersim.retrieval.lexical import BM25
from papersim.retrieval.passage import passage_text
from papersim.encoders.engine import EncodingEngine

IDS_COLUMNS = ["paper_id", "title", "content_hash"]  # ids.parquet: row i of the index is paper i
RECORD_HASH = "record_hash"  # ids.parquet too when papers.parquet has it (ingest's hash of every stored field)
DETAIL_COLUMNS = ["paper_id", "abstract", "source", "groups"]  # papers.parquet: what a page shows of row i
# ... and the optional metadata ingest keeps (papers.parquet written before it existed has none of them)
METADATA_COLUMNS = ["authors", "date", "url", "venue", "categories"]
FAISS_FILE, IDS_FILE, INFO_FILE, BM25_FOLDER = "index.faiss", "ids.parquet", "index.json", "bm25"
DETAILS_FILE = "papers.parquet"
# Wall-clock facts of a build: in the stage's MLflow run, never in index.json or the report (stage.split_timings)
TIMINGS = ("build_seconds", "encode_seconds", "index_seconds", "queries_per_second")
SIMILAR_FILE = "similar.faiss"  # the similar task's vectors, when its encoder is not the query encoder


@dataclass(frozen=True)
class BuildIndexConfig(EncodingEngine):
    """params.yaml `build_index` section."""

    factory: str = "auto"  # a faiss index_factory string (inner product), or auto: chosen by corpus size
    flat_max: int = 50_000  # auto: exact Flat up to here (1.5 KiB/paper; a scan of 50k vectors takes ~2 ms)
    hnsw_max: int = 2_000_000  # auto: HNSW up to here (1.8 KiB/paper: 3.4 GiB at 2M), IVF-PQ + SQ8 re-ranking beyond
    hnsw_m: int = 32  # HNSW links per vector: 32 is faiss's usual balance of memory and recall
    pq_m: int = 48  # IVF-PQ sub-quantizers (bytes per vector at 8 bits); must divide the embedding dimension
    memory_budget_gb: float = 0.0  # auto: the index must fit this (0 = no budget); a smaller kind is chosen if not
    target_recall: float = 0.95  # search effort (efSearch/nprobe) is raised until recall@10 vs exact reaches this
    recall_queries: int = 200  # held-out titles used to measure recall@10 and queries/s
    stemmer: str = "english"  # the BM25 index's Snowball stemmer ("" = none), as evaluate
    backend: str = "auto"  # encoder backend (papersim.encoders.encode): openvino on CPUs, torch on GPUs
    max_seq_length: int = 128  # as evaluate, so the embedding cache serves both
    batch_size: int = 32  # texts per encoding batch

    def __post_init__(self) -> None:
        self.check_engine()
        if not 0 < self.target_recall <= 1:
            raise ValueError("target_recall must be in (0, 1]")
        if min(self.flat_max, self.hnsw_max, self.hnsw_m, self.pq_m, self.recall_queries) < 1:
            raise ValueError("flat_max, hnsw_max, hnsw_m, pq_m and recall_queries must be positive")


def choose_factory(n_papers: int, dim: int, cfg: BuildIndexConfig) -> str:
    if cfg.factory != "auto":
        return cfg.factory
    return ann.auto_factory(n_papers, dim, flat_max=cfg.flat_max, hnsw_max=cfg.hnsw_max, hnsw_m=cfg.hnsw_m,
                            pq_m=cfg.pq_m, memory_budget=int(cfg.memory_budget_gb * 2**30))


@dataclass(frozen=True)
class BuiltIndex:
    index: faiss.Index
    ids: pd.DataFrame  # IDS_COLUMNS (and RECORD_HASH when the papers have it), one row per index row
    info: dict  # what was measured and decided: written as index.json
    similar: faiss.Index | None = None  # the similar task's own index (another encoder), rows as `index`


def new_papers(previous_ids: pd.DataFrame | None, previous_info: dict | None, papers: pd.DataFrame,
               encoder_key: str, factory: str) -> tuple[pd.DataFrame | None, str]:
    """(papers to add, why) if the previous index can be extended; (None, why) if it must be rebuilt."""
    if previous_ids is None or previous_info is None:
        return None, "no previous index"
    if previous_info.get("encoder_key") != encoder_key:
        return None, "the model or encoder settings changed"
    if previous_info.get("factory") != factory:
        return None, f"index type changed ({previous_info.get('factory')} -> {factory})"
    current = dict(zip(papers["paper_id"], papers["content_hash"]))
    changed = sum(current.get(pid) != digest
                  for pid, digest in zip(previous_ids["paper_id"], previous_ids["content_hash"]))
    if changed:
        return None, f"{changed} indexed papers were removed or edited"
    added = papers[~papers["paper_id"].isin(set(previous_ids["paper_id"]))]
    return added, f"{len(added)} new papers"


def build_index(papers: pd.DataFrame, embed: Callable[[list[str]], np.ndarray], queries: np.ndarray,
                cfg: BuildIndexConfig, encoder_key: str, previous: BuiltIndex | None = None) -> BuiltIndex:
    """Index every paper's passage (title + abstract); measure recall@10 and queries/s on `queries`.

    `embed` maps texts to (n, dim) unit vectors (the stage passes the cached encoder), `queries`
    (n_queries, dim) are held-out titles' vectors. With a compatible `previous` build only the
    new papers are added to its index.
    """
    if papers.empty:
        raise PapersimError("no papers to index")
    start = time.perf_counter()
    vectors = embed([passage_text(t, a) for t, a in zip(papers["title"], papers["abstract"])])  # (n, dim)
    encode_seconds = time.perf_counter() - start
    factory = choose_factory(len(papers), vectors.shape[1], cfg)
    added, reason = new_papers(previous.ids if previous else None, previous.info if previous else None,
                               papers, encoder_key, factory)
    row_of = {pid: row for row, pid in enumerate(papers["paper_id"])}
    if added is not None:
        index = previous.index
        ids = pd.concat([previous.ids, added[IDS_COLUMNS]], ignore_index=True)
        if len(added):
            ann.add_vectors(index, vectors[[row_of[pid] for pid in added["paper_id"]]])
        mode = "incremental"
    else:
        index = ann.create_index(factory, vectors.shape[1])
        ann.add_vectors(index, vectors)
        ids = papers[IDS_COLUMNS].reset_index(drop=True)
        mode = "full"
    build_seconds = time.perf_counter() - start
    # Every row as the corpus holds it now: an edit that keeps a paper's content hash (and so its vector),
    # such as a title's case or its groups, reaches the ids and their record hash, as it reaches the details.
    columns = IDS_COLUMNS + [RECORD_HASH] * (RECORD_HASH in papers.columns)
    ids = papers.iloc[[row_of[pid] for pid in ids["paper_id"]]][columns].reset_index(drop=True)
    # Ground truth and measurements use the index's own row order.
    ordered = vectors[[row_of[pid] for pid in ids["paper_id"]]]
    k = min(10, len(ordered))
    exact = ann.exact_neighbours(ordered, queries, k)
    effort, recall = ann.tune_search_effort(index, queries, exact, target_recall=cfg.target_recall, k=k)
    info = {
        "papers": len(ids), "factory": factory, "mode": mode, "mode_reason": reason,
        "papers_added": len(added) if added is not None else len(ids),
        "build_seconds": round(build_seconds, 3), "encode_seconds": round(encode_seconds, 3),
        "index_seconds": round(build_seconds - encode_seconds, 3), "memory_bytes": ann.memory_bytes(index),
        "search_effort": effort, f"recall@{k}": recall, "recall_queries": len(queries),
        "queries_per_second": ann.queries_per_second(index, queries, k), "encoder_key": encoder_key,
        "dim": int(vectors.shape[1]),
    }
    return BuiltIndex(index=index, ids=ids, info=info)


def build_similar_index(vectors: np.ndarray, factory: str, cfg: BuildIndexConfig, seed: int = 0) -> tuple[
        faiss.Index, dict]:
    """The similar task's own index over (n, dim) vectors in the main index's row order, same kind; its
    search effort tuned with a seeded sample of the papers themselves as queries (that task's queries)."""
    index = ann.create_index(factory, vectors.shape[1])
    ann.add_vectors(index, vectors)
    rng = np.random.default_rng(seed)
    queries = vectors[np.sort(rng.choice(len(vectors), size=min(cfg.recall_queries, len(vectors)), replace=False))]
    k = min(10, len(vectors))
    effort, recall = ann.tune_search_effort(index, queries, ann.exact_neighbours(vectors, queries, k),
                                            target_recall=cfg.target_recall, k=k)
    return index, {"similar_index": factory, "similar_search_effort": effort, f"similar_recall@{k}": recall,
                   "similar_memory_bytes": ann.memory_bytes(index)}


def recall_queries(papers: pd.DataFrame, split: pd.DataFrame | None, n: int) -> list[str]:
    """Up to n test-split titles (all titles when there is no split): real queries for recall and speed.
    An untitled corpus asks with the first 200 characters of its abstracts instead."""
    titled = papers["title"].str.strip() != ""
    papers = papers.assign(query=papers["title"] if titled.any() else papers["abstract"].str.slice(0, 200))
    papers = papers[titled] if titled.any() else papers
    if split is not None:
        test = papers[papers["paper_id"].isin(set(split.loc[split["split"] == "test", "paper_id"]))]
        papers = test if len(test) else papers
    return papers["query"].head(n).to_list()


def passages(papers: pd.DataFrame, ids: pd.DataFrame) -> list[str]:
    """The indexed papers' passages (title + abstract) in the index's row order."""
    row_of = {pid: row for row, pid in enumerate(papers["paper_id"])}
    titles, abstracts = papers["title"].to_numpy(), papers["abstract"].to_numpy()
    return [passage_text(titles[row_of[pid]], abstracts[row_of[pid]]) for pid in ids["paper_id"]]


def bm25_index(papers: pd.DataFrame, ids: pd.DataFrame, stemmer: str) -> BM25:
    """BM25 over the indexed papers' passages, its rows in the faiss index's order."""
    row_of = {pid: row for row, pid in enumerate(papers["paper_id"])}
    rows = [row_of[pid] for pid in ids["paper_id"]]
    titles, abstracts = papers["title"].to_numpy(), papers["abstract"].to_numpy()
    # A generator: BM25 reads the passages a chunk at a time (a million passages are ~1 GiB of strings).
    return BM25(list(ids["paper_id"]), (passage_text(titles[r], abstracts[r]) for r in rows), stemmer)


def paper_details(papers: pd.DataFrame, ids: pd.DataFrame) -> pd.DataFrame:
    """DETAIL_COLUMNS and the metadata the papers have (and `updated`), in the index's row order: what
    an answer and a page show beyond the title."""
    row_of = {pid: row for row, pid in enumerate(papers["paper_id"])}
    rows = [row_of[pid] for pid in ids["paper_id"]]
    columns = DETAIL_COLUMNS + [c for c in [*METADATA_COLUMNS, "updated"] if c in papers.columns]
    return pd.DataFrame({c: papers[c].to_numpy()[rows] if len(rows) else [] for c in columns})


def save_index_folder(folder: Path, built: BuiltIndex, bm25: BM25, facts: Mapping[str, Any],
                      details: pd.DataFrame | None = None) -> dict:
    """Write a new index folder (the caller makes it atomic); index.json is the build's info plus
    `facts` (how the vectors were made: model, fingerprint, backend, serving). Returns that info."""
    info = {**built.info, **facts}
    folder.mkdir()
    ann.save_index(built.index, folder / FAISS_FILE)
    built.ids.to_parquet(folder / IDS_FILE, index=False)
    if details is not None:
        details.to_parquet(folder / DETAILS_FILE, index=False)
    if built.similar is not None:
        ann.save_index(built.similar, folder / SIMILAR_FILE)
    (folder / BM25_FOLDER).mkdir()
    bm25.save(folder / BM25_FOLDER)
    dump_json(info, folder / INFO_FILE)
    return info


def read_index_folder(folder: Path) -> tuple[BuiltIndex, BM25]:
    """An index folder as written; a missing or partial one tells the user to run the pipeline."""
    folder = Path(folder)
    needed = [folder / FAISS_FILE, folder / IDS_FILE, folder / INFO_FILE, folder / BM25_FOLDER]
    missing = [str(p) for p in needed if not p.exists()]
    if missing:
        raise PapersimError(f"no search index at {folder} (missing {', '.join(missing)}): run the pipeline first "
                            "(`dvc repro` or `bash scripts/run.sh`)")
    return read_previous(folder, strict=True), BM25.load(folder / BM25_FOLDER)


def read_previous(folder: Path, strict: bool = False) -> BuiltIndex | None:
    """The last good build; unless `strict`, anything unreadable is None (a full rebuild, never an error)."""
    try:
        info = json.loads((Path(folder) / INFO_FILE).read_text(encoding="utf-8"))
        return BuiltIndex(index=ann.load_index(Path(folder) / FAISS_FILE), ids=pd.read_parquet(Path(folder) / IDS_FILE),
                          info=info)
    except (OSError, ValueError, PapersimError):
        if strict:
            raise
        return None


def read_similar_index(folder: Path) -> faiss.Index | None:
    """The similar task's own index of a folder; None when it shares the query encoder's."""
    path = Path(folder) / SIMILAR_FILE
    return ann.load_index(path) if path.is_file() else None


def read_details(folder: Path) -> pd.DataFrame | None:
    """papers.parquet of an index folder (abstract, source, groups per row); None for a folder built without it."""
    path = Path(folder) / DETAILS_FILE
    return pd.read_parquet(path) if path.is_file() else None


def indexed_papers(folder: Path) -> pd.DataFrame:
    """The index's ids.parquet: what a version was built from. paper_id, title, content_hash, and
    record_hash (a hash of every stored field of the paper, papersim.data.normalise.record_hashes) when
    the papers it was built from had one; an index built before record_hash existed has no such column,
    and only content hashes can be compared with it."""
    return pd.read_parquet(Path(folder) / IDS_FILE)
