"""DVC stage `ingest`: params.yaml `ingest` sources -> data/processed/papers.parquet (dvc.yaml has the paths)."""

import sys

from papersim.atomic import atomic_outputs, dump_json
from papersim.data.ingest import IngestConfig, ingest_corpus
from papersim.stage import Stage, run_stage

PATHS = {"papers": "output table", "rejected": "quarantined rows with the rule they broke", "report": "metrics JSON"}
MAX_ARTIFACT_BYTES = 50 * 2**20  # rejected rows bigger than this stay on disk, not in MLflow


def execute(stage: Stage) -> str:
    args, cfg = stage.args, stage.cfg
    with stage.run({s.name: s.path for s in cfg.sources}) as run:
        with atomic_outputs(args.papers, args.rejected, args.report) as (papers, rejected, report_path):
            report = ingest_corpus(cfg, papers, rejected)
            dump_json(report, report_path)
        run.log_metrics(report)
        run.log_artifact(args.report, "reports")
        if report["rejected_total"] and args.rejected.stat().st_size <= MAX_ARTIFACT_BYTES:
            run.log_artifact(args.rejected, "data")
    return (f"ingest: {report['rows_written']} papers -> {args.papers} "
            f"(read {report['rows_read_total']} rows from {len(cfg.sources)} source(s), "
            f"{report['duplicates_merged']} duplicates merged, {report['rejected_total']} rejected -> {args.rejected})")


def main(argv: list[str] | None = None) -> int:
    return run_stage("ingest", IngestConfig, __doc__, PATHS, execute, argv)


if __name__ == "__main__":
    sys.exit(main())
