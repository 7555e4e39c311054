"""DVC stage `mine_pairs`: papers.parquet -> Siamese train/val pairs with hard negatives, and the split."""

import sys

from papersim.atomic import atomic_outputs, dump_json
from papersim.data.papers import read_papers
from papersim.encoders.cache import cached_embedder
from papersim.stage import Stage, require, run_stage
from papersim.training.pairs import MinePairsConfig, mine_pairs, read_labelled_pairs

PATHS = {"papers": "ingested papers", "out": "folder for train.parquet, val.parquet, split.parquet",
         "report": "metrics JSON", "embedding-cache": "embedding cache shared with train, evaluate and build_index"}


def execute(stage: Stage) -> str:
    args, cfg = stage.args, stage.cfg
    require(args.papers.is_file(), args.papers, "no ingested papers", "ingest")
    papers = read_papers(args.papers)
    labelled = read_labelled_pairs(cfg.labelled_pairs)
    encode = None
    if "dense" in cfg.miners:
        encode = cached_embedder(cfg.model, cfg.backend, cfg.max_seq_length, cfg.encode_batch_size,
                                 args.embedding_cache, cfg)
    with stage.run({"papers": args.papers}) as run:
        result = mine_pairs(papers, cfg, encode, labelled)
        with atomic_outputs(args.out, args.report) as (out, report_path):
            out.mkdir()
            for name, frame in (("train", result.train), ("val", result.val), ("split", result.split)):
                frame.to_parquet(out / f"{name}.parquet", index=False)
            dump_json(result.report, report_path)
        run.log_metrics(result.report)
        run.log_artifact(args.report, "reports")
    r = result.report
    return (f"mine_pairs: {r['pairs']['train']['total']} train / {r['pairs']['val']['total']} val pairs -> "
            f"{args.out} (papers {r['papers']}; negatives removed in train: {r['negatives_removed']['train']})")


def main(argv: list[str] | None = None) -> int:
    return run_stage("mine_pairs", MinePairsConfig, __doc__, PATHS, execute, argv)


if __name__ == "__main__":
    sys.exit(main())
