"""Months of schedules, a day at a time: a refresh every day, the retrain flow's weekly check, the registry's size.

    .venv/bin/python benchmarks/soak.py [--days 60] [--keep-refreshes 24] [--max-steps 10] [--model DIR] [--out soak.md]

A fresh git + DVC repository holding the project's dvc.yaml, params.yaml, stages and library and the
bundled sample (data/raw), with its own SQLite MLflow store, artifact store and Prefect home:
  day 0   the corpus is the sample less the last `--hold-back` share of the arXiv source's rows (Cranfield,
          the judged set, and the listing pages whole); `flows.retrain.retrain` makes the first champion;
  day d   ~1% of the corpus is appended to the arXiv source as new papers (the held-back rows in order; once
          they run out, pipeline_scale's synthetic papers: real sentences of the sample, new ids), then
          `flows.refresh.refresh`; every 7th day the retrain flow's own check (`retrain(root)`, no force)
          after the refresh, so it sees what the schedule's Monday run sees.
One row a day: registry versions and disk (artifact store + the repository's cache/registry), papers the
champion's index serves against papers in the corpus, the change since the champion's model was trained
(what retrains), the check's outcome, the refresh's wall time. Then the size of one trained and one refresh
version and three checks: (a) the first weekly check after the change crosses retrain.min_changed_share
retrains; (b) the champion serves every paper of the corpus after every day; (c) the registry's disk stays
within trained versions x one trained version + retained refreshes x one refresh version + 10%.
The flows run in this process, on Prefect's ephemeral server; the stages they start are the real ones.
"""

import argparse
import csv
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SOURCE = "data/raw/arxiv/ml_kaggle_abstracts_sample.jsonl"
COPY = ("dvc.yaml", "params.yaml", "stages", "src/papersim", "data/raw")


def cheap_params(max_steps: int) -> dict[str, dict]:
    """Params set below the shipped ones to keep a day short; none changes what a row measures (registry,
    index contents, drift, the refresh's stages)."""
    return {"train": {"max_steps": max_steps, "eval_steps": max_steps, "save_steps": max_steps,  # retrains in minutes
                      "selection_queries": 200, "similar_queries": 200},  # the serving choice's evidence: train only
            "build_index": {"recall_queries": 50}}  # the index's recall check: fewer titles asked


@dataclass
class Day:
    """One row of the table: the state after the day's refresh (and check)."""

    day: int
    added: int  # papers appended to the source this day
    kind: str  # what they were: held back, synthetic
    versions: int  # registry versions after the day
    registry_mb: float  # artifact store + cache/registry
    served: int  # papers in the champion's index
    corpus: int  # papers in data/processed/papers.parquet
    all_served: bool  # the champion's index holds exactly the corpus's papers
    changed_share: float  # change since the champion's model was trained, before the day's check
    refresh: str = ""  # the refresh's status ("" on day 0)
    refresh_s: float = 0.0
    check: str = ""  # the retrain flow's outcome on a check day ("" otherwise)
    fired: bool = False  # the check retrained (promoted or challenger)
    flow_share: float | None = None  # drift.changed_share the check logged
    retrain_s: float = 0.0
    archived: list[str] = field(default_factory=list)


def folder_mb(path: Path) -> float:
    """Bytes of the files under `path` (links not followed), in MB."""
    total = 0
    for folder, _, files in os.walk(path):
        for name in files:
            item = Path(folder) / name
            if not item.is_symlink():
                total += item.stat().st_size
    return total / 1e6


def papers(root: Path):
    import pandas as pd

    return pd.read_parquet(root / "data/processed/papers.parquet")


def champion(root: Path, name: str):
    """The champion's version folder (papersim.lifecycle.versions.Version)."""
    from papersim.lifecycle import registry, tracking, versions

    found = tracking.model_version(name, alias=registry.CHAMPION)
    return versions.fetch(name, found["version"], root)


