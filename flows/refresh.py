"""Prefect flow `refresh`: the champion's model over the current corpus, served without retraining.

    python -m flows.refresh [--root .]

0. Before any work: a retrain holding the repository skips this refresh (the next slot serves the new
   papers; a retrain may run for hours); no champion yet ends it with that reason; a champion whose
   index is gone, or a params.yaml whose build_index or evaluate sections are not the champion's, stop it
   with a clear message.
1. `dvc repro ingest`: new sources are read, normalised and validated; a rejected input fails here,
   with ingest's message, and nothing else runs.
2. The current corpus against the champion's index: nothing new, changed or removed ends the run.
3. The build_index stage with the champion's encoder, fusion and similar-papers settings, into a
   scratch copy of the champion's index: only new or changed papers are encoded (the embedding cache,
   build_index's incremental path); removed papers drop out; BM25 is rebuilt over the current corpus.
4. The evaluate stage with the champion's served system on the current sets and the champion's own
   split (the test papers it was scored on, never papers it trained on), then the data checks
   (papersim.lifecycle.refresh.check_refresh): the index's recall@10 (refused below its target); served
   below the baseline floor is a warning tag the next retrain check retrains on. No significance test:
   the model did not change.
5. `register`: a version holding the new index and referring to the champion's model (no copy of it),
   described as a refresh, promoted to champion (a rollback returns to the version before it); refresh
   versions beyond retrain.keep_refreshes are archived.

It shares the retrain flow's lock (never two writers at once), its watchdog and its recovery of killed
runs. The retrain flow runs the same steps when the drift check finds only a few new papers, and after a
candidate that stays challenger (never in a run with overrides). Wiring only: the decisions are in
papersim.lifecycle.refresh.
"""

import argparse
import json
import shutil
import sys
from dataclasses import replace
from pathlib import Path

import pandas as pd
import yaml
from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run as prefect_flow_run

from flows.retrain import STAGE_TIMEOUT_S, _stage_env, ingest, offline_prefect, recover_killed_runs
from papersim.atomic import dump_json, scratch_folder
from papersim.config import build_config, check_params, read_params
from papersim.errors import PapersimError
from papersim.lifecycle import registry, tracking, versions
from papersim.lifecycle import retrain as policy
from papersim.lifecycle.drift import corpus_change
from papersim.lifecycle.processes import StageFailed, run_process, watchdog
from papersim.lifecycle.refresh import (changed_anything, check_refresh, describe_change, model_version,
                                        refresh_decision, refresh_description, refresh_tags)
from papersim.lifecycle.workspace import LockHeld, remove_leftovers, retrain_lock
from papersim.provenance import git_commit
from papersim.retrieval.index import BuildIndexConfig, indexed_papers
from papersim.stage import stage_command

SERVING_TAGS = ("papersim.served_encoder", "papersim.serving_reason", "papersim.fusion", "papersim.similar")


def _stage_into(root: Path, env: dict[str, str], stage: str, flags: dict[str, str], what: str) -> None:
    """A stage of dvc.yaml run with some of its paths replaced (outputs into a scratch folder), outside DVC:
    the workspace's own outputs and dvc.lock are not touched."""
    cmd = stage_command(root, stage, flags)
    tags = {**json.loads(env.get(tracking.RUN_TAGS_ENV, "{}")), "papersim.role": "refresh"}
    logger = get_run_logger()
    run_process([sys.executable, *cmd[1:]], root, {**env, tracking.RUN_TAGS_ENV: json.dumps(tags)}, STAGE_TIMEOUT_S,
                what, on_line=lambda line: logger.info("%s | %s", stage, line))


@task(name="refresh_index", retries=1, retry_delay_seconds=10, timeout_seconds=STAGE_TIMEOUT_S, cache_policy=NO_CACHE)
def refresh_index(root: Path, env: dict[str, str], version: versions.Version, scratch: Path) -> dict:
    """build_index with the version's served system over the current papers, into scratch/index."""
    get_run_logger().info("refresh_index: build_index with the served system of %s, into a scratch copy of its "
                          "index", version.name)
    serving = versions.rescore_serving(version)
    dump_json(replace(serving, reason=f"refresh: the served system of {version.name}").to_dict(),
              scratch / "serving.json")
    if not (scratch / "index").exists():  # the version's own index: build_index adds only what is new
        shutil.copytree(version.index, scratch / "index")
    _stage_into(root, env, "build_index", {"model": str(version.encoder), "serving": str(scratch / "serving.json"),
                                           "out": str(scratch / "index"), "report": str(scratch / "build_index.json")},
                "refreshing the index")
    return json.loads((scratch / "build_index.json").read_text(encoding="utf-8"))


