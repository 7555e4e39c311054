"""Distilling the served "papers similar to this one" ranking into the dense encoder.

The served answer fuses BM25 of the whole paper with the base model's neighbours (papersim.retrieval.similar)
and beats either part on most corpora: BM25 knows this corpus's vocabulary, the base model does not. Here the
fused ranking is the teacher: each training paper asks for its neighbours among the training papers, exactly as
served, and the student (a SentenceTransformer) learns to reproduce the teacher's score margins between a
top-ranked candidate and lower-ranked ones (margin-MSE, Hofstätter et al. 2020, https://arxiv.org/abs/2010.02666),
so the corpus's own vocabulary enters the vectors. Only training papers are read: no validation or test text.
"""

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from papersim.errors import PapersimError
from papersim.retrieval.dense import dense_search
from papersim.retrieval.fusion import Fusion
from papersim.retrieval.lexical import BM25
from papersim.retrieval.passage import passage_text
from papersim.retrieval.similar import DEFAULT_FUSION, Similar, answer_similar, duplicates, excluded_rows
from papersim.training.train import TrainConfig, progress_callback, use_bf16

Embed = Callable[[list[str]], np.ndarray]  # texts -> (n, dim) unit vectors


@dataclass(frozen=True)
class DistilConfig:
    """What distillation adds to TrainConfig (whose rate, steps, batch, warm-up, decay, seed and precision it uses)."""

    teacher: Fusion = DEFAULT_FUSION  # the served default: whole-paper BM25 + base dense, z-scores, alpha 0.5
    positive_k: int = 10  # the positive is one of the teacher's top 10: the ranks precision@10 reads
    top_k: int = 50  # negatives come from below the positive down to here: near misses, not random papers
    negatives: int = 1  # candidates per row beyond the positive: each one costs a text encoding per row and step
    rows_per_anchor: int = 1  # one row per training paper already outnumbers a 60-step run's 960 rows
    max_seq_length: int = 256  # the similar task reads the paper at 256 tokens: train on what is served
    stemmer: str = "english"  # BM25 of the teacher, as served

    def __post_init__(self) -> None:
        if min(self.positive_k, self.negatives, self.rows_per_anchor, self.max_seq_length) < 1:
            raise ValueError("distil: positive_k, negatives, rows_per_anchor and max_seq_length must be positive")
        if self.top_k < self.positive_k + self.negatives:
            raise ValueError(f"distil: top_k ({self.top_k}) must leave room for {self.negatives} negative(s) below "
                             f"the top {self.positive_k} candidates")
        if self.teacher.method != "convex":
            raise ValueError("distil: the teacher's margins need a score scale: a convex fusion, not rrf")


def training_papers(papers: pd.DataFrame, split: pd.DataFrame) -> pd.DataFrame:
    """The papers of split.parquet's train split (mine_pairs' split), in papers' order."""
    train = set(split.loc[split["split"] == "train", "paper_id"])
    return papers[papers["paper_id"].isin(train)].reset_index(drop=True)


def teacher_rankings(texts: Sequence[str], vectors: np.ndarray, hashes: Sequence[str],
                     cfg: DistilConfig) -> list[tuple[list[int], list[float]]]:
    """Each paper's served answer among the papers (rows best first, fused scores): `answer_similar` with the
    whole paper as the BM25 query and `vectors` (n, dim) as the dense side; itself and duplicates left out."""
    exclude = excluded_rows(range(len(texts)), duplicates(hashes))
    depth = cfg.teacher.depth
    found, scores = dense_search(vectors, vectors, depth + max(map(len, exclude)))  # (n, depth + extra)
    dense = [(f.tolist(), s.tolist()) for f, s in zip(found, scores)]
    bm25 = BM25([str(i) for i in range(len(texts))], texts, cfg.stemmer)
    served = Similar(encoder="base", fusion=cfg.teacher, lexical="paper")
    return answer_similar(bm25, texts, dense, exclude, served)


