"""Prefect flow `retrain`: the DVC stages, a drift check, a champion gate and the model registry.

    python -m flows.retrain [--set train.max_steps=60 ...] [--force] [--root .]

1. `dvc repro ingest` (cheap; DVC skips it when the raw data did not change), then `check_drift`:
   the corpus against the champion's (content hashes; MMD two-sample test of embeddings under the
   champion's encoder). Nothing changed, no drift, same params: the run ends here, reason logged.
2. `dvc repro mine_pairs`, `train`, `evaluate`: DVC's cache decides what is stale.
3. `gate`: the candidate's eval.json against the champion's on the same sets (content hashes;
   the champion is re-scored by the evaluate stage when they differ).
4. `dvc repro build_index`, then `register`: a version of the registry model (pyfunc: encoder,
   index, eval.json, params, drift reference), alias `champion` if the gate passed, else `challenger`.

One MLflow parent run per flow run (tags: Prefect flow-run id, git commit); every stage run nests
under it through PAPERSIM_PARENT_RUN_ID. Overrides (`--set` or the `overrides` parameter) are
written into params.yaml for the duration of the run (comments kept) and the file is restored
afterwards, so DVC sees exactly the params the stages used. A lock serialises runs.
"""

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from papersim.env import apply_offline_defaults, dvc_executable

apply_offline_defaults()
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "90")  # cold start: 12-26 s here

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from prefect import flow, get_run_logger, task  # noqa: E402
from prefect.cache_policies import NO_CACHE  # noqa: E402
from prefect.runtime import flow_run as prefect_flow_run  # noqa: E402

from papersim.atomic import dump_json  # noqa: E402
from papersim.config import check_params, parse_override, read_params  # noqa: E402
from papersim.errors import PapersimError  # noqa: E402
from papersim.lifecycle import registry, tracking  # noqa: E402
from papersim.lifecycle.drift import (  # noqa: E402
    corpus_change,
    drift_sample,
    embedding_drift,
    sample_vectors,
    save_drift_plot,
)
from papersim.lifecycle.retrain import (  # noqa: E402
    RetrainConfig,
    eval_set_hashes,
    gate,
    gate_sets,
    params_fingerprint,
    retrain_config,
    retrain_needed,
)
from papersim.lifecycle.workspace import params_overrides, retrain_lock  # noqa: E402
from papersim.provenance import git_commit  # noqa: E402

REGISTRY_CACHE = "cache/registry"  # local copies of registered versions (side store, like cache/embeddings)
TRAIN_TIMEOUT_S = 6 * 3600  # a GPU job on a large corpus; CPU runs of the bundled sample take minutes
STAGE_TIMEOUT_S = 2 * 3600


class StageFailed(RuntimeError):
    pass


def _repro(stage: str, root: Path, env: dict[str, str], timeout_s: float) -> str:
    """`dvc repro <stage>` in its own process group (a timeout stops the stage's children too)."""
    proc = subprocess.Popen([dvc_executable(), "repro", stage], cwd=root, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGTERM)
        out, _ = proc.communicate()
        raise StageFailed(f"dvc repro {stage}: no result after {timeout_s:.0f} s; stopped\n{out[-4000:]}") from None
    logger = get_run_logger()
    if proc.returncode != 0:
        raise StageFailed(f"dvc repro {stage} failed (exit {proc.returncode}):\n{out[-4000:]}")
    ran = "ran" if f"Running stage '{stage}'" in out else "up to date"
    logger.info("dvc repro %s: %s", stage, ran)
    return out


# One task per stage, each with its own retry policy. Retries cover transient failures (a killed
# worker, a full disk freed by a cleanup, a preempted GPU); a deterministic error fails every attempt.
@task(name="ingest", retries=1, retry_delay_seconds=10, timeout_seconds=STAGE_TIMEOUT_S, cache_policy=NO_CACHE)
def ingest(root: Path, env: dict[str, str]) -> str:
    return _repro("ingest", root, env, STAGE_TIMEOUT_S)


@task(name="mine_pairs", retries=1, retry_delay_seconds=10, timeout_seconds=STAGE_TIMEOUT_S, cache_policy=NO_CACHE)
def mine_pairs(root: Path, env: dict[str, str]) -> str:
    return _repro("mine_pairs", root, env, STAGE_TIMEOUT_S)


@task(name="train", retries=2, retry_delay_seconds=120, timeout_seconds=TRAIN_TIMEOUT_S, cache_policy=NO_CACHE)
def train(root: Path, env: dict[str, str]) -> str:
    # GPU jobs: two retries two minutes apart (a preempted or OOM-killed job), hours of timeout.
    # The train stage resumes from its last checkpoint, so a retry does not start from zero.
    return _repro("train", root, env, TRAIN_TIMEOUT_S)