def day_row(root: Path, name: str, artifacts: Path, day: int, added: int, kind: str) -> Day:
    """The registry and the champion's index against the corpus, now."""
    from papersim.lifecycle import tracking
    from papersim.lifecycle.drift import corpus_change
    from papersim.retrieval.index import indexed_papers

    version, corpus = champion(root, name), papers(root)
    served = set(indexed_papers(version.index)["paper_id"])
    return Day(day, added, kind, len(tracking.model_versions(name)),
               folder_mb(artifacts) + folder_mb(root / "cache/registry"), len(served), len(corpus),
               served == set(corpus["paper_id"]), corpus_change(version.trained_corpus(), corpus).share)


def retrain_check(root: Path, row: Day) -> None:
    """The retrain flow as its schedule runs it (no force): its outcome and the change share it logged."""
    from mlflow.tracking import MlflowClient

    from flows.retrain import retrain

    start = time.perf_counter()
    outcome = retrain(root=str(root))
    row.retrain_s = time.perf_counter() - start
    row.fired = outcome["status"] in ("promoted", "challenger")
    row.check = outcome["status"] + (f" v{outcome['version']}" if row.fired or outcome["status"] == "refreshed" else "")
    row.flow_share = MlflowClient().get_run(outcome["mlflow_run_id"]).data.metrics.get("drift.changed_share")


def soak(root: Path, name: str, artifacts: Path, days: int, feed: Callable[[int], tuple[int, str]],
         share: float = 0.01, check_every: int = 7, deadline: float | None = None,
         show: Callable[[Day], None] = lambda row: None) -> list[Day]:
    """Day 0's retrain, then `days` days of new papers (`feed(n)` appends up to n, returns (appended, kind)),
    a refresh each, and the retrain flow's check every `check_every` days. Stops before a day that would
    start after `deadline` (time.monotonic). Returns one row a day."""
    from flows.refresh import refresh
    from flows.retrain import retrain

    first = retrain(root=str(root))
    if first["status"] != "promoted":
        raise RuntimeError(f"day 0: the first retrain did not make a champion: {first}")
    rows = [day_row(root, name, artifacts, 0, 0, "")]
    rows[0].check, rows[0].fired = f"promoted v{first['version']}", True
    show(rows[0])
    for day in range(1, days + 1):
        if deadline is not None and time.monotonic() > deadline:
            break
        added, kind = feed(max(1, round(share * rows[-1].corpus)))
        start = time.perf_counter()
        outcome = refresh(root=str(root))
        refresh_s = time.perf_counter() - start
        row = day_row(root, name, artifacts, day, added, kind)
        row.refresh, row.refresh_s, row.archived = outcome["status"], refresh_s, outcome.get("archived", [])
        if day % check_every == 0:
            retrain_check(root, row)
            after = day_row(root, name, artifacts, day, added, kind)  # what serves after the check
            row.versions, row.registry_mb, row.served, row.corpus, row.all_served = \
                after.versions, after.registry_mb, after.served, after.corpus, after.all_served
        rows.append(row)
        show(row)
    return rows


def version_sizes(root: Path, name: str) -> dict[str, list[float]]:
    """MB of each registered version's own folder in the artifact store, trained and refresh versions apart."""
    from papersim.lifecycle import tracking, versions
    from papersim.lifecycle.refresh import REFRESH_TAG

    sizes: dict[str, list[float]] = {"trained": [], "refresh": []}
    for v in tracking.model_versions(name):
        folder = versions.fetch(name, v["version"], root).folder
        sizes["refresh" if REFRESH_TAG in v["tags"] else "trained"].append(folder_mb(folder))
    return sizes


