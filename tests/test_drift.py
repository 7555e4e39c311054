"""Corpus change counts, the drift sample, the MMD two-sample test and the drift plot."""

import numpy as np
import pandas as pd
import pytest

from papersim.errors import PapersimError
from papersim.lifecycle.drift import (
    corpus_change,
    drift_sample,
    embedding_drift,
    save_drift_plot,
)
from tests.conftest import papers_frame


def edited(papers: pd.DataFrame, *paper_ids: str) -> pd.DataFrame:
    """`papers` with a new content hash for `paper_ids`, as an edited title or abstract gives them."""
    return papers.assign(content_hash=papers["content_hash"].where(~papers["paper_id"].isin(paper_ids), "edited"))


def gaussians(rng: np.random.Generator, n: int = 200, dim: int = 16, shift: float = 0.0) -> np.ndarray:
    # A common offset, like real sentence embeddings; the shift is +/- along the first/second half of the
    # dimensions, orthogonal to the offset, so it moves the centroid's direction and not only its length.
    direction = np.where(np.arange(dim) < dim // 2, 1.0, -1.0)
    return (rng.normal(size=(n, dim)) + 1.0 + shift * direction).astype(np.float32)


def test_identical_corpora_have_not_changed():
    change = corpus_change(papers_frame(10), papers_frame(10).sample(frac=1, random_state=0))
    assert (change.new, change.changed, change.removed) == (0, 0, 0)
    assert (change.n_reference, change.n_current, change.share) == (10, 10, 0.0)


def test_new_changed_and_removed_papers_are_counted():
    reference = papers_frame(10)
    current = edited(papers_frame(11, start=2), "p4", "p5")  # p0, p1 removed; p10-p12 new; p4, p5 edited
    change = corpus_change(reference, current.assign(abstract="ignored"))
    assert (change.new, change.changed, change.removed) == (3, 2, 2)
    assert (change.n_reference, change.n_current) == (10, 11)
    assert change.share == pytest.approx(7 / 10)
    assert corpus_change(papers_frame(3).head(0), papers_frame(3)).share == 3.0  # empty reference: no division by zero


@pytest.mark.parametrize("missing", ["paper_id", "content_hash"])
def test_a_missing_column_is_named(missing):
    with pytest.raises(PapersimError, match=missing):
        corpus_change(papers_frame(3), papers_frame(3).drop(columns=missing))
    with pytest.raises(PapersimError, match=missing):
        corpus_change(papers_frame(3).drop(columns=missing), papers_frame(3))


def test_duplicate_paper_ids_are_rejected():
    with pytest.raises(PapersimError, match="'p1' more than once"):
        corpus_change(papers_frame(3), pd.concat([papers_frame(3), papers_frame(1, start=1)]))


def test_drift_sample_is_deterministic_capped_and_sorted():
    papers = papers_frame(500)
    sample = drift_sample(papers, 50, seed=3)
    assert len(sample) == 50 and list(sample.index) == list(range(50))
    assert sample["paper_id"].is_monotonic_increasing and sample["paper_id"].is_unique
    shuffled = papers.sample(frac=1, random_state=1)
    pd.testing.assert_frame_equal(drift_sample(shuffled, 50, seed=3), sample)  # row order does not matter
    assert set(drift_sample(papers, 50, seed=4)["paper_id"]) != set(sample["paper_id"])  # the seed does
    assert len(drift_sample(papers.head(20), 50)) == 20  # fewer papers than the size: all of them
    assert list(sample.columns) == list(papers.columns)


def test_drift_sample_mostly_survives_a_corpus_update():
    papers = papers_frame(1000)
    grown = pd.concat([papers, papers_frame(20, start=1000)], ignore_index=True)  # 2% new papers
    before, after = drift_sample(papers, 200), drift_sample(grown, 200)
    kept = set(before["paper_id"]) & set(after["paper_id"])
    assert len(after) == 200 and len(kept) >= 0.9 * 200
    # the papers that left the sample were pushed out by new ones, never replaced by other old papers
    assert set(after["paper_id"]) - kept <= {f"p{i}" for i in range(1000, 1020)}


def test_same_distribution_is_not_drift():
    rng = np.random.default_rng(0)
    result = embedding_drift(gaussians(rng), gaussians(rng), permutations=200, seed=0)
    assert result.p_value > 0.05
    assert abs(result.mmd2) < 0.01
    assert (result.n_reference, result.n_current, result.permutations) == (200, 200, 200)
    assert result.bandwidth > 0


def test_a_mean_shift_is_detected():
    rng = np.random.default_rng(0)
    reference = gaussians(rng)
    same = embedding_drift(reference, gaussians(rng), permutations=200)
    shifted = embedding_drift(reference, gaussians(rng, shift=0.5), permutations=200)
    assert shifted.p_value < 0.01
    assert shifted.p_value == pytest.approx(1 / 201)  # no relabelling comes close
    assert shifted.mmd2 > 10 * abs(same.mmd2)
    assert shifted.centroid_shift > same.centroid_shift
    assert shifted.centroid_shift == pytest.approx(1 - 16 / (4 * np.sqrt(20)), abs=0.03)  # cos(1, 1 +/- 0.5)


def test_identical_samples_have_no_drift_and_the_result_is_reproducible():
    sample = gaussians(np.random.default_rng(1), n=50)
    result = embedding_drift(sample, sample, permutations=100, seed=7)
    assert result.mmd2 <= 1e-12  # the unbiased estimate is <= 0 when the samples coincide
    assert result.centroid_shift == pytest.approx(0.0, abs=1e-9)
    assert result.p_value > 0.5
    assert embedding_drift(sample, sample, permutations=100, seed=7) == result


def test_mmd2_matches_the_textbook_formula():
    rng = np.random.default_rng(2)
    x, y = rng.normal(size=(12, 3)), rng.normal(size=(9, 3)) + 0.4
    result = embedding_drift(x, y, permutations=10)
    pooled = np.vstack([x, y])
    distances = np.sqrt(((pooled[:, None] - pooled[None]) ** 2).sum(-1))
    assert result.bandwidth == pytest.approx(np.median(distances[np.triu_indices(21, k=1)]))

    def k(a, b):
        return np.exp(-((a[:, None] - b[None]) ** 2).sum(-1) / (2 * result.bandwidth**2))

    expected = ((k(x, x).sum() - 12) / (12 * 11) + (k(y, y).sum() - 9) / (9 * 8) - 2 * k(x, y).mean())
    assert result.mmd2 == pytest.approx(expected, rel=1e-9)


def test_bad_samples_are_rejected():
    rng = np.random.default_rng(0)
    with pytest.raises(PapersimError, match="at least 2 rows"):
        embedding_drift(rng.normal(size=(1, 8)), rng.normal(size=(10, 8)))
    with pytest.raises(PapersimError, match="at least 2 rows"):
        embedding_drift(rng.normal(size=(10, 8)), rng.normal(size=(0, 8)))
    with pytest.raises(PapersimError, match="8 dimensions, current 4"):
        embedding_drift(rng.normal(size=(10, 8)), rng.normal(size=(10, 4)))
    with pytest.raises(PapersimError, match="NaN"):
        embedding_drift(np.full((3, 2), np.nan), rng.normal(size=(3, 2)))


def test_drift_plot_is_a_png_and_tolerates_missing_tests(tmp_path):
    history = pd.DataFrame({
        "run": ["2024-01", "2024-02", "2024-03", "2024-04"],
        "changed_share": [0.0, 0.02, 0.05, 0.30],
        "mmd2": [0.0, np.nan, 0.001, 0.04],  # 2024-02: no embedding test that run
        "p_value": [1.0, np.nan, 0.4, 0.005],
    })
    path = tmp_path / "drift.png"
    save_drift_plot(history, path, 0.01)
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 1000
    with pytest.raises(PapersimError, match="mmd2"):
        save_drift_plot(history.drop(columns="mmd2"), tmp_path / "other.png", 0.01)
    assert not (tmp_path / "other.png").exists()
