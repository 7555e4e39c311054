"""papersim's CUDA training path on Cranfield: throughput and quality of the GPU and CPU recipes.

    PYTHONPATH=src python benchmarks/gpu_profile.py [--steps 100 --eval-every 50] [--recipes gpu cpu]
        [--base-model DIR] [--eval-seq-lens 128 256] [--json gpu_profile.json]
    PYTHONPATH=src python benchmarks/gpu_profile.py --smoke   # 2 steps, tiny batches: checks the script (CPU is fine)

Cranfield's 1,398 non-empty abstracts are the corpus (no groups, no judgments read while training).
Pairs are mined as the mine_pairs stage does (params.yaml `mine_pairs`: title -> abstract positives,
bm25 and dense hard negatives, seeded split), then the base model (all-MiniLM-L6-v2) is trained
with `papersim.training.train.train_encoder`, once per recipe:

  - gpu: the README's GPU profile: params.yaml `train` with loss cached_mnrl, batch 256 (mini-batch 64),
    256 tokens, learning rate 5e-5, 3 mined negatives; `--steps` steps (Cranfield has ~1,100 train pairs,
    so 100 steps of 256 are ~20 epochs), validation and checkpoints every `--eval-every` steps. Batches
    never hold a text twice (the no-duplicates sampler), and 256 rows of 5 texts need ~1,000 distinct
    abstracts out of Cranfield's ~1,100 train papers: no full batch can be formed, so no step ran here
    (recorded below); `train_encoder` now halves such a batch until it fills (128 here) and fails a run
    that makes fewer steps than asked;
  - gpu_neg1: the same with 1 mined negative (full batches of 256 form);
  - gpu_b128: the same with batch 128 and 3 negatives.
    The sampler forms fewer batches per pass than it announces here (3 of 4, 5 of 8); sentence-transformers
    6.2 (the pinned version) refills them by resampling, 6.0 does not, and the trainer then stops short
    of `--steps` (75 and 65 of 100 with 6.0.1): the table gives the steps that ran;
  - cpu: the shipped CPU profile, params.yaml `train` as it is (colisting, batch 16, 128 tokens, lr 1e-4,
    60 steps), run on the same device for comparison.

Precision is params.yaml's `auto`: bf16 autocast on CUDA, fp32 on a CPU. Every trained model and the
base model are then scored on Cranfield's 225 judged queries with `evaluate_set` (nDCG@10): bm25, base,
trained, their RRF fusions with bm25 (base_hybrid, hybrid) and `convex`, the shipped served fusion
(z-scored convex, alpha 0.5) of bm25 and the trained encoder, i.e. what search serves when the
trained encoder is chosen. Dense vectors come from plain `SentenceTransformer.encode` (unit vectors,
fp32) at each of `--eval-seq-lens` tokens (the evaluate stage uses 128).

The table gives per recipe: steps run, epochs over the train pairs, the trainer's pairs/s (its
runtime includes validation and checkpoints) and pairs/s over the training steps alone, the train
call's wall time, the device, peak GPU memory, and nDCG@10. With `--json PATH` the rows are also
written as JSON.
"""

import argparse
import hashlib
import json
import os
import shutil
import sys
import time
import traceback
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from papersim.config import build_config, read_params  # noqa: E402
from papersim.encoders.load import load_encoder  # noqa: E402
from papersim.env import apply_offline_defaults  # noqa: E402
from papersim.evaluation.evaluate import EvaluateConfig, evaluate_set  # noqa: E402
from papersim.evaluation.sets import EvalSet  # noqa: E402
from papersim.evaluation.shapes import read_beir_papers, reshape  # noqa: E402
from papersim.retrieval.passage import passage_text  # noqa: E402
from papersim.training.pairs import MinePairsConfig, mine_pairs  # noqa: E402
from papersim.training.train import TrainConfig, train_encoder  # noqa: E402
from record import record  # noqa: E402

CRANFIELD = REPO / "data/raw/beir/cranfield"
WORK = REPO / "benchmarks/.work/gpu_profile"
# The README's GPU profile ("train"), with the step counts set from the command line.
GPU_PROFILE = {"loss": "cached_mnrl", "batch_size": 256, "mini_batch_size": 64, "max_seq_length": 256,
               "learning_rate": 5e-5, "num_negatives": 3}
