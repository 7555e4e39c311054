import json
import logging
import math
import re

import numpy as np
import pandas as pd
import pytest
import torch
from sentence_transformers import SentenceTransformer

from papersim.encoders.load import load_encoder
from papersim.errors import PapersimError
from papersim.training.train import (
    FINGERPRINT,
    TrainConfig,
    build_loss,
    check_steps,
    fillable_batch_size,
    last_checkpoint,
    loss_table,
    train_encoder,
    training_columns,
)
from tests.conftest import toy_pairs


def test_training_columns_orders_negatives_and_checks_there_are_enough():
    pairs = toy_pairs(3).rename(columns={"negative_1": "negative_10"}).assign(negative_1="x")
    cols = training_columns(pairs, TrainConfig(num_negatives=2))
    assert list(cols.columns) == ["anchor", "positive", "negative_1", "negative_2"]
    assert list(training_columns(pairs, TrainConfig(loss="triplet")).columns) == ["anchor", "positive", "negative_1"]
    with pytest.raises(PapersimError, match="2 negative column"):
        training_columns(toy_pairs(3), TrainConfig(num_negatives=3))


def test_config_rejects_unknown_loss_and_misaligned_checkpoints():
    with pytest.raises(ValueError, match="loss must be one of"):
        TrainConfig(loss="contrastive")
    with pytest.raises(ValueError, match="multiple of eval_steps"):
        TrainConfig(eval_steps=20, save_steps=30)


def test_each_loss_penalises_negatives_that_look_like_the_anchor(tiny_model_dir):
    model = load_encoder(str(tiny_model_dir), 32)
    anchors = ["graph networks paper 1", "robot control paper 2", "speech recognition paper 3", "protein folding 4"]
    unrelated = ["Unrelated work on databases.", "A survey of compilers.", "Type systems for SQL.", "Cache coherence."]

    def loss(cfg: TrainConfig, negatives: list[str]) -> float:
        features = [model.preprocess(texts) for texts in (anchors, anchors, negatives)]  # each anchor its own positive
        return build_loss(model, cfg)(features, None).item()

    configs = [TrainConfig(), TrainConfig(loss="cached_mnrl"), TrainConfig(loss="triplet"),
               TrainConfig(loss="triplet", matryoshka_dims=[32, 16])]
    for cfg in configs:
        assert loss(cfg, anchors) > loss(cfg, unrelated), cfg
    # cached MNRL saves memory, not a different objective
    assert loss(TrainConfig(loss="cached_mnrl"), unrelated) == pytest.approx(loss(TrainConfig(), unrelated))
    # triplet: a negative equal to the anchor (and positive) costs the whole margin (5), once per Matryoshka dimension
    assert loss(TrainConfig(loss="triplet"), anchors) == pytest.approx(5.0)
    assert loss(TrainConfig(loss="triplet", matryoshka_dims=[32, 16]), anchors) == pytest.approx(10.0)


def anchor_as_negative(model) -> list[dict]:
    """One row whose mined "negative" is its anchor's own text: as close as a negative can be."""
    anchor, positive = ["Graph neural networks for molecules."], ["Message passing predicts chemical properties."]
    return [model.preprocess(texts) for texts in (anchor, positive, anchor)]


def test_gist_drops_a_negative_the_base_model_scores_above_the_positive(tiny_model_dir):
    model = load_encoder(str(tiny_model_dir), 32)
    features = anchor_as_negative(model)
    gist = build_loss(model, TrainConfig(loss="gist", base_model=str(tiny_model_dir)))
    assert gist.guide is not model  # the guide keeps the base weights while the model trains
    # mnrl charges the copy as a hard negative; the guide ranks it above the positive, so gist does not count it
    assert build_loss(model, TrainConfig())(features, None).item() > math.log(2)
    assert gist(features, None).item() == pytest.approx(0.0, abs=1e-6)


def test_l2sp_adds_nothing_at_the_start_and_weight_x_squared_distance_once_weights_move(tiny_model_dir):
    model = load_encoder(str(tiny_model_dir), 32)
    features = anchor_as_negative(model)
    anchored = build_loss(model, TrainConfig(l2sp_weight=0.5))
    assert anchored(features, None).item() == pytest.approx(build_loss(model, TrainConfig())(features, None).item())
    with torch.no_grad():
        next(model.parameters()).add_(0.1)
    assert anchored.drift().item() == pytest.approx(0.01 * next(model.parameters()).numel(), rel=1e-3)
    assert anchored(features, None).item() == pytest.approx(
        build_loss(model, TrainConfig())(features, None).item() + 0.5 * anchored.drift().item(), rel=1e-5)
    with pytest.raises(ValueError, match="l2sp_weight must be 0"):
        TrainConfig(l2sp_weight=-1.0)