def checks(rows: list[Day], min_changed_share: float, sizes: dict[str, list[float]]) -> list[tuple[str, bool, str]]:
    """(a), (b), (c) as (label, passed, detail)."""
    checked = [r for r in rows[1:] if r.check]
    crossed = [r.day for prev, r in zip(rows, rows[1:]) if r.changed_share > min_changed_share
               and (prev.changed_share <= min_changed_share or prev.check.startswith("promoted"))]
    due = [r for r in checked if r.changed_share > min_changed_share]
    missed = [r.day for r in due if not r.fired]
    early = [f"day {r.day} ({r.check} at {r.changed_share:.3f})" for r in checked
             if r.fired and r.changed_share <= min_changed_share]
    mismatch = [r.day for r in checked if r.flow_share is None or abs(r.flow_share - r.changed_share) > 1e-9]
    a_ok = bool(due) and not missed and not mismatch
    a = (f"crossed {min_changed_share:g} on day(s) {', '.join(map(str, crossed)) or 'none'}; retrained at the "
         f"check(s) of day(s) {', '.join(str(r.day) for r in due if r.fired) or 'none'}"
         + (f"; missed at day(s) {missed}" if missed else "") + ("; no check after a crossing" if not due else "")
         + (f"; the flow's drift.changed_share differs from the table on day(s) {mismatch}" if mismatch else "")
         + (f"; retrained below the share (embedding drift or a refresh's floor warning): {', '.join(early)}" if early else ""))
    unserved = [f"day {r.day} ({r.served} served / {r.corpus})" for r in rows if not r.all_served]
    b = "every day" if not unserved else "not on " + ", ".join(unserved)
    # each trained version at its own size: one holding a second encoder (the similar task's) is ~2x another
    trained, index = sum(sizes["trained"]), max(sizes["refresh"], default=0.0)
    bound = (trained + len(sizes["refresh"]) * index) * 1.1
    c = (f"{rows[-1].registry_mb:.1f} MB vs ({len(sizes['trained'])} trained versions {trained:.1f} + "
         f"{len(sizes['refresh'])} x {index:.1f}) x 1.1 = {bound:.1f} MB")
    return [(f"(a) a retrain fires at the first weekly check after the change since training crosses "
             f"{min_changed_share:g}", a_ok, a),
            ("(b) the champion serves every paper of the corpus after each day", not unserved, b),
            ("(c) registry disk <= the trained versions + retained refreshes x one refresh + 10%",
             rows[-1].registry_mb <= bound, c)]


HEADER = ("| day | new papers | versions | registry MB | served / corpus | changed since training | retrain check "
          "| refresh | refresh s |")


def markdown(row: Day) -> str:
    check = row.check or "-"
    if row.check and row.day:
        check += f" ({row.retrain_s:.0f} s)"
    new = f"{row.added} {row.kind}" if row.added else "-"
    served = f"{row.served} / {row.corpus}" + ("" if row.all_served else " **missing**")
    refresh = row.refresh or "-"
    if row.archived:
        refresh += f", archived v{', v'.join(row.archived)}"
    return (f"| {row.day} | {new} | {row.versions} | {row.registry_mb:.1f} | {served} | {row.changed_share:.3f} "
            f"| {check} | {refresh} | {row.refresh_s:.1f} |")


class Feed:
    """The day's new papers for the arXiv source: held-back rows in order, then synthetic ones."""

    def __init__(self, source: Path, held: list[str]) -> None:
        self.source, self.held, self.synthetic = source, held, 0

    def __call__(self, n: int) -> tuple[int, str]:
        rows, self.held = self.held[:n], self.held[n:]
        kind = "held back"
        if len(rows) < n:
            kind = "synthetic" if not rows else "held back + synthetic"
            rows += self._synthetic(n - len(rows))
        with self.source.open("a", encoding="utf-8") as f:
            f.writelines(rows)
        return n, kind

    def _synthetic(self, n: int) -> list[str]:
        sys.path.insert(0, str(REPO / "benchmarks"))
        from pipeline_scale import write_corpus

        with tempfile.TemporaryDirectory() as tmp:
            write_corpus(Path(tmp) / "new.jsonl", self.synthetic + n, seed=7)
            lines = (Path(tmp) / "new.jsonl").read_text(encoding="utf-8").splitlines()[self.synthetic:]
        self.synthetic += n
        return [json.dumps({**json.loads(line), "id": f"soak-{json.loads(line)['id']}"}) + "\n" for line in lines]


