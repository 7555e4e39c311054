"""DVC stage `train`: data/pairs -> models/encoder (sentence-transformers format), models/serving.json
(the served encoder and fusion, chosen on the val split) and training reports.

    python -m stages.train --params params.yaml --pairs data/pairs --papers data/processed/papers.parquet \
        --model models/encoder --serving models/serving.json --embedding-cache cache/embeddings
    torchrun --nproc_per_node=2 -m stages.train ...      # DDP: rank 0 writes and logs
"""

import argparse
import contextlib
import dataclasses
import os
import shutil
import sys
from pathlib import Path

import pandas as pd

from papersim.atomic import atomic_outputs, dump_json
from papersim.config import load_section
from papersim.encoders.cache import encode_cached
from papersim.encoders.encode import load_text_encoder
from papersim.encoders.load import load_encoder
from papersim.env import apply_offline_defaults
from papersim.errors import PapersimError
from papersim.lifecycle import tracking
from papersim.provenance import data_version, git_commit
from papersim.training.selection import choose_serving
from papersim.training.train import TrainConfig, loss_table, run_fingerprint, save_loss_plot, train_encoder


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m stages.train", description=__doc__.split("\n")[0])
    parser.add_argument("--params", type=Path, default=Path("params.yaml"), help="params file (section `train`)")
    parser.add_argument("--pairs", type=Path, default=Path("data/pairs"), help="folder with train/val.parquet")
    parser.add_argument("--papers", type=Path, default=Path("data/processed/papers.parquet"),
                        help="ingested papers: validation pseudo-queries choose what is served")
    parser.add_argument("--model", type=Path, default=Path("models/encoder"), help="output model folder")
    parser.add_argument("--serving", type=Path, default=Path("models/serving.json"),
                        help="the served encoder (trained or base) and fusion, chosen on the val split")
    parser.add_argument("--embedding-cache", type=Path, default=Path("cache/embeddings"),
                        help="embedding cache shared with mine_pairs, evaluate and build_index")
    parser.add_argument("--checkpoints", type=Path, default=Path("models/checkpoints"),
                        help="checkpoints of an unfinished run (resumed, removed when the run completes)")
    parser.add_argument("--report", type=Path, default=Path("reports/train.json"), help="metrics JSON")
    parser.add_argument("--loss-csv", type=Path, default=Path("reports/train_loss.csv"), help="loss per step")
    parser.add_argument("--plot", type=Path, default=Path("reports/train_loss.png"), help="loss curve PNG")
    return parser.parse_args(argv)


def embedders(trained: str, cfg: TrainConfig, cache: Path) -> dict:
    """The trained and the base encoder as cached embedders (the base only when it is a candidate)."""
    folders = {"trained": trained, **({"base": cfg.base_model} if cfg.select_encoder else {})}
    embed = {}
    for name, folder in folders.items():
        encoder = load_text_encoder(folder, cfg.backend, cfg.max_seq_length, cfg.encode_batch_size)
        embed[name] = lambda texts, e=encoder: encode_cached(e, texts, cache).vectors
    return embed


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    apply_offline_defaults()
    rank0 = int(os.environ.get("RANK", "0")) == 0  # under torchrun only rank 0 writes and logs
    try:
        cfg = load_section(args.params, "train", TrainConfig)
        files = [args.pairs / "train.parquet", args.pairs / "val.parquet"]
        missing = [str(f) for f in [*files, args.pairs / "split.parquet", args.papers] if not f.is_file()]
        if missing:
            raise PapersimError(f"{', '.join(missing)}: not found; run the mine_pairs stage first "
                                "(`dvc repro mine_pairs`: it needs the ingested papers too)")
        train, val = (pd.read_parquet(f) for f in files)
        model = load_encoder(cfg.base_model, cfg.max_seq_length)
        tags = {"mlflow.source.git.commit": git_commit(), **data_version({"pairs": args.pairs, "papers": args.papers})}
        run_ctx = tracking.stage_run("train", dataclasses.asdict(cfg), tags) if rank0 else contextlib.nullcontext()
        with run_ctx as run:
            callbacks = [run.trainer_callback()] if rank0 else []
            trainer, report = train_encoder(model, train, val, cfg, args.checkpoints,
                                            run_fingerprint(cfg, files), callbacks)
            if not rank0:
                return 0
            table = loss_table(trainer.state.log_history)
            outputs = (args.model, args.serving, args.report, args.loss_csv, args.plot)
            with atomic_outputs(*outputs) as (out, serving_path, rep, csv, png):
                model.save(str(out))  # the best checkpoint's weights (load_best_model_at_end)
                serving = choose_serving(pd.read_parquet(args.papers), pd.read_parquet(args.pairs / "split.parquet"),
                                         embedders(str(out), cfg, args.embedding_cache), cfg)
                report["serving"] = serving.to_dict()
                dump_json(serving.to_dict(), serving_path)
                dump_json(report, rep)
                table.to_csv(csv, index=False)
                save_loss_plot(table, report["val_ndcg@10_by_step"], png)
            run.log_metrics({k: v for k, v in report.items() if k not in ("val_ndcg@10_by_step", "serving")})
            run.log_metrics({f"serving.{k}": v for k, v in serving.evidence.items()})
            run.set_tags({"papersim.served_encoder": serving.encoder, "papersim.serving_reason": serving.reason,
                          "papersim.fusion": serving.fusion.describe()})
            for path in (args.report, args.loss_csv, args.plot):
                run.log_artifact(path, "reports")
            run.log_sentence_transformer(model)
        shutil.rmtree(args.checkpoints, ignore_errors=True)  # finished: nothing left to resume
    except PapersimError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"train: {report['steps']} steps (resumed from {report['resumed_from_step']}) on {report['device']}, "
          f"best {report['best_metric']} {report['best_metric_value'] or float('nan'):.4f} "
          f"at step {report['best_checkpoint_step']} "
          f"-> {args.model}\nserving: {serving.reason}; {serving.fusion.describe()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
