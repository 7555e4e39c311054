"""Has the corpus moved since the champion's model was trained? Counts of changed papers and an embedding drift test.

`corpus_change` compares paper ids and content hashes; `embedding_drift` is a kernel two-sample
test (Gretton et al. 2012, https://jmlr.org/papers/v13/gretton12a.html) on embeddings of a
`drift_sample` of each corpus version. Deciding what counts as "drifted" is the caller's job.
"""

import hashlib
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from papersim.errors import PapersimError

ID_COLUMNS = ["paper_id", "content_hash"]


def _require(frame: pd.DataFrame, columns: list[str], name: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise PapersimError(
            f"{name} has no column {', '.join(missing)} (it has {', '.join(map(str, frame.columns)) or 'none'}): "
            "pass the corpus table with paper_id and content_hash, as written by the ingest stage."
        )


def _hashes(frame: pd.DataFrame, name: str, column: str = "content_hash") -> dict[str, str]:
    _require(frame, ID_COLUMNS, name)
    duplicated = frame["paper_id"][frame["paper_id"].duplicated()]
    if len(duplicated):
        raise PapersimError(f"{name} lists paper_id {duplicated.iloc[0]!r} more than once: paper ids must be unique")
    return dict(zip(frame["paper_id"], frame[column]))


@dataclass(frozen=True)
class CorpusChange:
    """How the current corpus differs from the one the champion model was trained on."""

    n_reference: int  # papers in the champion's corpus
    n_current: int
    new: int  # paper_id not in the reference
    changed: int  # same paper_id, different record (record_hash where both have it: groups too), else content
    removed: int  # paper_id in the reference, not in the current corpus

    @property
    def share(self) -> float:
        """(new + changed + removed) / reference size: can exceed 1 when the corpus more than doubled."""
        return (self.new + self.changed + self.removed) / max(self.n_reference, 1)


def corpus_change(reference: pd.DataFrame, current: pd.DataFrame) -> CorpusChange:
    """Count new, changed and removed papers by paper_id and record_hash (every stored field: an edit of a
    paper's groups counts), or content_hash (title and abstract) where a table predates record_hash."""
    column = "record_hash" if "record_hash" in reference and "record_hash" in current else "content_hash"
    before, after = _hashes(reference, "reference", column), _hashes(current, "current", column)
    common = before.keys() & after.keys()
    return CorpusChange(
        n_reference=len(before),
        n_current=len(after),
        new=len(after) - len(common),
        changed=sum(before[pid] != after[pid] for pid in common),
        removed=len(before) - len(common),
    )


def drift_sample(papers: pd.DataFrame, size: int, seed: int = 0) -> pd.DataFrame:
    """The `size` papers (all if fewer) with the smallest sha1(f"{seed}:{paper_id}"), sorted by paper_id.

    A paper's hash does not depend on the rest of the corpus, so a few added or removed papers
    change only a few rows of the sample: two corpus versions are compared on mostly the same papers.
    """
    _require(papers, ["paper_id"], "papers")
    if size < 0:
        raise PapersimError(f"drift sample size must be >= 0 (got {size})")
    keys = [hashlib.sha1(f"{seed}:{pid}".encode()).hexdigest() for pid in papers["paper_id"]]
    chosen = np.argsort(np.asarray(keys, dtype=str), kind="stable")[:size]
    return papers.iloc[chosen].sort_values("paper_id", kind="stable").reset_index(drop=True)


@dataclass(frozen=True)
class EmbeddingDrift:
    """A kernel two-sample test between reference and current embeddings."""

    mmd2: float  # unbiased squared MMD, RBF kernel: ~0 (may be < 0) when both come from one distribution
    p_value: float  # permutation test: chance of an mmd2 this large if nothing changed
    centroid_shift: float  # 1 - cosine(mean(reference), mean(current))
    bandwidth: float  # RBF sigma used (median heuristic on the pooled sample)
    n_reference: int
    n_current: int
    permutations: int


def _check_sample(sample: np.ndarray, name: str) -> np.ndarray:
    sample = np.asarray(sample, dtype=np.float64)
    if sample.ndim != 2 or sample.shape[0] < 2:
        raise PapersimError(
            f"{name} embeddings have shape {sample.shape}: the drift test needs a 2-D array of at least 2 rows "
            "(a bigger drift sample, or fewer papers filtered out)"
        )
    if not np.isfinite(sample).all():
        raise PapersimError(f"{name} embeddings contain NaN or inf: check the encoder's output")
    return sample


def _squared_distances(pooled: np.ndarray) -> np.ndarray:
    norms = np.einsum("ij,ij->i", pooled, pooled)  # (N,)
    sq = norms[:, None] + norms[None, :] - 2.0 * pooled @ pooled.T  # (N, N)
    np.fill_diagonal(sq, 0.0)
    return np.maximum(sq, 0.0)  # rounding can make near-duplicates slightly negative


def _median_bandwidth(sq: np.ndarray) -> float:
    distances = np.sqrt(sq[np.triu_indices_from(sq, k=1)])
    sigma = float(np.median(distances))
    if sigma > 0:
        return sigma
    positive = distances[distances > 0]  # over half the pairs coincide: fall back to the typical non-zero distance
    return float(np.median(positive)) if positive.size else 1.0


def embedding_drift(reference: np.ndarray, current: np.ndarray, permutations: int = 200,
                    seed: int = 0) -> EmbeddingDrift:
    """Unbiased MMD^2 with an RBF kernel (median-heuristic bandwidth) and its permutation p-value.

    Costs O(N^2 d) for the kernel and O(N^2 P) for the permutations, N = n_reference + n_current,
    with N^2 floats of memory: pass a `drift_sample`, not the whole corpus.
    """
    x, y = _check_sample(reference, "reference"), _check_sample(current, "current")
    if x.shape[1] != y.shape[1]:
        raise PapersimError(
            f"reference embeddings have {x.shape[1]} dimensions, current {y.shape[1]}: "
            "both samples must be encoded by the same model"
        )
    if permutations < 0:
        raise PapersimError(f"permutations must be >= 0 (got {permutations})")
    n, m = len(x), len(y)
    pooled = np.vstack([x, y])  # (N, d)
    sq = _squared_distances(pooled)  # (N, N)
    sigma = _median_bandwidth(sq)
    kernel = np.exp(-sq / (2.0 * sigma**2))  # (N, N)
    np.fill_diagonal(kernel, 0.0)  # the unbiased estimate leaves out k(x_i, x_i)

    # Row 0 is the observed split, rows 1.. random relabellings; each row marks the n "reference" points.
    rng = np.random.default_rng(seed)
    order = np.vstack([np.arange(n + m), rng.permuted(np.tile(np.arange(n + m), (permutations, 1)), axis=1)])
    in_x = np.zeros((permutations + 1, n + m))  # (P + 1, N)
    np.put_along_axis(in_x, order[:, :n], 1.0, axis=1)
    row_sums = kernel.sum(axis=1)  # (N,)
    xx = np.einsum("pi,ip->p", in_x, kernel @ in_x.T)  # (P + 1,) sum of k over ordered pairs within X
    x_all = in_x @ row_sums  # (P + 1,) sum of k(x, anything)
    xy = x_all - xx
    yy = row_sums.sum() - 2.0 * x_all + xx
    stats = xx / (n * (n - 1)) + yy / (m * (m - 1)) - 2.0 * xy / (n * m)  # (P + 1,)
    observed = stats[0]
    # Same arithmetic for the observed and permuted splits, so ties are not decided by rounding.
    p_value = (1 + int(np.count_nonzero(stats[1:] >= observed))) / (1 + permutations)

    mean_x, mean_y = x.mean(axis=0), y.mean(axis=0)
    norms = np.linalg.norm(mean_x) * np.linalg.norm(mean_y)
    cosine = float(mean_x @ mean_y / norms) if norms > 0 else 0.0
    return EmbeddingDrift(mmd2=float(observed), p_value=float(p_value), centroid_shift=1.0 - cosine,
                          bandwidth=sigma, n_reference=n, n_current=m, permutations=permutations)


DRIFT_HISTORY_COLUMNS = ["run", "changed_share", "mmd2", "p_value"]


def history_frame(history: list[dict]) -> pd.DataFrame:
    """Earlier flow runs' drift metrics (tracking.flow_metric_history) as the plot's table."""
    return pd.DataFrame([{"run": time.strftime("%m-%d %H:%M", time.gmtime(h["start_time"] / 1000)),
                          "changed_share": h["drift.changed_share"], "mmd2": h["drift.mmd2"],
                          "p_value": h["drift.p_value"]} for h in history], columns=DRIFT_HISTORY_COLUMNS)


def save_drift_plot(history: pd.DataFrame, path: Path, p_value: float, trigger_share: float | None = None) -> None:
    """Share of papers changed since the model was trained and MMD^2 per run (time order), drifts (p below
    `p_value`, the decision's threshold) in red, the share that retrains (`trigger_share`) as a line, as a PNG."""
    _require(history, DRIFT_HISTORY_COLUMNS, "drift history")
    from papersim.plots import pyplot

    plt = pyplot()
    from matplotlib.ticker import PercentFormatter

    x = np.arange(len(history))
    share = history["changed_share"].to_numpy(dtype=float)
    mmd2 = history["mmd2"].to_numpy(dtype=float)
    significant = history["p_value"].to_numpy(dtype=float) < p_value  # NaN compares False: not significant

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(max(6.0, 0.5 * len(history) + 2), 6), sharex=True)
    top.bar(x, share, color="tab:blue")
    top.yaxis.set_major_formatter(PercentFormatter(1.0))
    if trigger_share is not None:
        top.axhline(trigger_share, color="tab:red", linestyle="--", linewidth=1, label="retrain above")
        top.legend()
    top.set(ylabel="new/changed/removed", title="corpus change since the model was trained")
    bottom.plot(x, mmd2, color="tab:gray", linewidth=1)  # NaN runs leave a gap
    bottom.scatter(x[~significant], mmd2[~significant], color="tab:gray", label=f"p >= {p_value:g}", zorder=3)
    bottom.scatter(x[significant], mmd2[significant], color="tab:red", label=f"p < {p_value:g}", zorder=3)
    bottom.axhline(0.0, color="black", linewidth=0.5)
    bottom.set(ylabel="MMD$^2$", title="embedding drift")
    bottom.set_xticks(x, history["run"].astype(str).tolist(), rotation=30, ha="right")
    bottom.legend()
    for ax in (top, bottom):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, format="png", dpi=100)
    plt.close(fig)


def sample_vectors(sample: pd.DataFrame, index_dir: Path, encoder_dir: Path) -> np.ndarray:
    """Vectors of a drift sample (drift_sample's rows) under a model (its index and encoder folders).

    Papers the model's index holds with the same content come from the index (no encoding);
    only new or changed ones in the sample run through the encoder.
    """
    from papersim.retrieval.passage import passage_text
    from papersim.retrieval.search import attach_encoder, load_search_index, stored_vectors

    si = load_search_index(index_dir)
    indexed = set(zip(si.ids["paper_id"], si.ids["content_hash"]))
    known = np.array([(p, h) in indexed for p, h in zip(sample["paper_id"], sample["content_hash"])], dtype=bool)
    vectors = np.zeros((len(sample), si.index.d), dtype=np.float32)  # (n_sample, dim)
    vectors[known] = stored_vectors(si, sample["paper_id"][known].tolist())
    if (~known).any():
        attach_encoder(si, encoder_dir)
        fresh = sample[~known]
        vectors[~known] = si.embed([passage_text(t, a) for t, a in zip(fresh["title"], fresh["abstract"])])
    return vectors