def sample_candidates(ranking_length: int, cfg: DistilConfig, rng: np.random.Generator) -> list[list[int]]:
    """Per row, ranks [positive, negative_1, ...] in the teacher's ranking: the positive among its top
    `positive_k`, the negatives distinct and below it within `top_k`; none when the ranking is too short."""
    top = min(cfg.top_k, ranking_length)
    if top < 1 + cfg.negatives:
        return []
    rows = []
    for _ in range(cfg.rows_per_anchor):
        positive = int(rng.integers(0, min(cfg.positive_k, top - cfg.negatives)))
        negatives = rng.choice(np.arange(positive + 1, top), size=cfg.negatives, replace=False)
        rows.append([positive, *sorted(int(n) for n in negatives)])
    return rows


def distillation_examples(papers: pd.DataFrame, embed: Embed, cfg: DistilConfig, seed: int
                          ) -> tuple[pd.DataFrame, dict]:
    """Margin-MSE rows from the teacher's ranking of `papers` (paper_id, title, abstract, content_hash) among
    themselves, `embed` being the base model reading cfg.max_seq_length tokens (the teacher's dense side).
    Returns (rows, infos): anchor, positive, negative_1..n (whole-paper texts), label (the scaled teacher
    margins, one per negative), anchor_id, positive_id, negative_ids, teacher (the margins before scaling);
    infos says how the labels were scaled."""
    if len(papers) < 2:
        raise PapersimError(f"distillation needs at least two training papers, got {len(papers)} "
                            "(is split.parquet's train split empty?)")
    ids = papers["paper_id"].tolist()
    texts = [passage_text(t, a) for t, a in zip(papers["title"], papers["abstract"])]
    vectors = np.asarray(embed(texts), dtype=np.float32)  # (n, dim)
    rankings = teacher_rankings(texts, vectors, papers["content_hash"].tolist(), cfg)
    rng = np.random.default_rng(seed)
    anchors, candidates, teacher = [], [], []
    for anchor, (rows, scores) in enumerate(rankings):
        for ranks in sample_candidates(len(rows), cfg, rng):
            anchors.append(anchor)
            candidates.append([rows[r] for r in ranks])
            teacher.append([scores[ranks[0]] - scores[r] for r in ranks[1:]])
    if not anchors:
        raise PapersimError(f"distillation: no training paper has {1 + cfg.negatives} candidates in its served "
                            f"answer among the {len(papers)} training papers; lower distil negatives or add papers")
    a, c = np.asarray(anchors), np.asarray(candidates)  # (rows,), (rows, 1 + negatives)
    teacher_margins = np.asarray(teacher, dtype=np.float64)  # (rows, negatives), fused z-score units
    cosines = np.einsum("rd,rcd->rc", vectors[a], vectors[c]).astype(np.float64)  # (rows, 1 + negatives)
    base_margins = cosines[:, :1] - cosines[:, 1:]  # (rows, negatives)
    # The teacher's margins are in fused z-score units (~1), the student's are cosine differences (~0.1). Scaled
    # by one factor, measured on these rows, so the labels' root mean square equals that of the base model's
    # own cosine margins on them: the student is asked to re-order candidates as the teacher does, at the
    # cosine spread it already has, not to stretch or squash all its scores. Root mean square about 0, not a
    # standard deviation: a margin of 0 (a tie) must stay 0 and the sign must stay the teacher's.
    teacher_rms = float(np.sqrt(np.mean(teacher_margins ** 2)))
    scale = float(np.sqrt(np.mean(base_margins ** 2))) / teacher_rms if teacher_rms > 0 else 0.0
    labels = teacher_margins * scale
    frame = pd.DataFrame({"anchor": [texts[i] for i in a], "positive": [texts[i] for i in c[:, 0]]})
    for j in range(cfg.negatives):
        frame[f"negative_{j + 1}"] = [texts[i] for i in c[:, j + 1]]
    frame["label"] = labels.tolist()
    frame["anchor_id"] = [ids[i] for i in a]
    frame["positive_id"] = [ids[i] for i in c[:, 0]]
    frame["negative_ids"] = [[ids[i] for i in row] for row in c[:, 1:]]
    frame["teacher"] = teacher_margins.tolist()
    infos = {"rows": len(frame), "anchors": len(set(anchors)), "papers": len(papers), "scale": scale,
             "teacher_margin_rms": teacher_rms, "base_margin_rms": float(np.sqrt(np.mean(base_margins ** 2))),
             "base_label_mse": float(np.mean((base_margins - labels) ** 2)),
             "base_label_correlation": float(np.corrcoef(base_margins.ravel(), labels.ravel())[0, 1])
             if labels.size > 1 else float("nan")}
    return frame, infos


