"""Prefect flow `retrain`: the DVC stages, a drift check, a champion gate and the model registry.

    python -m flows.retrain [--profile profiles/quality.yaml] [--set train.max_steps=60 ...] [--force] [--root .]

1. `dvc repro ingest` (DVC skips it when the raw data did not change), then `check_drift`: the corpus
   against the champion's. Nothing changed, no drift, same params: the run ends here, reason logged.
   Only a few papers new, changed or removed (retrain.min_changed_share), no drift, same params: the
   champion's model serves them through a refresh (flows.refresh), and the run ends there.
2. `dvc repro mine_pairs`, `train`, `evaluate`: DVC's cache decides what is stale.
3. `gate`: the candidate's evaluate.json against the champion's on the same sets (the champion is
   re-scored by the evaluate stage when they differ).
4. `dvc repro build_index`, then `register`: a version of the registry model, alias `champion` if
   the gate passed, else `challenger`. A challenger leaves the champion's model serving: it is then
   refreshed, so the champion serves the corpus the candidate was trained on.

One MLflow parent run per flow run; every stage run nests under it (PAPERSIM_PARENT_RUN_ID).
A lock serialises runs, refreshes included. A run with overrides runs in a scratch worktree (papersim.lifecycle.workspace):
params.yaml is never edited. A watchdog (papersim.lifecycle.processes), started by the command before
Prefect and kept until the process exits, kills what the run started if it dies (SIGKILL included);
the next run removes a killed run's scratch workspace and half-committed outputs, marks its MLflow
runs KILLED and finishes a registration it interrupted.
The decisions live in papersim.lifecycle; this module is wiring: tasks, order, retry policies.
"""

import argparse
import json
import os
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pandas as pd
from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run as prefect_flow_run

from papersim.atomic import dump_json, scratch_folder
from papersim.config import check_params, parse_override, read_params, read_profile
from papersim.env import apply_offline_defaults, dvc_executable
from papersim.errors import PapersimError
from papersim.lifecycle import registry, tracking, versions
from papersim.lifecycle import retrain as policy
from papersim.lifecycle.drift import history_frame, save_drift_plot
from papersim.lifecycle.processes import StageFailed, run_process, watchdog
from papersim.lifecycle.refresh import WARNING_TAG
from papersim.lifecycle.workspace import remove_leftovers, retrain_lock, scratch_workspace
from papersim.provenance import git_commit
from papersim.stage import stage_command

TRAIN_TIMEOUT_S = 6 * 3600  # a GPU job on a large corpus; CPU runs of the bundled sample take minutes
STAGE_TIMEOUT_S = 2 * 3600


def _repro(stage: str, root: Path, env: dict[str, str], timeout_s: float = STAGE_TIMEOUT_S) -> str:
    logger = get_run_logger()
    out = run_process([dvc_executable(), "repro", stage], root, env, timeout_s, f"dvc repro {stage}",
                      on_line=lambda line: logger.info("%s | %s", stage, line))
    logger.info("dvc repro %s: %s", stage, "ran" if f"Running stage '{stage}'" in out else "up to date")
    return out


# One task per stage, each with its own retry policy. Retries cover transient failures (a killed
# worker, a full disk freed by a cleanup, a preempted GPU); a deterministic error fails every attempt.
@task(name="ingest", retries=1, retry_delay_seconds=10, timeout_seconds=STAGE_TIMEOUT_S, cache_policy=NO_CACHE)
def ingest(root: Path, env: dict[str, str]) -> str:
    return _repro("ingest", root, env)


@task(name="mine_pairs", retries=1, retry_delay_seconds=10, timeout_seconds=STAGE_TIMEOUT_S, cache_policy=NO_CACHE)
def mine_pairs(root: Path, env: dict[str, str]) -> str:
    return _repro("mine_pairs", root, env)


# GPU jobs: two retries two minutes apart (a preempted or OOM-killed job), hours of timeout.
# The train stage resumes from its last checkpoint, so a retry does not start from zero.
@task(name="train", retries=2, retry_delay_seconds=120, timeout_seconds=TRAIN_TIMEOUT_S, cache_policy=NO_CACHE)
def train(root: Path, env: dict[str, str]) -> str:
    return _repro("train", root, env, TRAIN_TIMEOUT_S)