def make_project(root: Path, hold_back: float, params_update: Callable[[dict], None]) -> Feed:
    """The project in a fresh git + DVC repository at `root`, the arXiv source less its last `hold_back` share
    of rows; returns the feed of those rows."""
    import yaml

    sys.path.insert(0, str(REPO / "benchmarks"))
    from pipeline_scale import copy_project

    copy_project(root, COPY)
    lines = (root / SOURCE).read_text(encoding="utf-8").splitlines(keepends=True)
    keep = len(lines) - round(hold_back * len(lines))
    (root / SOURCE).write_text("".join(lines[:keep]), encoding="utf-8")
    params = yaml.safe_load((root / "params.yaml").read_text(encoding="utf-8"))
    params_update(params)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False), encoding="utf-8")
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    for cmd in (["git", "init", "-q"], ["dvc", "init", "-q"], ["dvc", "config", "core.analytics", "false"],
                ["git", "add", "-A"], ["git", "-c", "user.name=soak", "-c", "user.email=soak@example.com", "commit",
                                       "-qm", "day 0"]):
        subprocess.run(cmd, cwd=root, env=env, check=True, capture_output=True)
    return Feed(root / SOURCE, lines[keep:])


def tracking_store(uri: str, artifacts: Path, experiment: str) -> Path:
    """The flows' MLflow store: MLFLOW_TRACKING_URI and PAPERSIM_EXPERIMENT set, the experiment's artifacts in
    `artifacts` (the folder the registry's disk is measured in); returns it."""
    import mlflow

    os.environ.update({"MLFLOW_TRACKING_URI": uri, "PAPERSIM_EXPERIMENT": experiment})
    os.environ.pop("PAPERSIM_PARENT_RUN_ID", None)
    mlflow.set_tracking_uri(uri)
    artifacts.mkdir(parents=True, exist_ok=True)
    if mlflow.get_experiment_by_name(experiment) is None:
        mlflow.create_experiment(experiment, artifact_location=artifacts.as_uri())
    return artifacts


