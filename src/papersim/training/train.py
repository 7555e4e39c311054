"""Fine-tune a Siamese bi-encoder on mined pairs with sentence-transformers' trainer and losses.

One code path for CPU (fp32) and CUDA (bf16 autocast), single process or `torchrun` (DDP).
Checkpoints every `save_steps` let a killed run resume where it stopped.
"""

import hashlib
import json
import os
import shutil
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from papersim.errors import PapersimError
from papersim.progress import LOGGER, Clock, Heartbeat, Progress
from papersim.retrieval.fusion import Fusion
from papersim.encoders.engine import EncodingEngine

LOSSES = ("mnrl", "cached_mnrl", "triplet", "colisting", "gist")
PRECISIONS = ("auto", "bf16", "fp32")
TIMINGS = ("train_runtime_s", "train_pairs_per_s")  # wall clock: the MLflow run, not the report (stage.split_timings)
FINGERPRINT = "papersim-run.json"  # in the checkpoint folder: which config and data the checkpoints belong to


@dataclass(frozen=True)
class TrainConfig(EncodingEngine):
    """params.yaml `train` section. The defaults are the CPU profile (README: GPU profile)."""

    base_model: str = ""  # a sentence-transformers folder; "" = the packaged all-MiniLM-L6-v2
    loss: str = "mnrl"  # mnrl (in-batch + mined negatives) | cached_mnrl (large batches) | triplet | colisting
    # (mnrl that never treats co-listed papers as each other's negatives, both directions: training.losses) | gist
    # (mnrl minus the in-batch negatives the base model already scores above the pair's positive: GISTEmbedLoss)
    l2sp_weight: float = 0.0  # above 0: the loss also pays this x the squared distance from the base weights (L2-SP,
    # training.losses); 0: training moves freely, as it always has
    matryoshka_dims: list[int] = field(default_factory=list)  # e.g. [384, 128, 64]: also train truncations
    mini_batch_size: int = 16  # cached_mnrl: rows per forward pass; the batch can be far larger
    max_seq_length: int = 128  # tokens per text: abstracts average ~250; 128 keeps a CPU run in minutes
    batch_size: int = 16  # pairs per step (per device): in-batch negatives grow with it
    num_negatives: int = 0  # in-batch negatives only: each mined one (<= what mine_pairs wrote) costs a step ~50%
    learning_rate: float = 2e-5  # the usual fine-tuning rate for MiniLM-sized encoders
    warmup_ratio: float = 0.1  # linear warm-up share of the steps
    weight_decay: float = 0.01
    max_steps: int = 20  # CPU profile: ~3.5 s a step on 2 cores; the main command stays within 10 minutes
    eval_steps: int = 20  # validation every this many steps: one at the end (each costs ~20 s on 2 cores)
    save_steps: int = 20  # checkpoint interval: a killed run loses at most this many steps
    early_stopping_patience: int = 3  # evaluations without improvement before stopping
    logging_steps: int = 5
    seed: int = 13
    precision: str = "auto"  # auto: bf16 autocast on CUDA, fp32 on CPUs (where autocast slows training down)
    # What the candidate serves, chosen after training on validation pseudo-queries only where the training pairs
    # did not teach them (papersim.training.selection): a model always wins the task it was trained on.
    select_encoder: bool = True  # the trained encoder serves only if it beat the base model there beyond noise
    select_min_gain: float = 0.0  # ... by more than this dense nDCG@10, beyond noise (0: a gain, not noise)
    selection_sets: list[str] = field(default_factory=list)  # BEIR folders of your own judged queries (never
    # evaluate's sets): evidence for the encoder and the fusion weight; none shipped: no judged data is the norm
    selection_max_trained_share: float = 0.05  # pseudo-queries are evidence when at most this share of the
    # training pairs are self-retrieval (title -> abstract, inverse cloze): a share that cannot teach the task
    fusion: str = "convex"  # convex (normalised scores, dense weight alpha) | rrf (reciprocal ranks)
    fusion_alpha: float | str = "auto"  # dense weight; auto: 0.5 (at least every baseline on 4/4 corpus shapes)
    # unless another weight beats it beyond noise on the independent pseudo-queries (README "Fusion")
    fusion_normalisation: str = "zscore"  # per-query score scale before the convex sum: zscore | minmax
    fusion_depth: int = 100  # candidates per system, as evaluate.depth: what is served is what is measured
    rrf_k: int = 60  # fusion: rrf only; Cormack et al.'s constant
    selection_queries: int = 500  # validation papers asking for themselves (a title or a sentence)
    selection_docs: int = 20_000  # corpus they search (the rest a seeded sample of non-test papers)
    stemmer: str = "english"  # BM25 of the fusion, as evaluate and build_index
    backend: str = "auto"  # encoding the pseudo-queries: openvino on CPUs; the embedding cache is shared
    encode_batch_size: int = 32
    # How "papers similar to this one" is answered, chosen on validation papers asking for their co-listed
    # papers (papersim.training.similar_choice; the test split is never read):
    similar_encoder: str = "auto"  # auto: trained or a merge of it only if its answers beat base's on known
    # listings beyond noise and hold on unseen ones (none to compare on: base, which training cannot have
    # harmed) | trained | base
    similar_merge: list[float] = field(default_factory=lambda: [0.5, 1.0])  # auto's candidates, the trained
    # model's weight a in (1 - a) x base + a x trained: WiSE-FT's midpoint, near its best under shift, and
    # trained itself; each costs one encoding of the validation papers, and a stricter p (0.05 / candidates)
    similar_min_gain: float = 0.0  # ... by more than this precision@10 on known listings, beyond noise
    similar_max_unseen_loss: float = 0.005  # ... and on unseen listings at most this far below base on average
    # (and not worse beyond noise): a new topic must not pay for the known ones
    similar_min_listings: int = 6  # fewer listings: the defaults serve. c listings give no p below 2/2^c: 5 cannot
    # reach p < 0.05 (0.0625), 6 can (0.031); the encoder needs them in all, a setting on its other half
    similar_fusion: str = "convex"  # as `fusion`, for paper-as-query: its own weight (a paper is not a title)
    similar_alpha: float | str = "auto"  # dense weight, auto: 0.5 unless another beats it there beyond noise
    similar_normalisation: str = "zscore"  # as fusion_normalisation
    similar_depth: int = 100  # candidates per signal, as evaluate.depth
    similar_views: list[str] = field(default_factory=lambda: ["256", "128"])  # paper views tried, the default
    # first: 256 tokens is MiniLM's own limit and reads an average abstract whole; TOKENSxWINDOWS mean-pools windows
    similar_lexical: list[str] = field(default_factory=lambda: ["paper", "mlt25", "mlt100"])  # BM25 queries
    # tried, the default first: the whole paper, as a user without papersim would (README "Similar papers")
    similar_queries: int = 500  # validation papers asking (a seeded sample beyond)
    max_group_size: int = 100  # co-listing groups that mean similarity, as mine_pairs and evaluate

    def __post_init__(self) -> None:
        self.check_engine()
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {', '.join(LOSSES)}, not {self.loss!r}")
        if self.l2sp_weight < 0:
            raise ValueError(f"l2sp_weight must be 0 (off) or positive, not {self.l2sp_weight}")
        if self.save_steps % self.eval_steps:
            raise ValueError("save_steps must be a multiple of eval_steps (the best checkpoint is kept)")
        if min(self.batch_size, self.max_steps, self.eval_steps, self.max_seq_length) < 1:
            raise ValueError("batch_size, max_steps, eval_steps and max_seq_length must be positive")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, not {self.precision!r}")
        if any(d < 1 for d in self.matryoshka_dims):
            raise ValueError("matryoshka_dims must be positive")
        if self.fusion_alpha != "auto" and not (isinstance(self.fusion_alpha, (int, float))
                                                and 0 <= self.fusion_alpha <= 1):
            raise ValueError(f"fusion_alpha must be auto or a number in [0, 1], got {self.fusion_alpha!r}")
        self.serving_fusion()  # raises on an unknown fusion or normalisation
        if not 0 <= self.selection_max_trained_share <= 1:
            raise ValueError("selection_max_trained_share must be in [0, 1]")
        if min(self.selection_queries, self.selection_docs, self.encode_batch_size) < 1:
            raise ValueError("selection_queries, selection_docs and encode_batch_size must be positive")
        if self.similar_encoder not in ("auto", "trained", "base"):
            raise ValueError(f"similar_encoder must be auto, trained or base, not {self.similar_encoder!r}")
        if self.similar_alpha != "auto" and not (isinstance(self.similar_alpha, (int, float))
                                                 and 0 <= self.similar_alpha <= 1):
            raise ValueError(f"similar_alpha must be auto or a number in [0, 1], got {self.similar_alpha!r}")
        if not self.similar_views or not self.similar_lexical:
            raise ValueError("similar_views and similar_lexical: give at least one setting each (the default first)")
        if min(self.similar_queries, self.similar_depth, self.max_group_size) < 1:
            raise ValueError("similar_queries, similar_depth and max_group_size must be positive")
        if not self.similar_merge or any(not 0 < a <= 1 for a in self.similar_merge):
            raise ValueError(f"similar_merge: the trained model's weights to try, each in (0, 1] (1: the trained "
                             f"model), got {self.similar_merge!r}")
        if self.similar_max_unseen_loss < 0:
            raise ValueError(f"similar_max_unseen_loss must be >= 0, got {self.similar_max_unseen_loss}")
        if self.similar_min_listings < 2:
            raise ValueError(f"similar_min_listings must be at least 2 (one listing has no spread to test), "
                             f"got {self.similar_min_listings}")
        self.similar_choice().template()  # raises on an unknown fusion or normalisation

    def similar_choice(self):
        """What is left to choose for the similar task (papersim.training.similar_choice.SimilarChoice)."""
        from papersim.encoders.windows import PaperView
        from papersim.retrieval.similar import parse_lexical
        from papersim.training.similar_choice import SimilarChoice

        return SimilarChoice(self.similar_encoder, self.similar_min_gain, self.similar_fusion, self.similar_alpha,
                             self.similar_normalisation, self.similar_depth, self.rrf_k,
                             tuple(dict.fromkeys(PaperView.parse(v) for v in self.similar_views)),
                             tuple(dict.fromkeys(parse_lexical(str(q)) for q in self.similar_lexical)),
                             self.similar_min_listings, self.similar_max_unseen_loss)

    def serving_fusion(self) -> Fusion:
        """The configured fusion (alpha 0.5 until chosen when fusion_alpha is auto)."""
        alpha = 0.5 if self.fusion_alpha == "auto" else float(self.fusion_alpha)
        return Fusion(method=self.fusion, alpha=alpha, normalisation=self.fusion_normalisation, rrf_k=self.rrf_k,
                      depth=self.fusion_depth)