@task(name="score_refresh", retries=1, retry_delay_seconds=10, timeout_seconds=STAGE_TIMEOUT_S, cache_policy=NO_CACHE)
def score_refresh(root: Path, env: dict[str, str], version: versions.Version, scratch: Path) -> dict:
    """evaluate with the version's served system on the current sets, into the scratch folder."""
    get_run_logger().info("score_refresh: evaluate with the served system of %s on the current sets",
                          version.name)
    outputs = {"serving": "serving.json", "report": "evaluate.json", "table": "evaluate.md",
               "per-query": versions.PER_QUERY, "curve": "curve.csv", "plot": "curve.png"}
    flags = {"model": str(version.encoder), **{flag: str(scratch / name) for flag, name in outputs.items()}}
    if version.split is not None:  # the champion's test papers, whatever the workspace's split says now
        (scratch / "pairs").mkdir(exist_ok=True)
        shutil.copy(version.split, scratch / "pairs" / versions.SPLIT)
        flags["pairs"] = str(scratch / "pairs")
    else:
        get_run_logger().warning("score_refresh: %s was registered without its split: scored on the workspace's",
                                 version.name)
    _stage_into(root, env, "evaluate", flags, "scoring the refreshed champion")
    return json.loads((scratch / "evaluate.json").read_text(encoding="utf-8"))


@task(name="register_refresh", cache_policy=NO_CACHE)
def register_refresh(root: Path, cfg: policy.RetrainConfig, champion: dict, version: versions.Version, scratch: Path,
                     decision: dict, description: str, run: tracking.FlowRun, tags: dict[str, str]) -> str:
    """The refreshed index as a version referring to the champion's model (its serving tags too), promoted."""
    get_run_logger().info("register_refresh: %s", decision["reason"])
    carried = {k: v for k, v in champion["tags"].items() if k in SERVING_TAGS}
    number = versions.register_refresh(root, version, champion["source"], scratch, cfg, decision,
                                       champion["tags"].get("papersim.params_fingerprint", ""), run.run_id,
                                       {**tags, **carried}, description)
    get_run_logger().info("register: %s", registry.promote(cfg.model_name, number))
    return number


@task(name="prune_registry", cache_policy=NO_CACHE)
def prune_registry(root: Path, cfg: policy.RetrainConfig) -> list[str]:
    """retrain.keep_refreshes: older refresh versions are archived (their indexes removed)."""
    removed = registry.prune_refreshes(cfg.model_name, cfg.keep_refreshes, root / versions.REGISTRY_CACHE)
    if removed:
        get_run_logger().info("prune_registry: archived refresh versions %s (retrain.keep_refreshes %d)",
                              ", ".join(f"v{v}" for v in removed), cfg.keep_refreshes)
    return removed


def production_champion(root: Path, params: dict, cfg: policy.RetrainConfig) -> tuple[dict, versions.Version]:
    """The champion a refresh of `root` may replace, checked before any work: it exists, its index is there,
    and the workspace's params are the ones it was registered with where a refresh reads them."""
    champion = tracking.model_version(cfg.model_name, alias=registry.CHAMPION)
    if champion is None:
        raise PapersimError(f"model {cfg.model_name!r} has no champion to refresh: run the retrain flow first "
                            "(`python -m flows.retrain`)")
    version = versions.fetch(cfg.model_name, champion["version"], root)
    version.index  # noqa: B018  (a clear error when the champion's index is gone)
    registered = yaml.safe_load((version.folder / "artifacts/params.yaml").read_text(encoding="utf-8")) or {}
    differ = policy.refresh_params_differ(params, registered)
    if differ:
        raise PapersimError(f"{root / 'params.yaml'}: {', '.join(differ)} differ from the params champion "
                            f"v{champion['version']} was registered with: a refresh would register an index those "
                            "params do not describe. Nothing was changed. Retrain (`python -m flows.retrain`) to "
                            "serve these params, or restore them")
    return champion, version