def write_out(path: Path, rows: list[Day], lines: list[str]) -> None:
    if path.suffix == ".csv":
        with path.open("w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=list(asdict(rows[0])))
            writer.writeheader()
            writer.writerows(asdict(r) for r in rows)
    else:
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--days", type=int, default=60)
    parser.add_argument("--keep-refreshes", type=int, default=24, help="retrain.keep_refreshes (shipped: 24)")
    parser.add_argument("--max-steps", type=int, default=10, help="train.max_steps of the temporary repository")
    parser.add_argument("--model", default="", help="a model folder for every stage (default: the packaged one)")
    parser.add_argument("--hold-back", type=float, default=0.6, help="share of the arXiv rows added day by day")
    parser.add_argument("--share", type=float, default=0.01, help="new papers a day, as a share of the corpus")
    parser.add_argument("--budget-min", type=float, default=0, help="start no day after this many minutes (0: none)")
    parser.add_argument("--out", type=Path, help="the table as markdown (.md) or CSV (.csv)")
    args = parser.parse_args()
    began = time.monotonic()
    cheap = cheap_params(args.max_steps)

    def production(params: dict) -> None:
        for section, values in cheap.items():
            params[section].update(values)
        params["retrain"]["keep_refreshes"] = args.keep_refreshes
        if args.model:
            params["mine_pairs"]["model"] = params["train"]["base_model"] = args.model
            params["evaluate"]["base_model"] = args.model

    with tempfile.TemporaryDirectory(prefix="papersim-soak-") as tmp:
        os.environ.update({"PREFECT_HOME": str(Path(tmp) / "prefect"), "PREFECT_LOGGING_LEVEL": "WARNING"})
        os.environ.pop("PREFECT_API_URL", None)  # the flows' ephemeral server, in this process
        sys.path.insert(0, str(REPO))
        from flows.retrain import offline_prefect
        from papersim.lifecycle import retrain as policy

        offline_prefect()
        root = Path(tmp) / "repo"
        root.mkdir()
        feed = make_project(root, args.hold_back, production)
        store = Path(tmp) / "mlflow"
        store.mkdir()
        artifacts = tracking_store(f"sqlite:///{store / 'mlflow.db'}", store / "artifacts", "soak")
        cfg = policy.retrain_config(root / "params.yaml")
        lines = ["command: .venv/bin/python benchmarks/soak.py " + " ".join(sys.argv[1:]),
                 f"corpus: the bundled sample less the last {args.hold_back:.0%} of the arXiv source's rows "
                 f"({len(feed.held)} held back, then synthetic); {args.share:.0%} of the corpus added a day; "
                 f"retrain check every 7th day; retrain.min_changed_share {cfg.min_changed_share:g}, "
                 f"keep_refreshes {cfg.keep_refreshes}; model {args.model or 'the packaged all-MiniLM-L6-v2'}",
                 "cheap params (temporary repository): " + "; ".join(
                     f"{s}.{k}={v}" for s, values in cheap.items() for k, v in values.items()),
                 "", HEADER, "|---:|---|---:|---:|---|---:|---|---|---:|"]
        for line in lines:
            print(line, flush=True)

        def show(row: Day) -> None:
            lines.append(markdown(row))
            print(lines[-1], flush=True)
            if args.out:
                write_out(args.out, rows_so_far + [row], lines)
            rows_so_far.append(row)

        rows_so_far: list[Day] = []
        deadline = began + args.budget_min * 60 if args.budget_min else None
        rows = soak(root, cfg.model_name, artifacts, args.days, feed, args.share, deadline=deadline, show=show)
        sizes = version_sizes(root, cfg.model_name)
        in_versions = sum(sizes["trained"]) + sum(sizes["refresh"])
        refreshes = [r.refresh_s for r in rows[1:]]
        retrains = [r.retrain_s for r in rows if r.fired and r.day]
        summary = ["", f"days run: {len(rows) - 1} of {args.days} ({(time.monotonic() - began) / 60:.0f} min wall)",
                   f"one trained version: {max(sizes['trained'], default=0):.1f} MB (largest of "
                   f"{len(sizes['trained'])}); one refresh version: {max(sizes['refresh'], default=0):.2f} MB "
                   f"(largest of {len(sizes['refresh'])} retained)",
                   f"registry disk at the end: {rows[-1].registry_mb:.1f} MB = registered versions' folders "
                   f"{in_versions:.1f} + other run artifacts {folder_mb(artifacts) - in_versions:.1f} + cache/registry "
                   f"{folder_mb(root / 'cache/registry'):.1f}",
                   f"refresh: median {sorted(refreshes)[len(refreshes) // 2] if refreshes else math.nan:.1f} s, "
                   f"max {max(refreshes, default=math.nan):.1f} s; retrains that fired: "
                   + (", ".join(f"{s:.0f} s" for s in retrains) or "none"), ""]
        summary += [f"{'PASS' if ok else 'FAIL'} {label}: {detail}" for label, ok, detail in
                    checks(rows, cfg.min_changed_share, sizes)]
        for line in summary:
            print(line, flush=True)
        lines += summary
        if args.out:
            write_out(args.out, rows, lines)
        from record import write_result  # benchmarks/ is on sys.path when run as a script (tests import soak)

        write_result("soak", "\n".join(lines[1:]))  # lines[0] is the command, which the record names itself


if __name__ == "__main__":
    main()