def use_bf16(precision: str, cuda: bool) -> bool:
    """auto: bf16 autocast on GPUs only. On CPUs training under autocast was 2.3x slower here (30 steps:
    345 s vs 150 s on 2 AVX512-BF16 cores), although bf16 inference (OpenVINO) is 2x faster."""
    if precision == "auto":
        return cuda
    return precision == "bf16"


def negative_columns(pairs: pd.DataFrame) -> list[str]:
    """negative_1, negative_2, ... in order (not negative_ids)."""
    return sorted((c for c in pairs.columns if c.startswith("negative_") and c[9:].isdigit()), key=lambda c: int(c[9:]))


def training_columns(pairs: pd.DataFrame, cfg: TrainConfig,
                     groups: Mapping[str, Sequence[str]] | None = None) -> pd.DataFrame:
    """anchor, positive, negative_1..n as the loss expects them (triplet: one negative); colisting adds
    `label`: each row's co-listing group codes, from `groups` (paper id -> its similarity groups)."""
    available = negative_columns(pairs)
    wanted = 1 if cfg.loss == "triplet" else cfg.num_negatives
    if len(available) < wanted:
        raise PapersimError(
            f"the pairs have {len(available)} negative column(s), train.num_negatives wants {wanted}: "
            f"lower train.num_negatives or raise mine_pairs.num_negatives")
    columns = pairs[["anchor", "positive", *available[:wanted]]].reset_index(drop=True)
    if cfg.loss == "colisting":
        from papersim.training.losses import group_codes

        groups = groups or {}
        columns["label"] = group_codes([list(groups.get(a, ())) for a in pairs["anchor_id"]],
                                       [list(groups.get(p, ())) for p in pairs["positive_id"]])
    return columns


