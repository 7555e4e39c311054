"""Distillation: the labels are the served fusion's margins, ranked the teacher's way, and training fits them."""

from functools import lru_cache

import numpy as np
import pandas as pd
import pytest
import torch

from papersim.encoders.load import load_encoder
from papersim.errors import PapersimError
from papersim.retrieval.lexical import BM25
from papersim.retrieval.passage import passage_text
from papersim.training.distil import (DistilConfig, distillation_examples, student_margins, train_distilled,
                                      training_papers)
from papersim.training.train import TrainConfig

TOPICS = [
    ("wing flutter", ["supersonic", "aeroelastic", "panel", "mach", "damping", "wind tunnel", "divergence"]),
    ("boundary layers", ["laminar", "heat transfer", "skin friction", "turbulent", "nusselt", "wall", "flat plate"]),
    ("graph networks", ["message passing", "molecules", "node", "edges", "attention", "graph pooling", "readout"]),
    ("speech recognition", ["acoustic", "phoneme", "transformer", "word error", "spectrogram", "decoder", "ctc"]),
]
SMALL = DistilConfig(positive_k=3, top_k=12, negatives=2, max_seq_length=64)  # a 32-paper corpus's scale


CODE_NAMES = ["zorblat", "quinchet", "vexmora", "plimbus", "drastiq", "yonwharf", "krelvin", "obsquall"]