@task(name="evaluate", retries=1, retry_delay_seconds=10, timeout_seconds=STAGE_TIMEOUT_S, cache_policy=NO_CACHE)
def evaluate(root: Path, env: dict[str, str]) -> str:
    return _repro("evaluate", root, env, STAGE_TIMEOUT_S)


@task(name="build_index", retries=1, retry_delay_seconds=10, timeout_seconds=STAGE_TIMEOUT_S, cache_policy=NO_CACHE)
def build_index(root: Path, env: dict[str, str]) -> str:
    return _repro("build_index", root, env, STAGE_TIMEOUT_S)


@task(name="check_drift", cache_policy=NO_CACHE)
def check_drift(root: Path, params: dict, cfg: RetrainConfig, champion: dict | None, run: tracking.FlowRun,
                force: bool) -> dict:
    """Corpus and embedding drift against the champion; logs metrics and the drift-history plot."""
    logger = get_run_logger()
    current = pd.read_parquet(root / "data/processed/papers.parquet")
    change = drift = None
    params_changed = False
    metrics: dict[str, float] = {}
    if champion is not None:
        model = tracking.download_model(cfg.model_name, champion["version"], root / REGISTRY_CACHE)
        reference = pd.read_parquet(model / "artifacts/index/ids.parquet")
        change = corpus_change(reference, current)
        params_changed = champion["tags"].get("papersim.params_fingerprint") != params_fingerprint(params)
        metrics.update({"drift.changed_share": change.share, "drift.new_papers": change.new,
                        "drift.changed_papers": change.changed, "drift.removed_papers": change.removed})
        if change.share > 0:
            # Same sample rule as at registration: unchanged papers keep their place in the sample.
            ref_vectors = np.load(model / "artifacts/drift/reference.npy")
            vectors = sample_vectors(drift_sample(current, cfg.drift_sample_size), model / "artifacts/index",
                                      model / "artifacts/encoder")
            drift = embedding_drift(ref_vectors, vectors, cfg.drift_permutations)
            metrics.update({"drift.mmd2": drift.mmd2, "drift.p_value": drift.p_value,
                            "drift.centroid_shift": drift.centroid_shift})
        else:
            # Identical corpus: the sample is the same papers under the same encoder, MMD^2 is 0.
            metrics.update({"drift.mmd2": 0.0, "drift.p_value": 1.0, "drift.centroid_shift": 0.0})
    decision = retrain_needed(champion is not None, params_changed, change, drift, cfg, force)
    run.log_metrics(metrics)
    run.set_tags({"papersim.drift_decision": "retrain" if decision.retrain else "skip",
                  "papersim.drift_reason": decision.reason})
    if metrics:
        history = tracking.flow_metric_history("retrain", ["drift.changed_share", "drift.mmd2", "drift.p_value"])
        frame = pd.DataFrame([{"run": time.strftime("%m-%d %H:%M", time.gmtime(h["start_time"] / 1000)),
                               "changed_share": h["drift.changed_share"], "mmd2": h["drift.mmd2"],
                               "p_value": h["drift.p_value"]} for h in history])
        with tempfile.TemporaryDirectory() as tmp:
            save_drift_plot(frame, Path(tmp) / "drift_history.png", cfg.drift_p_value)
            run.log_artifact(Path(tmp) / "drift_history.png", "drift")
    logger.info("check_drift: %s (%s)", "retrain" if decision.retrain else "skip", decision.reason)
    return {"retrain": decision.retrain, "reason": decision.reason, "metrics": metrics}


@task(name="gate", cache_policy=NO_CACHE)
def gate_task(root: Path, env: dict[str, str], cfg: RetrainConfig, champion: dict | None) -> dict:
    """The candidate (reports/eval.json) against the champion on the same evaluation sets."""
    logger = get_run_logger()
    candidate = json.loads((root / "reports/eval.json").read_text(encoding="utf-8"))
    champion_report, rescored = None, False
    if champion is not None:
        model = tracking.download_model(cfg.model_name, champion["version"], root / REGISTRY_CACHE)
        champion_report = json.loads((model / "artifacts/eval.json").read_text(encoding="utf-8"))
        sets = gate_sets(candidate, cfg)
        want, have = eval_set_hashes(candidate), eval_set_hashes(champion_report)
        system = cfg.primary_metric.split("/")[0]
        # Re-score when the sets changed, or when the champion predates the primary system (e.g. `served`).
        if any(want.get(s) is None or want.get(s) != have.get(s) or system not in champion_report.get(s, {})
               for s in sets):
            champion_report, rescored = _rescore(root, env, model / "artifacts"), True
            logger.info("gate: evaluation sets changed since the champion was scored; re-scored it")
    decision = gate(candidate, champion_report, cfg)
    logger.info("gate: %s (%s)", "promote" if decision.promote else "challenger", decision.reason)
    return {"promote": decision.promote, "reason": decision.reason, "primary": decision.primary,
            "champion_primary": decision.champion_primary, "deltas": decision.deltas, "floor": decision.floor,
            "rescored": rescored}