# Recipe -> overrides of params.yaml `train` (None: the shipped CPU profile as it is). On a corpus as small
# as Cranfield a batch of 256 rows with 3 negatives each needs ~1,000 distinct abstracts, which the
# no-duplicates batch sampler cannot find among ~1,100 train papers: the two variants keep the batch or
# the negatives.
RECIPES = {"gpu": GPU_PROFILE, "gpu_neg1": {**GPU_PROFILE, "num_negatives": 1},
           "gpu_b128": {**GPU_PROFILE, "batch_size": 128}, "cpu": None}
SMOKE = {"batch_size": 8, "mini_batch_size": 4, "max_seq_length": 32, "max_steps": 2, "eval_steps": 2,
         "save_steps": 2}


def cranfield() -> tuple[pd.DataFrame, dict[str, str], dict[str, dict[str, int]]]:
    """Papers (paper_id, title, abstract, groups, content_hash), judged queries (id -> text) and qrels."""
    papers, queries, qrels = read_beir_papers(CRANFIELD)
    return reshape(papers, qrels, "titled")[0], queries, qrels


def embedder(model, max_seq_length: int, batch_size: int):
    """texts -> (n, dim) unit float32 vectors from `model` at `max_seq_length` tokens; repeated texts are
    encoded once (the base model's vectors serve every recipe)."""
    cache: dict[str, np.ndarray] = {}

    def embed(texts: list[str]) -> np.ndarray:
        key = hashlib.sha1("\x00".join(texts).encode()).hexdigest()
        if key not in cache:
            model.max_seq_length = max_seq_length
            cache[key] = np.asarray(model.encode(list(texts), batch_size=batch_size, normalize_embeddings=True,
                                                 convert_to_numpy=True, show_progress_bar=False), dtype=np.float32)
        return cache[key]

    return embed


class StepTimer:
    """Trainer callback: seconds spent inside training steps (validation and checkpoints excluded),
    with the device synchronised at each step's end."""

    def __new__(cls):
        from transformers import TrainerCallback

        class _Timer(TrainerCallback):
            def __init__(self) -> None:
                self.times: list[float] = []
                self.started = 0.0

            def on_step_begin(self, args, state, control, **kwargs):
                _synchronize()
                self.started = time.perf_counter()

            def on_step_end(self, args, state, control, **kwargs):
                _synchronize()
                self.times.append(time.perf_counter() - self.started)

        return _Timer()


def _synchronize() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def device_name() -> str:
    import torch

    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    return f"cpu ({os.cpu_count()} cores)"


def recipe_config(name: str, params: dict, args) -> TrainConfig:
    cfg = build_config(TrainConfig, params["train"], "params.yaml: train")
    if args.base_model:
        cfg = replace(cfg, base_model=args.base_model)
    if RECIPES[name] is not None:
        cfg = replace(cfg, **RECIPES[name], max_steps=args.steps, eval_steps=args.eval_every,
                      save_steps=args.eval_every)
    if args.smoke:
        cfg = replace(cfg, **SMOKE)
    return cfg