@task(name="evaluate", retries=1, retry_delay_seconds=10, timeout_seconds=STAGE_TIMEOUT_S, cache_policy=NO_CACHE)
def evaluate(root: Path, env: dict[str, str]) -> str:
    return _repro("evaluate", root, env)


@task(name="build_index", retries=1, retry_delay_seconds=10, timeout_seconds=STAGE_TIMEOUT_S, cache_policy=NO_CACHE)
def build_index(root: Path, env: dict[str, str]) -> str:
    return _repro("build_index", root, env)


# An unreachable tracking store (a restarting server) gets two more tries before the flow fails.
@task(name="check_store", retries=2, retry_delay_seconds=5, cache_policy=NO_CACHE)
def check_store() -> str:
    return tracking.check_store()


@task(name="check_drift", cache_policy=NO_CACHE)
def check_drift(root: Path, params: dict, cfg: policy.RetrainConfig, champion: dict | None, run: tracking.FlowRun,
                force: bool) -> dict:
    """Corpus and embedding drift against the champion; logs metrics and the drift-history plot."""
    drift = None
    params_changed, metrics = False, {}
    if champion is not None:
        version = versions.fetch(cfg.model_name, champion["version"], root)
        drift = version.drift_against(pd.read_parquet(root / "data/processed/papers.parquet"), cfg)
        params_changed = champion["tags"].get("papersim.params_fingerprint") != policy.params_fingerprint(params)
        metrics = versions.drift_metrics(drift, cfg)
    warning = champion["tags"].get(WARNING_TAG, "") if champion is not None else ""
    decision = policy.retrain_needed(champion is not None, params_changed, drift and drift.since_training,
                                     drift and drift.embedding, cfg, force, drift and drift.since_refresh, warning)
    run.log_metrics(metrics)
    action = "retrain" if decision.retrain else "refresh" if decision.refresh else "skip"
    run.set_tags({"papersim.drift_decision": action,
                  "papersim.drift_reason": decision.reason})
    if metrics:
        history = tracking.flow_metric_history("retrain", ["drift.changed_share", "drift.mmd2", "drift.p_value"])
        with tempfile.TemporaryDirectory() as tmp:
            save_drift_plot(history_frame(history), Path(tmp) / "drift_history.png", cfg.drift_p_value,
                            cfg.min_changed_share)
            run.log_artifact(Path(tmp) / "drift_history.png", "drift")
    get_run_logger().info("check_drift: %s (%s)", action, decision.reason)
    return {"retrain": decision.retrain, "refresh": decision.refresh, "reason": decision.reason, "metrics": metrics}


@task(name="rescore_champion", retries=1, retry_delay_seconds=10, timeout_seconds=STAGE_TIMEOUT_S,
      cache_policy=NO_CACHE)
def rescore_champion(root: Path, env: dict[str, str], version: versions.Version) -> tuple[dict, pd.DataFrame]:
    """The evaluate stage on the champion's served system, its outputs in a scratch folder, not reports/:
    (its report, its per-query scores)."""
    with scratch_folder(root / "cache", "rescore") as out:  # its writer in its name: a killed run's is swept
        dump_json(versions.rescore_serving(version).to_dict(), out / "serving.json")
        outputs = {"serving": "serving.json", "report": "evaluate.json", "table": "evaluate.md",
                   "per-query": "per_query.parquet", "curve": "curve.csv", "plot": "curve.png"}
        cmd = stage_command(root, "evaluate", {"model": str(version.encoder),
                                               **{flag: str(out / name) for flag, name in outputs.items()}})
        tags = {**json.loads(env.get(tracking.RUN_TAGS_ENV, "{}")), "papersim.role": "champion_rescore"}
        run_process([sys.executable, *cmd[1:]], root, {**env, tracking.RUN_TAGS_ENV: json.dumps(tags)},
                    STAGE_TIMEOUT_S, "re-scoring the champion")
        report = json.loads((out / "evaluate.json").read_text(encoding="utf-8"))
        return report, pd.read_parquet(out / "per_query.parquet")