def _rescore(root: Path, env: dict[str, str], artifacts: Path) -> dict:
    """The evaluate stage run on the champion's served system (its encoder, and the fusion its index
    stores) with outputs in a scratch folder, not reports/."""
    from papersim.retrieval.search import load_search_index
    from papersim.training.selection import Serving

    fusion = load_search_index(artifacts / "index").fusion
    (root / "cache").mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(dir=root / "cache") as tmp:
        out = Path(tmp)
        # The version's encoder folder holds the encoder it serves: as the evaluate stage's "trained" one.
        serving = Serving("trained", "", fusion, "the champion's served system, re-scored")
        dump_json(serving.to_dict(), out / "serving.json")
        cmd = [sys.executable, "-m", "stages.evaluate", "--params", "params.yaml",
               "--model", str(artifacts / "encoder"), "--serving", str(out / "serving.json"),
               "--report", str(out / "eval.json"), "--table", str(out / "eval.md"),
               "--per-query", str(out / "per_query.parquet"),
               "--curve", str(out / "curve.csv"), "--plot", str(out / "curve.png")]
        tags = {**json.loads(env.get(tracking.RUN_TAGS_ENV, "{}")), "papersim.role": "champion_rescore"}
        result = subprocess.run(cmd, cwd=root, env={**env, tracking.RUN_TAGS_ENV: json.dumps(tags)},
                                capture_output=True, text=True)
        if result.returncode != 0:
            raise StageFailed(f"re-scoring the champion failed (exit {result.returncode}):\n{result.stderr[-4000:]}")
        return json.loads((out / "eval.json").read_text(encoding="utf-8"))


@task(name="register", cache_policy=NO_CACHE)
def register(root: Path, params: dict, cfg: RetrainConfig, decision: dict, run: tracking.FlowRun,
             tags: dict[str, str]) -> str:
    """Register the candidate (encoder, index, eval.json, params, drift reference); set its alias."""
    from papersim.encoders.encode import model_folder
    from papersim.training.selection import read_serving

    papers = pd.read_parquet(root / "data/processed/papers.parquet")
    serving = read_serving(root / "models/serving.json")
    encoder = model_folder(serving.encoder_folder(str(root / "models/encoder")))  # what the index serves
    sample = drift_sample(papers, cfg.drift_sample_size)
    vectors = sample_vectors(sample, root / "artifacts/index", encoder)  # all indexed: no encoding
    report = json.loads((root / "reports/eval.json").read_text(encoding="utf-8"))
    cache = root / REGISTRY_CACHE
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache) as tmp:
        staging = Path(tmp)
        (staging / "drift").mkdir()
        np.save(staging / "drift/reference.npy", vectors)
        sample[["paper_id", "content_hash"]].to_parquet(staging / "drift/sample.parquet", index=False)
        shutil.copy(root / "params.yaml", staging / "params.yaml")  # the effective params, overrides included
        if encoder.name != "encoder":  # MLflow names a directory artifact after its folder: the base model's is not
            shutil.copytree(encoder, staging / "encoder")
            encoder = staging / "encoder"
        version_tags = {
            **tags, "papersim.params_fingerprint": params_fingerprint(params),
            "papersim.gate": "champion" if decision["promote"] else "challenger",
            "papersim.gate_reason": decision["reason"], "papersim.primary": f"{decision['primary']:.4f}",
            "papersim.primary_metric": cfg.primary_metric, "papersim.papers": len(papers),
            "papersim.served_encoder": serving.encoder, "papersim.serving_reason": serving.reason,
            "papersim.fusion": serving.fusion.describe(),
            **{f"eval_set.{name}.content_hash": h for name, h in eval_set_hashes(report).items()},
        }
        artifacts = {"encoder": encoder, "index": root / "artifacts/index",
                     "eval": root / "reports/eval.json", "params": staging / "params.yaml",
                     "drift": staging / "drift"}
        version = tracking.register_search_model(run.run_id, cfg.model_name, artifacts, version_tags, staging)
        # The saved copy is exactly what was uploaded: keep it as the local copy of this version.
        target = cache / f"{cfg.model_name}-v{version}"
        if not target.exists():
            os.replace(staging / tracking.MODEL_ARTIFACT_PATH, target)
    message = registry.promote(cfg.model_name, version) if decision["promote"] else \
        registry.mark_challenger(cfg.model_name, version)
    get_run_logger().info("register: %s", message)
    return version