def train_recipe(name: str, cfg: TrainConfig, pairs, work: Path) -> tuple[object, dict]:
    """Trains a fresh base model with `cfg`; returns the model (best checkpoint loaded) and the facts."""
    import torch

    checkpoints = work / f"checkpoints-{name}"
    shutil.rmtree(checkpoints, ignore_errors=True)  # a benchmark never resumes
    model = load_encoder(cfg.base_model, cfg.max_seq_length)
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    timer = StepTimer()
    fingerprint = hashlib.sha256(json.dumps(asdict(cfg), sort_keys=True, default=str).encode()).hexdigest()[:16]
    start = time.perf_counter()
    _, report = train_encoder(model, pairs.train, pairs.val, cfg, checkpoints, fingerprint, callbacks=[timer])
    _synchronize()
    wall = time.perf_counter() - start
    shutil.rmtree(checkpoints, ignore_errors=True)
    steady = timer.times[2:] if len(timer.times) > 4 else timer.times  # the first steps warm kernels up
    batch = report["batch_size"]  # the train stage halves a batch the no-duplicates sampler cannot fill
    facts = {
        "recipe": name, "loss": cfg.loss, "batch_size": batch, "batch_size_asked": cfg.batch_size,
        "mini_batch_size": cfg.mini_batch_size,
        "max_seq_length": cfg.max_seq_length, "learning_rate": cfg.learning_rate,
        "num_negatives": cfg.num_negatives, "max_steps": cfg.max_steps, "steps": report["steps"],
        "train_pairs": report["train_pairs"],
        "epochs": round(report["steps"] * batch / max(report["train_pairs"], 1), 2),
        "train_runtime_s": report["train_runtime_s"], "train_pairs_per_s": report["train_pairs_per_s"],
        "step_s_median": float(np.median(steady)) if steady else None,
        "step_pairs_per_s": batch * len(steady) / sum(steady) if steady else None,
        "wall_s": round(wall, 1), "device": device_name(), "precision": cfg.precision,
        "bf16": report["device"] == "cuda" and cfg.precision in ("auto", "bf16"),
        "peak_gpu_mem_gib": torch.cuda.max_memory_allocated() / 2**30 if cuda else None,
        "peak_gpu_reserved_gib": torch.cuda.max_memory_reserved() / 2**30 if cuda else None,
        "train_loss": report["train_loss"], "val_ndcg@10_by_step": report["val_ndcg@10_by_step"],
        "best_checkpoint_step": report["best_checkpoint_step"],
    }
    return model, facts