def corpus(n: int = 32) -> pd.DataFrame:
    """Short papers on four topics, with a few of the topic's words drawn by a seeded rng, and in runs of four
    papers (one per topic) a coined project name: this corpus's own vocabulary, which BM25 weighs and the base
    model cannot know."""
    rng = np.random.default_rng(0)
    rows = []
    for i in range(n):
        topic, words = TOPICS[i % len(TOPICS)]
        code = CODE_NAMES[i // len(TOPICS) % len(CODE_NAMES)]
        picked = ", ".join(rng.choice(words, size=3, replace=False))
        rows.append({"paper_id": f"p{i}", "title": f"The {code} project: {topic}, study {i}",
                     "abstract": f"Within {code} we measure {picked} in experiment {i} and compare with earlier "
                                 f"{topic} work.",
                     "content_hash": f"h{i}"})
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def papers_and_vectors():
    papers = corpus()
    texts = [passage_text(t, a) for t, a in zip(papers["title"], papers["abstract"])]
    model = load_encoder("", SMALL.max_seq_length)

    def embed(batch: list[str]) -> np.ndarray:
        return model.encode(batch, normalize_embeddings=True)  # (n, 384)

    return papers, texts, embed(texts), embed


@pytest.fixture(scope="module")
def examples(papers_and_vectors):
    papers, _, _, embed = papers_and_vectors
    return distillation_examples(papers, embed, SMALL, seed=13)


@lru_cache(maxsize=1)
def bm25_index(texts: tuple[str, ...]) -> BM25:
    return BM25([str(i) for i in range(len(texts))], texts)


def fused_scores(texts: list[str], vectors: np.ndarray, anchor: int) -> dict[int, float]:
    """The served fusion worked out by hand: z-scores of BM25 (whole paper as the query, matching papers) and of
    the cosines over the other papers, 0.5 each, a paper missing from one list at that list's lowest z-score."""
    bm25 = next(bm25_index(tuple(texts)).score_rows([texts[anchor]]))  # (n,)
    others = [i for i in range(len(texts)) if i != anchor]
    lexical = {i: bm25[i] for i in others if bm25[i] > 0}
    dense = {i: float(vectors[anchor] @ vectors[i]) for i in others}

    def z(scores: dict[int, float]) -> dict[int, float]:
        values = np.array(list(scores.values()))
        return {i: (s - values.mean()) / values.std() for i, s in scores.items()}

    zl, zd = z(lexical), z(dense)
    return {i: 0.5 * zd[i] + 0.5 * zl.get(i, min(zl.values())) for i in others}


def test_labels_are_the_served_fusions_margins_rescaled_to_the_base_cosine_spread(papers_and_vectors, examples):
    _, texts, vectors, _ = papers_and_vectors
    frame, infos = examples
    row = {f"p{i}": i for i in range(len(texts))}
    teacher, base = [], []
    for a, p, negatives in zip(frame["anchor_id"], frame["positive_id"], frame["negative_ids"]):
        fused = fused_scores(texts, vectors, row[a])
        teacher.append([fused[row[p]] - fused[row[n]] for n in negatives])
        base.append([vectors[row[a]] @ (vectors[row[p]] - vectors[row[n]]) for n in negatives])
    teacher, base = np.array(teacher), np.array(base)  # (rows, 2)
    np.testing.assert_allclose(np.array(frame["teacher"].tolist()), teacher, atol=1e-5)  # float32 cosines
    scale = np.sqrt(np.mean(base ** 2) / np.mean(teacher ** 2))
    np.testing.assert_allclose(np.array(frame["label"].tolist()), teacher * scale, rtol=1e-4, atol=1e-5)
    assert infos["scale"] == pytest.approx(scale, rel=1e-4)
    assert (base < 0).any()  # the teacher is not the base model: BM25 puts some papers above where it ranks them
    assert infos["rows"] == len(frame) == 32  # one row per training paper
    assert frame.loc[0, "anchor"] == texts[0] and frame.loc[0, "positive"] == texts[row[frame.loc[0, "positive_id"]]]


def test_positives_are_the_teachers_top_candidates_and_negatives_rank_below(papers_and_vectors, examples):
    _, texts, vectors, _ = papers_and_vectors
    frame, _ = examples
    row = {f"p{i}": i for i in range(len(texts))}
    for a, p, negatives, labels in zip(frame["anchor_id"], frame["positive_id"], frame["negative_ids"],
                                       frame["label"]):
        fused = fused_scores(texts, vectors, row[a])
        ranking = sorted(fused, key=lambda i: -fused[i])
        assert ranking.index(row[p]) < SMALL.positive_k
        assert all(ranking.index(row[p]) < ranking.index(row[n]) < SMALL.top_k for n in negatives)
        assert min(labels) >= 0
    assert (np.array(frame["label"].tolist()) > 0).mean() > 0.9  # ties aside, the positive scores higher


def test_a_few_steps_move_the_student_toward_the_teachers_margins(examples, tmp_path):
    frame, _ = examples
    model = load_encoder("", SMALL.max_seq_length)
    weights = model[0].auto_model.embeddings.word_embeddings.weight.detach().clone()
    labels = np.array(frame["label"].tolist())  # (rows, 2)
    before = np.mean((student_margins(model, frame) - labels) ** 2)
    cfg = TrainConfig(max_steps=12, batch_size=8, learning_rate=3e-5, warmup_ratio=0.25, logging_steps=1,
                      precision="fp32", seed=13)
    _, report = train_distilled(model, frame, cfg, SMALL, tmp_path / "out")
    after = np.mean((student_margins(model, frame) - labels) ** 2)
    assert report["steps"] == 12 and report["rows"] == 32
    assert not torch.equal(model[0].auto_model.embeddings.word_embeddings.weight.detach(), weights)
    assert after < 0.7 * before


def test_no_training_papers_too_few_rows_or_no_room_for_negatives_are_refused_with_what_to_do(tmp_path):
    empty = corpus().iloc[:0]
    with pytest.raises(PapersimError, match="at least two training papers, got 0.*train split empty"):
        distillation_examples(empty, lambda texts: np.zeros((len(texts), 384), dtype=np.float32), SMALL, seed=0)
    with pytest.raises(PapersimError, match="3 training rows cannot fill one batch of 16"):
        train_distilled(None, pd.DataFrame({"anchor": ["a"] * 3}), TrainConfig(batch_size=16), SMALL, tmp_path)
    with pytest.raises(ValueError, match=r"top_k \(10\) must leave room for 1 negative\(s\) below the top 10"):
        DistilConfig(positive_k=10, top_k=10)


def test_only_the_train_splits_papers_are_read():
    papers = corpus(6)
    split = pd.DataFrame({"paper_id": [f"p{i}" for i in range(6)],
                          "split": ["train", "val", "train", "test", "train", "val"]})
    assert training_papers(papers, split)["paper_id"].tolist() == ["p0", "p2", "p4"]