def _stage_env(root: Path, run: tracking.FlowRun, flow_run_id: str) -> dict[str, str]:
    bin_dir = str(Path(sys.executable).parent)
    return {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
            tracking.PARENT_RUN_ENV: run.run_id,
            tracking.RUN_TAGS_ENV: json.dumps({"prefect.flow_run_id": flow_run_id})}


@flow(name="retrain", log_prints=True)
def retrain(root: str = ".", overrides: dict[str, Any] | None = None, force: bool = False,
            lock_timeout_s: float | None = None) -> dict:
    """Retrain if the corpus or params changed, gate the candidate, register it. Returns the outcome."""
    base = Path(root).resolve()
    params_path = base / "params.yaml"
    if not (base / "dvc.yaml").is_file():
        raise PapersimError(f"{base}: no dvc.yaml; run the flow from (or with --root at) the repository root")
    wait = lock_timeout_s if lock_timeout_s is not None else retrain_config(params_path).lock_timeout_s
    with retrain_lock(base, wait), params_overrides(params_path, dict(overrides or {})):
        check_params(params_path)
        params = read_params(params_path)
        cfg = retrain_config(params_path)
        flow_run_id = str(prefect_flow_run.id)
        tags = {"prefect.flow_run_id": flow_run_id, "mlflow.source.git.commit": git_commit(base)}
        logged = {"overrides": json.dumps(overrides or {}), "force": force, **asdict(cfg)}
        with tracking.flow_run("retrain", logged, tags) as run:
            env = _stage_env(base, run, flow_run_id)
            champion = tracking.model_version(cfg.model_name, alias=registry.CHAMPION)
            ingest(base, env)
            drift = check_drift(base, params, cfg, champion, run, force)
            if not drift["retrain"]:
                run.set_tags({"papersim.outcome": "skipped"})
                return {"status": "skipped", "reason": drift["reason"], "mlflow_run_id": run.run_id}
            mine_pairs(base, env)
            train(base, env)
            evaluate(base, env)
            decision = gate_task(base, env, cfg, champion)
            run.log_metrics({"gate.primary": decision["primary"],
                             **({"gate.champion_primary": decision["champion_primary"]}
                                if decision["champion_primary"] is not None else {}),
                             **{f"gate.delta.{k.replace('/', '.')}": v for k, v in decision["deltas"].items()},
                             **{f"gate.floor.{k.replace('/', '.')}": v for k, v in decision["floor"].items()}})
            build_index(base, env)
            version = register(base, params, cfg, decision, run, {**tags, "mlflow.run_id": run.run_id})
            status = "promoted" if decision["promote"] else "challenger"
            run.set_tags({"papersim.outcome": status, "papersim.version": version,
                          "papersim.gate_reason": decision["reason"]})
            with tempfile.TemporaryDirectory() as tmp:
                dump_json(decision, Path(tmp) / "gate.json")
                run.log_artifact(Path(tmp) / "gate.json", "gate")
            return {"status": status, "version": version, "reason": decision["reason"],
                    "champion_rescored": decision["rescored"], "drift": drift["reason"], "mlflow_run_id": run.run_id}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m flows.retrain", description=__doc__.split("\n")[0])
    parser.add_argument("--root", default=".", help="repository root (dvc.yaml, params.yaml)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="override a params.yaml value for this run (YAML value; repeatable)")
    parser.add_argument("--force", action="store_true", help="retrain even if nothing changed")
    parser.add_argument("--lock-timeout-s", type=float, default=None,
                        help="wait this long for a running retrain (default: retrain.lock_timeout_s)")
    args = parser.parse_args(argv)
    try:
        overrides = dict(parse_override(item) for item in args.overrides)
        outcome = retrain(root=args.root, overrides=overrides, force=args.force, lock_timeout_s=args.lock_timeout_s)
    except (PapersimError, StageFailed) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"retrain: {outcome['status']}" + (f" v{outcome['version']}" if "version" in outcome else "")
          + f" ({outcome['reason']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