def val_evaluator(val: pd.DataFrame, batch_size: int, num_negatives: int):
    """IR evaluator on validation pairs: each anchor must find its positive among the val positives
    and their first `num_negatives` mined negatives (the texts training saw per pair)."""
    from sentence_transformers.sentence_transformer.evaluation import InformationRetrievalEvaluator

    negatives = negative_columns(val)[:num_negatives]
    texts = pd.unique(pd.concat([val["positive"], *(val[c] for c in negatives)]))
    doc_id = {t: f"d{i}" for i, t in enumerate(texts)}
    queries = {f"q{i}": a for i, a in enumerate(val["anchor"])}
    relevant = {f"q{i}": {doc_id[p]} for i, p in enumerate(val["positive"])}
    return InformationRetrievalEvaluator(queries, {v: k for k, v in doc_id.items()}, relevant, name="val",
                                         batch_size=batch_size, write_csv=False, show_progress_bar=False)


def build_loss(model, cfg: TrainConfig):
    from sentence_transformers.sentence_transformer import losses

    if cfg.loss == "colisting":
        from papersim.training.losses import CoListingLoss

        loss = CoListingLoss(model)
    elif cfg.loss == "mnrl":
        loss = losses.MultipleNegativesRankingLoss(model)
    elif cfg.loss == "gist":
        from papersim.encoders.load import load_encoder

        # the guide is the base model: what it already ranks above a pair's positive is no negative to learn from
        loss = losses.GISTEmbedLoss(model, load_encoder(cfg.base_model, cfg.max_seq_length, str(model.device)))
    elif cfg.loss == "cached_mnrl":
        loss = losses.CachedMultipleNegativesRankingLoss(model, mini_batch_size=cfg.mini_batch_size)
    else:
        loss = losses.TripletLoss(model)
    if cfg.matryoshka_dims:
        loss = losses.MatryoshkaLoss(model, loss, matryoshka_dims=list(cfg.matryoshka_dims))
    if cfg.l2sp_weight > 0:
        from papersim.training.losses import L2SPLoss

        loss = L2SPLoss(model, loss, cfg.l2sp_weight)
    return loss


