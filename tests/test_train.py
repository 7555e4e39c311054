import json
import logging
import re

import pytest
from sentence_transformers import SentenceTransformer

from papersim.encoders.load import load_encoder
from papersim.errors import PapersimError
from papersim.training.train import (
    FINGERPRINT,
    TrainConfig,
    build_loss,
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