@task(name="gate", cache_policy=NO_CACHE)
def gate_task(root: Path, env: dict[str, str], cfg: policy.RetrainConfig, champion: dict | None) -> dict:
    """The candidate (reports/evaluate.json) against the champion on the same evaluation sets."""
    candidate = json.loads((root / "reports/evaluate.json").read_text(encoding="utf-8"))
    candidate_queries = pd.read_parquet(root / "reports" / versions.PER_QUERY)
    champion_report, champion_queries, rescored = None, None, False
    if champion is not None:
        version = versions.fetch(cfg.model_name, champion["version"], root)
        champion_report, champion_queries = version.report(), version.per_query()
        if policy.needs_rescore(candidate, champion_report, cfg, champion_queries is not None):
            (champion_report, champion_queries), rescored = rescore_champion(root, env, version), True
    decision = policy.gate(candidate, champion_report, cfg, candidate_queries, champion_queries)
    get_run_logger().info("gate: %s (%s)%s", "promote" if decision.promote else "challenger", decision.reason,
                          "; the champion was re-scored on the current sets" if rescored else "")
    return {**asdict(decision), "rescored": rescored, "metrics": policy.gate_metrics(decision)}


@task(name="register", cache_policy=NO_CACHE)
def register(root: Path, params: dict, cfg: policy.RetrainConfig, decision: dict, run: tracking.FlowRun,
             tags: dict[str, str]) -> str:
    """Register the candidate (papersim.lifecycle.versions: what a version holds); set its alias."""
    version = versions.register(versions.Candidate.in_workspace(root), cfg, decision,
                                policy.params_fingerprint(params), run.run_id, tags)
    message = registry.promote(cfg.model_name, version) if decision["promote"] else \
        registry.mark_challenger(cfg.model_name, version)
    get_run_logger().info("register: %s", message)
    return version


def _stage_env(run: tracking.FlowRun, flow_run_id: str) -> dict[str, str]:
    bin_dir = str(Path(sys.executable).parent)
    return {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
            "PYTHONUNBUFFERED": "1",  # stage output reaches the flow's log as it is printed
            "MLFLOW_TRACKING_URI": tracking.tracking_uri(),  # the flow's store, from any workspace
            tracking.PARENT_RUN_ENV: run.run_id,
            tracking.RUN_TAGS_ENV: json.dumps({"prefect.flow_run_id": flow_run_id})}


@flow(name="retrain", log_prints=True)
def retrain(root: str = ".", overrides: dict[str, Any] | None = None, force: bool = False,
            lock_timeout_s: float | None = None) -> dict:
    """Retrain if the corpus or params changed, gate the candidate, register it. Returns the outcome."""
    base = Path(root).resolve()
    if not (base / "dvc.yaml").is_file():
        raise PapersimError(f"{base}: no dvc.yaml; run the flow from (or with --root at) the repository root")
    wait = lock_timeout_s if lock_timeout_s is not None else policy.retrain_config(base / "params.yaml").lock_timeout_s
    logger = get_run_logger()
    with watchdog(), retrain_lock(base, wait, logger.warning, flow="retrain"):
        remove_leftovers(base, logger.warning)
        with scratch_workspace(base, dict(overrides or {}), dvc_executable(), logger.info) as work:
            return _run(base, work, overrides or {}, force, logger)


def recover_killed_runs(model_name: str, logger) -> None:
    """Under the lock, before anything runs: the tracking store answers (check_store's retries), MLflow
    runs of killed processes are marked KILLED, and a registration a killed run interrupted is finished."""
    check_store()
    ended = tracking.end_orphaned_runs()
    if ended:
        logger.warning("marked %d MLflow runs of killed processes KILLED: %s", len(ended), ", ".join(ended))
    finished = registry.finish_interrupted(model_name)
    if finished:
        logger.warning(finished)