def fillable_batch_size(dataset, batch_size: int, steps: int, seed: int) -> int:
    """The batch size training can fill: `batch_size`, halved until the no-duplicates sampler (a text twice in
    a batch would be its own negative) yields the batches a pass over `dataset` (training_columns' rows)
    announces, or `steps` of them, whichever is fewer. It skips a row that repeats a text of the batch and
    resamples to refill; on a small corpus with several mined negatives a large batch never fills (256 rows
    of 5 texts need ~1,000 distinct abstracts of Cranfield's ~1,400): no step would run. The probe is the
    trainer's own sampler, seeded as it seeds it, so it sees the first epoch's batches."""
    from itertools import islice

    import torch
    from sentence_transformers.base.sampler import NoDuplicatesBatchSampler

    size = batch_size
    while size > 1:
        sampler = NoDuplicatesBatchSampler(dataset, size, drop_last=True, valid_label_columns=["label"],
                                           generator=torch.Generator().manual_seed(seed), seed=seed)
        wanted = min(len(sampler), steps)
        if wanted and sum(1 for _ in islice(iter(sampler), wanted)) == wanted:
            return size
        size //= 2
    return 1


def check_steps(made: int, cfg: TrainConfig, batch_size: int, pairs: int, stopped_early: bool) -> None:
    """A run that makes fewer optimizer steps than asked (early stopping aside) has not trained what the
    config says: stop before anything is written."""
    if made < cfg.max_steps and not stopped_early:
        raise PapersimError(
            f"training made {made} of the {cfg.max_steps} steps asked (train.max_steps) at batch size {batch_size} "
            f"on {pairs} training pairs: the no-duplicates batch sampler found too few batches whose "
            f"{batch_size} rows share no text. Lower train.batch_size or train.num_negatives, or mine more pairs "
            "(mine_pairs.max_pairs, more papers)")


