"""DVC stage `ingest`: params.yaml `ingest` sources -> data/processed/papers.parquet.

    python -m stages.ingest --params params.yaml --papers data/processed/papers.parquet \
        --rejected data/processed/rejected.parquet --report reports/ingest.json
"""

import argparse
import dataclasses
import sys
from pathlib import Path

from papersim.atomic import atomic_outputs, dump_json
from papersim.config import load_section
from papersim.data.ingest import IngestConfig, ingest_corpus
from papersim.env import apply_offline_defaults
from papersim.errors import PapersimError
from papersim.lifecycle import tracking
from papersim.provenance import data_version, git_commit

MAX_ARTIFACT_BYTES = 50 * 2**20  # rejected rows bigger than this stay on disk, not in MLflow


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m stages.ingest", description=__doc__.split("\n")[0])
    parser.add_argument("--params", type=Path, default=Path("params.yaml"), help="params file (section `ingest`)")
    parser.add_argument("--papers", type=Path, default=Path("data/processed/papers.parquet"), help="output table")
    parser.add_argument("--rejected", type=Path, default=Path("data/processed/rejected.parquet"),
                        help="quarantined rows with the rule they broke")
    parser.add_argument("--report", type=Path, default=Path("reports/ingest.json"), help="metrics JSON")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    apply_offline_defaults()
    try:
        cfg = load_section(args.params, "ingest", IngestConfig)
        tags = {"mlflow.source.git.commit": git_commit(), **data_version({s.name: s.path for s in cfg.sources})}
        with tracking.stage_run("ingest", dataclasses.asdict(cfg), tags) as run:
            with atomic_outputs(args.papers, args.rejected, args.report) as (papers, rejected, report_path):
                report = ingest_corpus(cfg, papers, rejected)
                dump_json(report, report_path)
            run.log_metrics(report)
            run.log_artifact(args.report, "reports")
            if report["rejected_total"] and args.rejected.stat().st_size <= MAX_ARTIFACT_BYTES:
                run.log_artifact(args.rejected, "data")
    except PapersimError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(
        f"ingest: {report['rows_written']} papers -> {args.papers} "
        f"(read {report['rows_read_total']} rows from {len(cfg.sources)} source(s), "
        f"{report['duplicates_merged']} duplicates merged, {report['rejected_total']} rejected -> {args.rejected})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