def test_only_checkpoints_of_the_same_run_are_resumed(tmp_path):
    ckpt = tmp_path / "ckpt"
    for step in (10, 20, 30):
        (ckpt / f"checkpoint-{step}").mkdir(parents=True)
    for step in (10, 20):  # checkpoint-30 was cut off before its state was written
        (ckpt / f"checkpoint-{step}" / "trainer_state.json").write_text("{}")
    (ckpt / FINGERPRINT).write_text(json.dumps({"fingerprint": "abc"}))
    assert last_checkpoint(ckpt, "abc").name == "checkpoint-20"
    assert last_checkpoint(ckpt, "other") is None and not ckpt.exists()  # stale: removed


def test_short_training_saves_a_model_plain_sentence_transformers_loads(tiny_model_dir, tmp_path):
    model = load_encoder(str(tiny_model_dir), 32)
    cfg = TrainConfig(max_steps=4, eval_steps=2, save_steps=2, logging_steps=1, batch_size=4, num_negatives=2)
    trainer, report = train_encoder(model, toy_pairs(40), toy_pairs(10, offset=100), cfg, tmp_path / "ckpt", "fp")
    assert report["steps"] == 4 and report["resumed_from_step"] == 0 and report["device"] == "cpu"
    assert report["best_metric"] == "val_cosine_ndcg@10" and set(report["val_ndcg@10_by_step"]) == {"2", "4"}
    assert list(loss_table(trainer.state.log_history)["step"]) == [1, 2, 3, 4]
    model.save(str(tmp_path / "out"))
    reloaded = SentenceTransformer(str(tmp_path / "out"))
    assert reloaded.encode(["graph networks"]).shape == (1, 32)


def test_training_writes_steps_time_left_and_validation_as_lines_not_dicts(tiny_model_dir, tmp_path, caplog, capsys,
                                                                         monkeypatch):
    monkeypatch.setattr("papersim.progress.INTERVAL_S", 0.02)  # a line within every step of the tiny model
    caplog.set_level(logging.INFO, logger="papersim.progress")
    model = load_encoder(str(tiny_model_dir), 32)
    cfg = TrainConfig(max_steps=4, eval_steps=2, save_steps=2, logging_steps=1, batch_size=4, num_negatives=2)
    train_encoder(model, toy_pairs(40), toy_pairs(10, offset=100), cfg, tmp_path / "ckpt", "fp")
    lines = [r.getMessage() for r in caplog.records if r.name == "papersim.progress"]
    steps = [line for line in lines if re.fullmatch(r"training [0-3]/4 steps \(.*(left|so far).*\)", line)]
    assert steps and any("left; loss " in line for line in steps)
    assert [line for line in lines if line.startswith("validation at step")] == [
        line for line in lines if re.fullmatch(r"validation at step [24]: val_cosine_ndcg@10 [0-9.]+", line)]
    assert len([line for line in lines if line.startswith("validation at step")]) == 2
    assert lines[-1].startswith("training 4/4 steps done in ")
    assert "{'loss'" not in capsys.readouterr().out  # the trainer's raw log dicts are not printed


@pytest.mark.gpu
def test_trains_on_cuda_with_bf16_autocast(tiny_model_dir, tmp_path):
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    model = load_encoder(str(tiny_model_dir), 32)
    cfg = TrainConfig(max_steps=4, eval_steps=2, save_steps=2, batch_size=4, num_negatives=2)
    trainer, report = train_encoder(model, toy_pairs(40), toy_pairs(10, offset=100), cfg, tmp_path / "ckpt", "fp")
    assert report["device"] == "cuda" and trainer.args.bf16 and report["steps"] == 4


def test_precision_is_bf16_on_gpus_and_fp32_on_cpus_unless_forced():
    from papersim.training.train import use_bf16

    assert use_bf16("auto", cuda=True) and not use_bf16("auto", cuda=False)
    assert use_bf16("bf16", cuda=False) and not use_bf16("fp32", cuda=True)
    with pytest.raises(ValueError, match="precision must be one of"):
        TrainConfig(precision="fp16")


def test_the_colisting_loss_trains_on_rows_labelled_with_their_papers_groups(tiny_model_dir, tmp_path):
    pairs = toy_pairs(40).assign(anchor_id=[f"p{i}" for i in range(40)], positive_id=[f"p{i + 1}" for i in range(40)])
    groups = {f"p{i}": [f"page{i % 5}"] for i in range(0, 41, 2)}  # odd papers are on no page
    columns = training_columns(pairs, TrainConfig(loss="colisting"), groups)
    assert list(columns.columns) == ["anchor", "positive", "label"]
    assert columns["label"][0][:2] == [0, -1] and columns["label"][1][:2] == [1, -1]  # p0's page, then p2's
    assert columns["label"][5] == columns["label"][15]  # p5 -> p6 and p15 -> p16: both on page1
    model = load_encoder(str(tiny_model_dir), 32)
    cfg = TrainConfig(loss="colisting", max_steps=2, eval_steps=2, save_steps=2, batch_size=4)
    _, report = train_encoder(model, pairs, toy_pairs(10, offset=100), cfg, tmp_path / "ckpt", "fp", groups=groups)
    assert report["steps"] == 2 and report["train_loss"] > 0


