"""DVC stage `train`: data/pairs -> models/encoder (sentence-transformers format), models/serving.json
(the served encoder and fusion, chosen on the val split), models/similar_encoder (the merged encoder the
similar task serves, when it serves one) and training reports.

    torchrun --nproc_per_node=2 -m stages.train ...      # DDP: rank 0 writes and logs
"""

import contextlib
import os
import shutil
import sys

import pandas as pd

from papersim.atomic import atomic_outputs, dump_json
from papersim.data.groups import similarity_groups
from papersim.data.papers import read_papers
from papersim.encoders.cache import cached_embedder
from papersim.encoders.encode import model_folder
from papersim.encoders.windows import PaperView, windowed_embed
from papersim.encoders.load import load_encoder
from papersim.errors import PapersimError
from papersim.retrieval.choice import merged_folder
from papersim.retrieval.similar import merge_candidate, merge_of
from papersim.progress import working_on
from papersim.stage import Stage, require_files, run_stage, split_timings, timings_path
from papersim.training.merge import merge_weights
from papersim.training.selection import choose_serving
from papersim.training.train import (TrainConfig, loss_table, run_fingerprint, save_encoder, save_loss_plot,
                                     TIMINGS, train_encoder)

PATHS = {"pairs": "folder with train/val/split.parquet", "papers": "ingested papers (validation pseudo-queries)",
         "model": "output model folder", "serving": "the served encoder (trained or base) and fusion",
         "similar-model": "the similar task's merged encoder (when chosen; else a note), beside --model",
         "embedding-cache": "embedding cache shared with mine_pairs, evaluate and build_index",
         "checkpoints": "checkpoints of an unfinished run (resumed, removed when the run completes)",
         "report": "metrics JSON", "loss-csv": "loss per step", "plot": "loss curve PNG"}


def execute(stage: Stage) -> str:
    args, cfg = stage.args, stage.cfg
    if args.similar_model.resolve() != merged_folder(args.model).resolve():
        raise PapersimError(f"--similar-model {args.similar_model}: it must sit beside --model, at "
                            f"{merged_folder(args.model)} (build_index and evaluate look for it there)")
    rank0 = int(os.environ.get("RANK", "0")) == 0  # under torchrun only rank 0 writes and logs
    files = [args.pairs / "train.parquet", args.pairs / "val.parquet"]
    require_files([*files, args.pairs / "split.parquet", args.papers],
                  "run the mine_pairs stage first (`dvc repro mine_pairs`: it needs the ingested papers too)")
    train, val = (pd.read_parquet(f) for f in files)
    papers = read_papers(args.papers)
    groups = dict(zip(papers["paper_id"], similarity_groups(papers["groups"], cfg.max_group_size)))
    model = load_encoder(cfg.base_model, cfg.max_seq_length)
    with stage.run({"pairs": args.pairs, "papers": args.papers}) if rank0 else contextlib.nullcontext() as run:
        trainer, report = train_encoder(model, train, val, cfg, args.checkpoints, run_fingerprint(cfg, files),
                                        [run.trainer_callback()] if rank0 else [], groups)
        if not rank0:
            return ""
        table = loss_table(trainer.state.log_history)
        outputs = (args.model, args.serving, args.similar_model, args.report, args.loss_csv, args.plot)
        with atomic_outputs(*outputs) as (out, serving_path, similar_out, rep, csv, png):
            save_encoder(model, out)  # the best checkpoint's weights (load_best_model_at_end)
            wants_base = cfg.select_encoder or cfg.similar_encoder != "trained"
            candidates = {"trained": str(out), **({"base": cfg.base_model} if wants_base else {})}
            similar = (["base", *dict.fromkeys(merge_candidate(a) for a in cfg.similar_merge)]
                       if cfg.similar_encoder == "auto" else list(candidates))

            def folder(name: str) -> str:  # a merge is made when first asked for (seconds), then encoded as any
                if name not in candidates:
                    merged = args.checkpoints / "merged" / name
                    with working_on(f"merging the trained and base weights ({name})"):
                        save_encoder(merge_weights(load_encoder(cfg.base_model, cfg.max_seq_length), model,
                                                   merge_of(name)[1]), merged)
                    candidates[name] = str(merged)
                return candidates[name]

            def paper_embed(name: str, view: PaperView):  # the similar task's paper vectors, as build_index makes them
                return windowed_embed(cached_embedder(folder(name), cfg.backend, view.tokens, cfg.encode_batch_size,
                                                      args.embedding_cache, cfg), model_folder(folder(name)), view)

            serving = choose_serving(papers, pd.read_parquet(args.pairs / "split.parquet"),
                                     {name: cached_embedder(path, cfg.backend, cfg.max_seq_length,
                                                            cfg.encode_batch_size, args.embedding_cache, cfg)
                                      for name, path in candidates.items()}, cfg,
                                     train["source"].value_counts().to_dict() if "source" in train else None,
                                     paper_embed, similar)
            served = serving.similar
            if served is not None and served.encoder == "merged":
                shutil.copytree(candidates[merge_candidate(served.merge_weight)], similar_out)
            else:  # DVC wants the folder either way: it says where the similar task's encoder is
                similar_out.mkdir()
                (similar_out / "README.md").write_text(
                    "No merged encoder: the similar task serves the "
                    f"{served.encoder if served is not None else 'search'} encoder (models/serving.json).\n",
                    encoding="utf-8")
            report["serving"] = serving.to_dict()
            timings = split_timings(report, TIMINGS)
            dump_json(serving.to_dict(), serving_path)
            dump_json(report, rep)
            table.to_csv(csv, index=False)
            save_loss_plot(table, report["val_ndcg@10_by_step"], png)
        dump_json(timings, timings_path(args.report))
        run.log_metrics(timings)
        run.log_metrics({k: v for k, v in report.items() if k not in ("val_ndcg@10_by_step", "serving")})
        run.log_metrics({f"serving.{k}": v for k, v in serving.evidence.items()})
        run.log_metrics({f"similar.{k}": v for k, v in serving.similar.evidence.items()})
        run.set_tags(serving.tags())
        for path in (args.report, args.loss_csv, args.plot):
            run.log_artifact(path, "reports")
        # No copy of the model in the tracking store: the registry holds the served encoder, DVC's cache the
        # trained one (models/encoder); a logged copy per retrain was ~90 MB a week that nothing read.
    shutil.rmtree(args.checkpoints, ignore_errors=True)  # finished: nothing left to resume
    capped = (f", batches of {report['batch_size']}: {report['batch_size_asked']} could not be filled without a "
              "repeated text" if "batch_size_asked" in report else "")
    return (f"train: {report['steps']} steps (resumed from {report['resumed_from_step']}{capped}) on "
            f"{report['device']}, "
            f"best {report['best_metric']} {report['best_metric_value'] or float('nan'):.4f} at step "
            f"{report['best_checkpoint_step']} -> {args.model}\nserving: {serving.reason}; {serving.fusion.describe()}"
            f"\nsimilar papers: {serving.similar.reason}")


def main(argv: list[str] | None = None) -> int:
    return run_stage("train", TrainConfig, __doc__, PATHS, execute, argv)


if __name__ == "__main__":
    sys.exit(main())