def scores(eval_set: EvalSet, encoders: dict, ecfg: EvaluateConfig, fusion) -> dict[str, float]:
    result = evaluate_set(eval_set, encoders, ecfg, fusion)
    return {system: round(values["ndcg@10"], 4) for system, values in result.scores.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--recipes", nargs="+", default=list(RECIPES), choices=RECIPES)
    parser.add_argument("--steps", type=int, default=100, help="gpu recipes: training steps")
    parser.add_argument("--eval-every", type=int, default=50, help="gpu recipes: validation and checkpoint interval")
    parser.add_argument("--base-model", default="", help="sentence-transformers folder (default: the packaged "
                                                         "all-MiniLM-L6-v2)")
    parser.add_argument("--eval-seq-lens", type=int, nargs="+", default=None,
                        help="tokens per text when scoring (default: params.yaml evaluate.max_seq_length)")
    parser.add_argument("--miners", nargs="+", help="override mine_pairs.miners (bm25, dense)")
    parser.add_argument("--smoke", action="store_true", help="2 steps, batch 8, 32 tokens: checks the script")
    parser.add_argument("--json", help="also write the rows here")
    args = parser.parse_args()
    apply_offline_defaults()
    import torch

    print("command: python benchmarks/gpu_profile.py " + " ".join(sys.argv[1:]), flush=True)
    print(f"device: {device_name()}, torch {torch.__version__}", flush=True)
    params = read_params(REPO / "params.yaml")
    mine = build_config(MinePairsConfig, params["mine_pairs"], "params.yaml: mine_pairs")
    if args.miners:
        mine = replace(mine, miners=args.miners)
    ecfg = build_config(EvaluateConfig, params["evaluate"], "params.yaml: evaluate")
    ecfg = replace(ecfg, systems=["bm25", "base", "trained", "hybrid", "base_hybrid", "served"])
    eval_lens = args.eval_seq_lens or [32 if args.smoke else ecfg.max_seq_length]
    encode_batch = 256 if torch.cuda.is_available() else ecfg.batch_size
    work = WORK
    work.mkdir(parents=True, exist_ok=True)

    papers, queries, qrels = cranfield()
    qids = list(queries)
    eval_set = EvalSet(name="cranfield", doc_ids=papers["paper_id"].tolist(),
                       doc_texts=[passage_text(t, a) for t, a in zip(papers["title"], papers["abstract"])],
                       query_ids=qids, query_texts=[queries[q] for q in qids], qrels={q: qrels[q] for q in qids},
                       content_hash="cranfield")
    print(f"cranfield: {len(papers)} papers, {len(qids)} judged queries", flush=True)

    base = load_encoder(args.base_model, mine.max_seq_length)
    mine_len = 32 if args.smoke else mine.max_seq_length
    start = time.perf_counter()
    pairs = mine_pairs(papers, mine, embedder(base, mine_len, encode_batch) if "dense" in mine.miners else None)
    mine_s = time.perf_counter() - start
    print(f"pairs ({', '.join(mine.miners)} negatives, {mine_s:.1f} s): {json.dumps(pairs.report['pairs'])}",
          flush=True)
    base_embed = {n: embedder(base, n, encode_batch) for n in eval_lens}

    rows = []
    for name in args.recipes:
        cfg = recipe_config(name, params, args)
        print(f"\n[{name}] loss {cfg.loss}, batch {cfg.batch_size} (mini-batch {cfg.mini_batch_size}), "
              f"{cfg.max_seq_length} tokens, lr {cfg.learning_rate:g}, {cfg.num_negatives} negatives, "
              f"{cfg.max_steps} steps, eval/save every {cfg.eval_steps}", flush=True)
        try:
            model, facts = train_recipe(name, cfg, pairs, work)
        except Exception as exc:  # one recipe failing must not cost the others' numbers
            traceback.print_exc()
            rows.append({"recipe": name, "loss": cfg.loss, "batch_size": cfg.batch_size,
                         "max_seq_length": cfg.max_seq_length, "num_negatives": cfg.num_negatives,
                         "error": f"{type(exc).__name__}: {exc}"})
            continue
        print(json.dumps(facts, default=str), flush=True)
        facts["ndcg@10"] = {}
        if facts["steps"] == 0:
            facts["error"] = "no training step ran (no full batch without duplicate texts)"
            print(facts["error"], flush=True)
        else:
            for n in eval_lens:
                trained = embedder(model, n, encode_batch)
                facts["ndcg@10"][str(n)] = scores(eval_set, {"base": base_embed[n], "trained": trained,
                                                             "served": trained}, ecfg, cfg.serving_fusion())
                print(f"nDCG@10 at {n} tokens: {json.dumps(facts['ndcg@10'][str(n)])}", flush=True)
        rows.append(facts)
        del model
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    with record("gpu_profile"):
        print(f"\nCranfield ({len(papers)} papers, {len(qids)} judged queries), nDCG@10; pairs mined with "
              f"{'+'.join(mine.miners)} negatives: {pairs.report['pairs']['train']['total']} train, "
              f"{pairs.report['pairs']['val']['total']} val; served-style fusion = convex z-score alpha 0.5 of "
              f"bm25 and the trained encoder\n")
        print("| recipe | steps (epochs) | train pairs/s (trainer) | pairs/s (steps only) | s/step | train wall s "
              "| device | peak GPU mem GiB | tokens eval | bm25 | base | trained | base_hybrid | hybrid | convex |")
        print("|---|---|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|")
        for r in rows:
            recipe = (f"{r['recipe']} ({r['loss']}, batch {r['batch_size']}, {r['max_seq_length']} tok, "
                      f"{r['num_negatives']} neg)")
            if not r.get("ndcg@10"):
                steps = f"{r['steps']} ({r['epochs']})" if "steps" in r else "-"
                print(f"| {recipe} | {steps} | - | - | - | - | - | - | - | {r['error']} |||||")
                continue
            for n, s in r["ndcg@10"].items():
                mem = f"{r['peak_gpu_mem_gib']:.1f}" if r["peak_gpu_mem_gib"] is not None else "-"
                step_pps = f"{r['step_pairs_per_s']:.1f}" if r["step_pairs_per_s"] else "-"
                step_s = f"{r['step_s_median']:.3f}" if r["step_s_median"] else "-"
                print(f"| {recipe} | {r['steps']} ({r['epochs']}) | {r['train_pairs_per_s']:.1f} | {step_pps} | "
                      f"{step_s} | {r['wall_s']} | {r['device']} | {mem} | {n} | {s['bm25']:.4f} | {s['base']:.4f} | "
                      f"{s['trained']:.4f} | {s['base_hybrid']:.4f} | {s['hybrid']:.4f} | {s['served']:.4f} |")
    out = args.json
    if out:
        Path(out).write_text(json.dumps({"device": device_name(), "torch": torch.__version__,
                                         "papers": len(papers), "queries": len(qids),
                                         "miners": mine.miners, "pairs": pairs.report["pairs"],
                                         "mine_s": round(mine_s, 1), "recipes": rows}, indent=1, default=str))
        print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