def run_fingerprint(cfg: TrainConfig, data_files: list[Path]) -> str:
    """Checkpoints are resumed only by a run with the same config and the same pairs."""
    digest = hashlib.sha256(json.dumps(asdict(cfg), sort_keys=True).encode())
    for path in data_files:
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def last_checkpoint(checkpoints: Path, fingerprint: str) -> Path | None:
    """The newest checkpoint of an interrupted run with this fingerprint; stale ones are removed."""
    marker = checkpoints / FINGERPRINT
    if checkpoints.is_dir() and (not marker.is_file() or json.loads(marker.read_text())["fingerprint"] != fingerprint):
        shutil.rmtree(checkpoints)
    if not checkpoints.is_dir():
        return None
    found = sorted(checkpoints.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    complete = [p for p in found if (p / "trainer_state.json").is_file()]
    return complete[-1] if complete else None


def progress_callback(interval: float | None = None, clock: Clock = time.monotonic):
    """A transformers TrainerCallback writing training's progress lines (papersim.progress) on the main process:
    steps done of the total with the rate, the time left and the latest loss every `interval` seconds, also
    within a step longer than that (no progress bar: it fills a log file), a heartbeat while validation runs
    and its nDCG@10 after; `close()` ends them (a failed run)."""
    from transformers import TrainerCallback

    class _TrainingProgress(TrainerCallback):
        steps: Progress | None = None
        validation: Heartbeat | None = None

        def on_train_begin(self, args, state, control, **kwargs):
            if state.is_world_process_zero:  # a resumed run's steps count from its checkpoint
                self.steps = Progress("training", state.max_steps, "steps", interval, clock, start=state.global_step)
                self.steps.start_ticking()

        def on_step_end(self, args, state, control, **kwargs):
            if self.steps is not None:
                self.steps.advance()
                if control.should_evaluate:  # the trainer validates right after this call
                    self.steps.stop_ticking()
                    self.validation = Heartbeat(f"validating at step {state.global_step}", interval, clock).start()

        def on_evaluate(self, args, state, control, **kwargs):
            self._stop_validation()
            if self.steps is not None:
                self.steps.start_ticking()

        def on_log(self, args, state, control, logs=None, **kwargs):
            if self.steps is None or not logs:
                return
            if "loss" in logs:
                self.steps.detail = f"loss {logs['loss']:.4g}"
            found = {k.removeprefix("eval_"): v for k, v in logs.items() if k.endswith("ndcg@10")}
            if found:
                LOGGER.info(f"validation at step {state.global_step}: "
                            + ", ".join(f"{k} {v:.4f}" for k, v in found.items()))

        def on_train_end(self, args, state, control, **kwargs):
            self.close()

        def _stop_validation(self) -> None:
            if self.validation is not None:
                self.validation.stop()
                self.validation = None

        def close(self) -> None:
            self._stop_validation()
            if self.steps is not None:
                self.steps.done()
                self.steps = None

    return _TrainingProgress()


def train_encoder(
    model, train: pd.DataFrame, val: pd.DataFrame, cfg: TrainConfig, checkpoints: Path, fingerprint: str,
    callbacks: list | None = None, groups: Mapping[str, Sequence[str]] | None = None,
) -> tuple[Any, dict]:
    """Train `model` in place; returns (the trainer, a report). Resumes from `checkpoints` if possible.
    `groups` (paper id -> similarity groups) labels the rows for the colisting loss."""
    import torch
    from datasets import Dataset
    from sentence_transformers import SentenceTransformerTrainer, SentenceTransformerTrainingArguments
    from sentence_transformers.sentence_transformer.training_args import BatchSamplers  # its home since 6.x
    from transformers import EarlyStoppingCallback, PrinterCallback

    resume = last_checkpoint(checkpoints, fingerprint)
    checkpoints.mkdir(parents=True, exist_ok=True)
    (checkpoints / FINGERPRINT).write_text(json.dumps({"fingerprint": fingerprint}))
    model.max_seq_length = cfg.max_seq_length
    cuda = torch.cuda.is_available()
    # sentence-transformers 6.2's distributed evaluator deadlocks under DDP on gloo (rank 1 leaves the
    # evaluation while rank 0 still broadcasts encode requests). Under torchrun the best checkpoint
    # is chosen by validation loss instead; single-process runs use the IR evaluator's nDCG@10.
    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    best_metric = "eval_loss" if distributed else "eval_val_cosine_ndcg@10"
    validate = len(val) > 0  # a tiny corpus can leave the val split without pairs: train without checks
    progress = progress_callback()
    train_dataset = Dataset.from_pandas(training_columns(train, cfg, groups))
    batch_size = fillable_batch_size(train_dataset, cfg.batch_size, cfg.max_steps, cfg.seed)
    if batch_size < cfg.batch_size:
        LOGGER.warning(f"train.batch_size {cfg.batch_size}: no-duplicates batches of that size cannot be filled "
                       f"from {len(train)} training pairs of {train_dataset.num_columns} texts each; training "
                       f"with batches of {batch_size}")
    stopper = EarlyStoppingCallback(cfg.early_stopping_patience) if validate else None
    args = SentenceTransformerTrainingArguments(
        output_dir=str(checkpoints),
        max_steps=cfg.max_steps,
        per_device_train_batch_size=batch_size,
        per_device_eval_batch_size=cfg.batch_size,
        learning_rate=cfg.learning_rate,
        warmup_steps=cfg.warmup_ratio,  # a float below 1 is a share of the steps (transformers 5)
        weight_decay=cfg.weight_decay,
        bf16=use_bf16(cfg.precision, cuda),
        # transformers accepts bf16 without a GPU only when told it is on a CPU; otherwise leave the
        # default, which torchrun's DDP set-up on CPUs relies on.
        use_cpu=not cuda and use_bf16(cfg.precision, cuda),
        batch_sampler=BatchSamplers.NO_DUPLICATES,  # a text twice in a batch would be its own negative
        dataloader_pin_memory=cuda,  # pinned memory only speeds copies to a GPU (and warns without one)
        eval_strategy="steps" if validate else "no",
        eval_steps=cfg.eval_steps,
        save_strategy="steps",
        save_steps=cfg.save_steps,
        save_total_limit=2,
        load_best_model_at_end=validate,
        metric_for_best_model=best_metric if validate else None,
        greater_is_better=not distributed,
        logging_steps=cfg.logging_steps,
        seed=cfg.seed,
        data_seed=cfg.seed,
        report_to="none",  # the stage's MLflow run receives the logs through a callback
        dataloader_drop_last=True,
        disable_tqdm=True,
        ddp_find_unused_parameters=False,
        ddp_backend=("nccl" if cuda else "gloo") if distributed else None,
    )
    trainer = SentenceTransformerTrainer(
        model=model,
        args=args,
        train_dataset=train_dataset,
        eval_dataset=Dataset.from_pandas(training_columns(val, cfg, groups)) if distributed and validate else None,
        loss=build_loss(model, cfg),
        evaluator=val_evaluator(val, cfg.batch_size, cfg.num_negatives) if validate and not distributed else None,
        callbacks=[*([stopper] if stopper else []), *(callbacks or []), progress],
    )
    trainer.remove_callback(PrinterCallback)  # a raw dict per logging step: the progress lines say it readably
    try:
        output = trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    finally:
        progress.close()  # a failed run leaves no heartbeat running
    state = trainer.state
    check_steps(state.global_step, cfg, batch_size, len(train),
                stopper is not None and stopper.early_stopping_patience_counter >= cfg.early_stopping_patience)
    evals = [h for h in state.log_history if "eval_val_cosine_ndcg@10" in h]
    report = {
        "steps": state.global_step,
        "batch_size": batch_size,
        **({"batch_size_asked": cfg.batch_size} if batch_size < cfg.batch_size else {}),
        "resumed_from_step": int(resume.name.split("-")[1]) if resume else 0,
        "train_loss": output.training_loss,
        "train_runtime_s": output.metrics.get("train_runtime"),
        "train_pairs_per_s": output.metrics.get("train_samples_per_second"),
        "best_metric": best_metric.removeprefix("eval_") if validate else "none (no validation pairs)",
        "best_metric_value": state.best_metric,
        "best_checkpoint_step": int(Path(state.best_model_checkpoint).name.split("-")[1])
        if state.best_model_checkpoint else None,
        "val_ndcg@10_by_step": {str(h["step"]): h["eval_val_cosine_ndcg@10"] for h in evals},
        "device": "cuda" if cuda else "cpu",
        "world_size": args.world_size,
        "train_pairs": len(train),
    }
    return trainer, report


def save_encoder(model, folder: Path) -> None:
    """Save the trained model as a sentence-transformers folder, the same bytes for the same weights: the model
    card (README.md) would otherwise state this run's wall-clock training time, its only part that varies."""
    card = model.model_card_data
    started, card._training_start_time = card._training_start_time, None  # no start: the card leaves timing out
    try:
        model.save(str(folder))
    finally:
        card._training_start_time = started


def loss_table(log_history: list[dict]) -> pd.DataFrame:
    """step and training loss per logged step, for reports/train_loss.csv."""
    rows = [{"step": h["step"], "loss": h["loss"]} for h in log_history if "loss" in h]
    return pd.DataFrame(rows, columns=["step", "loss"])


def save_loss_plot(table: pd.DataFrame, val_ndcg: dict[str, float], path: Path) -> None:
    """Training loss and validation nDCG@10 against steps, as a PNG."""
    from papersim.plots import pyplot

    plt = pyplot()

    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(table["step"], table["loss"], label="train loss", color="tab:blue")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    if val_ndcg:
        right = ax.twinx()
        steps = [int(s) for s in val_ndcg]
        right.plot(steps, list(val_ndcg.values()), "o-", color="tab:orange", label="val nDCG@10")
        right.set_ylabel("val nDCG@10")
    ax.set_title("papersim train")
    fig.tight_layout()
    fig.savefig(path, format="png", dpi=100)
    plt.close(fig)