def refresh_champion(work: Path, env: dict[str, str], params: dict, cfg: policy.RetrainConfig, run: tracking.FlowRun,
                     tags: dict[str, str]) -> dict:
    """The champion's model over the corpus in `work` (ingested): a promoted refresh, or why not."""
    logger = get_run_logger()
    champion, version = production_champion(work, params, cfg)
    change = corpus_change(indexed_papers(version.index), pd.read_parquet(work / "data/processed/papers.parquet"))
    run.log_metrics({"refresh.added": change.new, "refresh.changed": change.changed, "refresh.removed": change.removed})
    if not changed_anything(change):
        reason = f"v{champion['version']} already serves the current corpus ({change.n_current} papers)"
        logger.info("refresh: nothing to do: %s", reason)
        return {"status": "up to date", "version": champion["version"], "reason": reason}
    logger.info("refresh of champion v%s (the v%s model): %s", champion["version"], model_version(champion),
                describe_change(change))
    target = build_config(BuildIndexConfig, params["build_index"], "params.yaml: build_index").target_recall
    with scratch_folder(work / "cache", "refresh") as scratch:  # its writer in its name: a killed run's is swept
        built = refresh_index(work, env, version, scratch)
        report = score_refresh(work, env, version, scratch)
        check = check_refresh(report, built, cfg, target)
        decision = refresh_decision(champion, change, check, cfg.primary_metric)
        if check.warnings:
            logger.warning("refresh of v%s: %s", champion["version"], "; ".join(check.warnings))
        if not check.passed:
            logger.warning("refresh of v%s %s; the champion is unchanged", champion["version"], check.reason)
            return {"status": "refused", "version": champion["version"], "reason": decision["reason"]}
        number = register_refresh(work, cfg, champion, version, scratch, decision,
                                  refresh_description(champion, change, check), run,
                                  {**tags, **refresh_tags(champion, change, check)})
    archived = prune_registry(work, cfg)
    return {"status": "refreshed", "version": number, "refresh_of": champion["version"],
            "model_version": model_version(champion), "reason": decision["reason"], "added": change.new,
            "changed": change.changed, "removed": change.removed, "archived": archived}


@flow(name="refresh", log_prints=True)
def refresh(root: str = ".", lock_timeout_s: float | None = None) -> dict:
    """Serve the current corpus with the champion's model; returns the outcome."""
    base = Path(root).resolve()
    if not (base / "dvc.yaml").is_file():
        raise PapersimError(f"{base}: no dvc.yaml; run the flow from (or with --root at) the repository root")
    cfg = policy.retrain_config(base / "params.yaml")
    wait = lock_timeout_s if lock_timeout_s is not None else cfg.refresh_lock_timeout_s
    logger = get_run_logger()
    with watchdog():
        try:  # LockHeld comes only from taking the lock, never from the run under it
            with retrain_lock(base, wait, logger.warning, flow="refresh", skip_behind=("retrain",)):
                return _refresh_under_lock(base, cfg, logger)
        except LockHeld as held:  # a retrain may run for hours: this slot is skipped, the next one refreshes
            reason = f"a retrain is running ({held.holder}); the next scheduled refresh serves the new papers"
            logger.warning("refresh skipped: %s", reason)
            return {"status": "skipped", "reason": reason}


def _refresh_under_lock(base: Path, cfg: policy.RetrainConfig, logger) -> dict:
    remove_leftovers(base, logger.warning)
    check_params(base / "params.yaml")
    params = read_params(base / "params.yaml")
    recover_killed_runs(cfg.model_name, logger)
    if tracking.model_version(cfg.model_name, alias=registry.CHAMPION) is None:  # a schedule started before any model
        reason = (f"model {cfg.model_name!r} has no champion to refresh yet: run the retrain flow first "
                  "(`python -m flows.retrain`); nothing was read or changed")
        logger.warning("refresh: %s", reason)
        return {"status": "no champion", "reason": reason}
    production_champion(base, params, cfg)  # before ingest: no work for a refresh that cannot register
    flow_run_id = str(prefect_flow_run.id)
    tags = {"prefect.flow_run_id": flow_run_id, "mlflow.source.git.commit": git_commit(base)}
    with tracking.flow_run("refresh", {"model_name": cfg.model_name}, tags) as run:
        env = _stage_env(run, flow_run_id)
        ingest(base, env)
        outcome = refresh_champion(base, env, params, cfg, run, {**tags, "mlflow.run_id": run.run_id})
        run.set_tags({"papersim.outcome": outcome["status"], "papersim.refresh_reason": outcome["reason"]})
        return {**outcome, "mlflow_run_id": run.run_id}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m flows.refresh", description=__doc__.split("\n")[0])
    parser.add_argument("--root", default=".", help="repository root (dvc.yaml, params.yaml)")
    parser.add_argument("--lock-timeout-s", type=float, default=None,
                        help="wait this long for a running retrain or refresh (default: retrain.refresh_lock_timeout_s)")
    args = parser.parse_args(argv)
    try:
        with watchdog(until_exit=True):  # as flows.retrain: Prefect's temporary server is watched too
            offline_prefect()
            outcome = refresh(root=args.root, lock_timeout_s=args.lock_timeout_s)
    except (PapersimError, StageFailed) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"refresh: {outcome['status']}" + (f" v{outcome['version']}" if "version" in outcome else "")
          + f" ({outcome['reason']})")
    return 1 if outcome["status"] in ("refused", "no champion") else 0  # skipped behind a retrain: the next slot


if __name__ == "__main__":
    sys.exit(main())