def _run(base: Path, work: Path, overrides: dict[str, Any], force: bool, logger) -> dict:
    """The run under the lock, in `work` (the repository, or a scratch workspace with overrides)."""
    from flows.refresh import refresh_champion  # flows.refresh wires its tasks from this module's
    check_params(work / "params.yaml")
    params, cfg = read_params(work / "params.yaml"), policy.retrain_config(work / "params.yaml")
    recover_killed_runs(cfg.model_name, logger)
    flow_run_id = str(prefect_flow_run.id)
    tags = {"prefect.flow_run_id": flow_run_id, "mlflow.source.git.commit": git_commit(base)}
    logged = {"overrides": json.dumps(overrides), "force": force, **asdict(cfg)}
    with tracking.flow_run("retrain", logged, tags) as run:
        env = _stage_env(run, flow_run_id)
        champion = tracking.model_version(cfg.model_name, alias=registry.CHAMPION)
        ingest(work, env)
        drift = check_drift(work, params, cfg, champion, run, force)
        if not drift["retrain"]:
            if drift["refresh"] and overrides:  # an experiment never writes to production
                reason = f"{drift['reason']}; not refreshed: a run with overrides never refreshes the champion"
                run.set_tags({"papersim.outcome": "skipped"})
                return {"status": "skipped", "reason": reason, "mlflow_run_id": run.run_id}
            if drift["refresh"]:  # a few new papers: the champion's model serves them, no retraining
                refreshed = refresh_champion(work, env, params, cfg, run, {**tags, "mlflow.run_id": run.run_id})
                run.set_tags({"papersim.outcome": refreshed["status"]})
                return {**refreshed, "drift": drift["reason"], "mlflow_run_id": run.run_id}
            run.set_tags({"papersim.outcome": "skipped"})
            return {"status": "skipped", "reason": drift["reason"], "mlflow_run_id": run.run_id}
        mine_pairs(work, env)
        train(work, env)
        evaluate(work, env)
        decision = gate_task(work, env, cfg, champion)
        run.log_metrics(decision.pop("metrics"))
        if overrides:  # an experiment: whatever its gate says, production stays as it is
            decision = policy.experiment_decision(decision, overrides)
        build_index(work, env)
        version = register(work, params, cfg, decision, run, {**tags, "mlflow.run_id": run.run_id})
        status = "promoted" if decision["promote"] else "challenger"
        run.set_tags({"papersim.outcome": status, "papersim.version": version,
                      "papersim.gate_reason": decision["reason"]})
        with tempfile.TemporaryDirectory() as tmp:
            dump_json(decision, Path(tmp) / "gate.json")
            run.log_artifact(Path(tmp) / "gate.json", "gate")
        outcome = {"status": status, "version": version, "reason": decision["reason"],
                   "champion_rescored": decision["rescored"], "drift": drift["reason"], "mlflow_run_id": run.run_id}
        if not decision["promote"] and not overrides:  # the champion keeps its model, serves the candidate's corpus
            outcome["champion_refresh"] = refresh_champion(work, env, params, cfg, run,
                                                           {**tags, "mlflow.run_id": run.run_id})
        return outcome


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m flows.retrain", description=__doc__.split("\n")[0])
    parser.add_argument("--root", default=".", help="repository root (dvc.yaml, params.yaml)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="override a params.yaml value for this run (YAML value; repeatable)")
    parser.add_argument("--profile", type=Path, default=None, metavar="FILE",
                        help="a YAML file of params overrides ({section: {key: value}}), e.g. profiles/quality.yaml; "
                             "--set values apply after it")
    parser.add_argument("--force", action="store_true", help="retrain even if nothing changed")
    parser.add_argument("--lock-timeout-s", type=float, default=None,
                        help="wait this long for a running retrain or refresh (default: retrain.lock_timeout_s)")
    args = parser.parse_args(argv)
    try:
        # Before anything is started (Prefect's temporary server starts with the flow's first call) and
        # until this process exits (Prefect stops that server at exit): no moment of the run is unwatched.
        with watchdog(until_exit=True):
            offline_prefect()
            overrides = {**(read_profile(args.profile) if args.profile else {}),
                         **dict(parse_override(item) for item in args.overrides)}
            outcome = retrain(root=args.root, overrides=overrides, force=args.force,
                              lock_timeout_s=args.lock_timeout_s)
    except (PapersimError, StageFailed) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"retrain: {outcome['status']}" + (f" v{outcome['version']}" if "version" in outcome else "")
          + f" ({outcome['reason']})")
    if "champion_refresh" in outcome:
        fresh = outcome["champion_refresh"]
        print(f"champion refresh: {fresh['status']}" + (f" v{fresh['version']}" if "version" in fresh else "")
              + f" ({fresh['reason']})")
    return 0


def offline_prefect() -> None:
    """The offline defaults, then Prefect's settings re-read: it reads the environment when imported."""
    from prefect.context import refresh_global_settings_context

    apply_offline_defaults()
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "90")  # cold start: 12-26 s here
    refresh_global_settings_context()


if __name__ == "__main__":
    sys.exit(main())