# The GPU recipe (docs: train, "GPU profile"): cached MNRL over batches of 256 rows, 3 mined negatives each.
GPU_RECIPE = {"loss": "cached_mnrl", "batch_size": 256, "mini_batch_size": 64, "learning_rate": 5e-5,
              "num_negatives": 3}


def cranfield_sized_pairs(n_pairs: int = 1129, n_abstracts: int = 1398, seed: int = 0) -> pd.DataFrame:
    """Pairs shaped as mine_pairs makes them from Cranfield alone (1,129 train pairs of its 1,398 abstracts): a
    title asks for its abstract, with 3 mined negatives among the other abstracts."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n_pairs):
        others = rng.choice(np.delete(np.arange(n_abstracts), i), 3, replace=False)
        rows.append({"anchor": f"title of paper {i}", "positive": f"abstract of paper {i}",
                     **{f"negative_{k + 1}": f"abstract of paper {j}" for k, j in enumerate(others)}})
    return pd.DataFrame(rows)


def test_the_batch_is_halved_until_no_duplicate_batches_fill_as_on_cranfield():
    """256 rows of 5 texts need ~1,000 distinct abstracts of Cranfield's 1,398: no batch of 256 fills (the run
    that made 0 steps); 128 do, and so does every size with fewer texts a row."""
    from datasets import Dataset

    cfg = TrainConfig(**GPU_RECIPE)
    rows = Dataset.from_pandas(training_columns(cranfield_sized_pairs(), cfg))
    assert fillable_batch_size(rows, 256, 3000, cfg.seed) == 128
    one_negative = Dataset.from_pandas(training_columns(cranfield_sized_pairs(), TrainConfig(num_negatives=1)))
    assert fillable_batch_size(one_negative, 256, 3000, cfg.seed) == 256
    assert fillable_batch_size(rows, 256, 2, cfg.seed) == 128  # the first pass: no full batch of 256 at all
    six_rows = Dataset.from_pandas(training_columns(toy_pairs(6), TrainConfig(num_negatives=2)))
    assert fillable_batch_size(six_rows, 16, 4, cfg.seed) == 4  # fewer rows than the batch: a batch that fills


def test_the_gpu_recipe_makes_the_steps_asked_on_a_cranfield_sized_corpus(tiny_model_dir, tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger="papersim.progress")
    model = load_encoder(str(tiny_model_dir), 32)
    cfg = TrainConfig(**GPU_RECIPE, max_seq_length=32, max_steps=2, eval_steps=2, save_steps=2)
    _, report = train_encoder(model, cranfield_sized_pairs(), toy_pairs(10, offset=2000), cfg, tmp_path / "ckpt", "fp")
    assert report["steps"] == 2 and (report["batch_size"], report["batch_size_asked"]) == (128, 256)
    assert "train.batch_size 256: no-duplicates batches of that size cannot be filled from 1129 training pairs" in \
        caplog.text


def test_a_run_that_makes_fewer_steps_than_asked_fails_naming_asked_and_made(tiny_model_dir, tmp_path, monkeypatch):
    monkeypatch.setattr("papersim.training.train.fillable_batch_size", lambda rows, size, steps, seed: size)
    model = load_encoder(str(tiny_model_dir), 32)
    cfg = TrainConfig(**GPU_RECIPE, max_seq_length=32, max_steps=2, eval_steps=2, save_steps=2)
    with pytest.raises(PapersimError, match=r"training made 0 of the 2 steps asked \(train.max_steps\) at batch size "
                                            r"256 on 1129 training pairs: the no-duplicates batch sampler"):
        train_encoder(model, cranfield_sized_pairs(), toy_pairs(10, offset=2000), cfg, tmp_path / "ckpt", "fp")
    patience_ran_out = True  # early stopping: fewer steps, as configured
    check_steps(3, TrainConfig(max_steps=6, eval_steps=3, save_steps=3), 16, 100, stopped_early=patience_ran_out)
    with pytest.raises(PapersimError, match="Lower train.batch_size or train.num_negatives"):
        check_steps(3, TrainConfig(max_steps=6, eval_steps=3, save_steps=3), 16, 100, stopped_early=False)