def negative_columns(examples: pd.DataFrame) -> list[str]:
    """negative_1, negative_2, ... in order."""
    return sorted((c for c in examples.columns if c.startswith("negative_") and c[9:].isdigit()),
                  key=lambda c: int(c[9:]))


def student_margins(model, examples: pd.DataFrame, batch_size: int = 32) -> np.ndarray:
    """The model's cosine(anchor, positive) - cosine(anchor, negative_j) per row, (rows, negatives): what the
    labels ask for."""
    columns = ["anchor", "positive", *negative_columns(examples)]
    texts = list(dict.fromkeys(t for c in columns for t in examples[c]))
    vectors = model.encode(texts, batch_size=batch_size, normalize_embeddings=True, convert_to_numpy=True)
    row_of = {t: i for i, t in enumerate(texts)}
    v = {c: vectors[[row_of[t] for t in examples[c]]] for c in columns}  # column -> (rows, dim)
    cosines = np.stack([np.sum(v["anchor"] * v[c], axis=1) for c in columns[1:]], axis=1)  # (rows, 1 + negatives)
    return cosines[:, :1] - cosines[:, 1:]


def train_distilled(model, examples: pd.DataFrame, cfg: TrainConfig, distil: DistilConfig, output_dir: Path,
                    callbacks: list | None = None) -> tuple[Any, dict]:
    """Train `model` in place on `distillation_examples`' rows with margin-MSE over cosines; returns (the
    trainer, a report). No validation and no checkpoints: a run of minutes, judged afterwards by the task."""
    import torch
    from datasets import Dataset
    from sentence_transformers import SentenceTransformerTrainer, SentenceTransformerTrainingArguments
    from sentence_transformers.sentence_transformer.losses import MarginMSELoss
    from sentence_transformers.util import pairwise_cos_sim
    from transformers import PrinterCallback

    if len(examples) < cfg.batch_size:
        raise PapersimError(f"distillation: {len(examples)} training rows cannot fill one batch of {cfg.batch_size} "
                            "(train.batch_size): lower it, or raise distil rows_per_anchor")
    model.max_seq_length = distil.max_seq_length
    cuda = torch.cuda.is_available()
    columns = ["anchor", "positive", *negative_columns(examples), "label"]  # texts in the loss's order, then label
    dataset = Dataset.from_pandas(examples[columns].reset_index(drop=True))
    progress = progress_callback()
    args = SentenceTransformerTrainingArguments(
        output_dir=str(output_dir),
        max_steps=cfg.max_steps,
        per_device_train_batch_size=cfg.batch_size,  # no in-batch negatives: a text twice in a batch is harmless
        learning_rate=cfg.learning_rate,
        warmup_steps=cfg.warmup_ratio,  # a float below 1 is a share of the steps (transformers 5)
        weight_decay=cfg.weight_decay,
        bf16=use_bf16(cfg.precision, cuda),
        use_cpu=not cuda and use_bf16(cfg.precision, cuda),  # as train_encoder: bf16 on a CPU only when told
        dataloader_pin_memory=cuda,
        eval_strategy="no",
        save_strategy="no",
        logging_steps=cfg.logging_steps,
        seed=cfg.seed,
        data_seed=cfg.seed,
        report_to="none",
        dataloader_drop_last=True,
        disable_tqdm=True,
    )
    # cosine, not MarginMSELoss' default dot product: the labels are on the cosine scale the task ranks by
    trainer = SentenceTransformerTrainer(model=model, args=args, train_dataset=dataset,
                                         loss=MarginMSELoss(model, similarity_fct=pairwise_cos_sim),
                                         callbacks=[*(callbacks or []), progress])
    trainer.remove_callback(PrinterCallback)
    start = time.perf_counter()
    try:
        output = trainer.train()
    finally:
        progress.close()
    report = {
        "steps": trainer.state.global_step,
        "batch_size": cfg.batch_size,
        "rows": len(examples),
        "train_loss": output.training_loss,
        "loss_by_step": {str(h["step"]): h["loss"] for h in trainer.state.log_history if "loss" in h},
        "train_runtime_s": output.metrics.get("train_runtime", time.perf_counter() - start),
        "device": "cuda" if cuda else "cpu",
    }
    return trainer, report
