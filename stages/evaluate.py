"""DVC stage `evaluate`: the served system against bm25, base, their fusion (and the champion) on
judged sets and the test split, with per-query scores and paired significance tests.

    python -m stages.evaluate --params params.yaml --papers data/processed/papers.parquet \
        --pairs data/pairs --model models/encoder --serving models/serving.json \
        --embedding-cache cache/embeddings --per-query reports/eval_per_query.parquet \
        --report reports/eval.json --table reports/eval.md --curve reports/recall_at_k.csv \
        --plot reports/recall_at_k.png [--champion-model DIR]
"""

import argparse
import dataclasses
import sys
from pathlib import Path

import pandas as pd

from papersim.atomic import atomic_outputs, dump_json
from papersim.config import load_section
from papersim.encoders.cache import encode_cached
from papersim.encoders.encode import load_text_encoder
from papersim.env import apply_offline_defaults
from papersim.errors import PapersimError
from papersim.evaluation.evaluate import FUSED, EvaluateConfig, evaluate_set
from papersim.evaluation.report import curve_table, eval_report, markdown_table, per_query_table, save_curve_plot
from papersim.evaluation.sets import held_out_set, load_beir_set
from papersim.lifecycle import tracking
from papersim.provenance import data_version, git_commit
from papersim.training.selection import Serving, read_serving


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m stages.evaluate", description=__doc__.split("\n")[0])
    parser.add_argument("--params", type=Path, default=Path("params.yaml"), help="params file (section `evaluate`)")
    parser.add_argument("--papers", type=Path, default=Path("data/processed/papers.parquet"), help="ingested papers")
    parser.add_argument("--pairs", type=Path, default=Path("data/pairs"), help="mine_pairs output (split.parquet)")
    parser.add_argument("--model", type=Path, default=Path("models/encoder"), help="the trained model")
    parser.add_argument("--serving", type=Path, default=Path("models/serving.json"),
                        help="the served encoder and fusion (train stage); system `served`")
    parser.add_argument("--champion-model", type=Path, default=None,
                        help="the registry champion's encoder folder (system `champion`); none: skipped")
    parser.add_argument("--embedding-cache", type=Path, default=Path("cache/embeddings"),
                        help="embedding cache shared with build_index")
    parser.add_argument("--report", type=Path, default=Path("reports/eval.json"), help="metrics JSON")
    parser.add_argument("--table", type=Path, default=Path("reports/eval.md"), help="readable table")
    parser.add_argument("--per-query", type=Path, default=Path("reports/eval_per_query.parquet"),
                        help="every system's score of every query")
    parser.add_argument("--curve", type=Path, default=Path("reports/recall_at_k.csv"), help="recall@k per k")
    parser.add_argument("--plot", type=Path, default=Path("reports/recall_at_k.png"), help="recall@k plot")
    return parser.parse_args(argv)


def model_folders(args: argparse.Namespace, cfg: EvaluateConfig,
                  serving: Serving) -> tuple[dict[str, str], list[str]]:
    """Dense part -> model folder ("" = packaged base), and notes on systems left out."""
    folders = {"base": cfg.base_model, "trained": str(args.model), "served": serving.encoder_folder(str(args.model))}
    notes = []
    if args.champion_model is not None:
        folders["champion"] = str(args.champion_model)
    elif "champion" in cfg.systems:
        notes.append("champion: skipped here (no --champion-model); the retrain flow's gate compares the "
                     "candidate with the registry champion on these sets")
    if not (args.model / "modules.json").is_file():
        raise PapersimError(f"{args.model}: no trained model; run the train stage first (`dvc repro train`)")
    parts = set(cfg.systems) | {part for system, part in FUSED.items() if system in cfg.systems}
    return {k: v for k, v in folders.items() if k in parts}, notes


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    apply_offline_defaults()
    try:
        cfg = load_section(args.params, "evaluate", EvaluateConfig)
        sets = [load_beir_set(Path(folder)) for folder in cfg.beir_sets]
        if cfg.test_split:
            for path in (args.papers, args.pairs / "split.parquet"):
                if not path.is_file():
                    raise PapersimError(f"{path}: not found; run the pipeline up to mine_pairs first (`dvc repro`)")
            split = pd.read_parquet(args.pairs / "split.parquet")
            held_out = held_out_set(pd.read_parquet(args.papers), split, cfg.max_group_size)
            if held_out is not None:
                sets.append(held_out)
        serving = read_serving(args.serving)
        folders, notes = model_folders(args, cfg, serving)
        notes.append(f"served: the {serving.encoder} encoder, {serving.fusion.describe()} with bm25 "
                     f"({serving.reason})")
        if cfg.test_split and not any(s.name == "test_split" for s in sets):
            notes.append("test_split: skipped (no test-split paper has a title; raise mine_pairs.test_fraction)")
        tags = {"mlflow.source.git.commit": git_commit(), **data_version({"papers": args.papers}),
                **{f"eval_set.{s.name}.content_hash": s.content_hash for s in sets}}
        with tracking.stage_run("evaluate", dataclasses.asdict(cfg), tags) as run:
            encoders, loaded = {}, {}
            for system, folder in folders.items():
                if folder not in loaded:  # the served encoder is the trained or the base one: load it once
                    encoder = load_text_encoder(folder, cfg.backend, cfg.max_seq_length, cfg.batch_size)
                    loaded[folder] = lambda texts, e=encoder: encode_cached(e, texts, args.embedding_cache).vectors
                    notes.append(f"{system}: {folder or 'packaged all-MiniLM-L6-v2'} on {encoder.backend}")
                encoders[system] = loaded[folder]
            results = {s.name: evaluate_set(s, encoders, cfg, serving.fusion) for s in sets}
            report = eval_report(results)
            table = markdown_table(results, notes)
            curves = curve_table(results)
            outputs = (args.report, args.table, args.per_query, args.curve, args.plot)
            with atomic_outputs(*outputs) as (rep, md, per_query, csv, png):
                dump_json(report, rep)
                md.write_text(table, encoding="utf-8")
                per_query_table(results).to_parquet(per_query, index=False)
                curves.to_csv(csv, index=False)
                save_curve_plot(curves, png)
            run.log_metrics(report)
            run.set_tags({"papersim.served_encoder": serving.encoder, "papersim.fusion": serving.fusion.describe()})
            for path in (args.report, args.table, args.per_query, args.curve, args.plot):
                run.log_artifact(path, "reports")
    except PapersimError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(table, end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
