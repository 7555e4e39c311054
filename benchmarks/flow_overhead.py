"""The retrain flow vs plain `dvc repro` for the same work, side by side; then a skipped run.

    .venv/bin/python benchmarks/flow_overhead.py [--set train.max_steps=10 ...]

Two fresh copies of the repository's tracked files (git's HEAD plus the working tree's params and
code), each with its own DVC cache, embedding cache, MLflow store and Prefect home, all cold:
  1. `dvc repro` in copy A (the five stages);
  2. `python -m flows.retrain` in copy B (the same stages through Prefect tasks, plus the drift
     check, the gate, registration of the model and the Prefect ephemeral server's cold start);
  3. `python -m flows.retrain` again in copy B with nothing changed: the skipped run, Prefect start
     included (the Prefect home is now warm, as on any machine that ran the flow once).
Each command runs in its own process, one after the other (2 cores: side by side in time would
measure contention). `--set` applies the same params override to both copies.
"""

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from papersim.config import override_params, parse_override  # noqa: E402
from papersim.env import OFFLINE_DEFAULTS  # noqa: E402
from record import record  # noqa: E402

COPY = ["dvc.yaml", "params.yaml", "stages", "src", "flows", "data/raw", "pyproject.toml"]


def make_copy(dst: Path, overrides: dict) -> dict[str, str]:
    dst.mkdir(parents=True)
    for item in COPY:
        src = REPO / item
        if src.is_dir():
            shutil.copytree(src, dst / item, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(src, dst / item)
    if overrides:
        path = dst / "params.yaml"
        path.write_text(override_params(path.read_text(encoding="utf-8"), overrides), encoding="utf-8")
    env = {**os.environ, **OFFLINE_DEFAULTS, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "PREFECT_HOME": str(dst / ".prefect"), "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "90"}
    env.pop("MLFLOW_TRACKING_URI", None)
    for cmd in (["git", "init", "-q"], ["dvc", "init", "-q"], ["dvc", "config", "core.analytics", "false"],
                ["git", "add", "-A"], ["git", "-c", "user.name=b", "-c", "user.email=b@example.com", "commit", "-qm", "b"]):
        subprocess.run(cmd, cwd=dst, env=env, check=True, capture_output=True)
    return env


def timed(cmd: list[str], cwd: Path, env: dict[str, str]) -> tuple[float, str]:
    start = time.perf_counter()
    result = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed in {cwd}:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return seconds, result.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE")
    args = parser.parse_args()
    overrides = dict(parse_override(item) for item in args.overrides)
    print("command: .venv/bin/python benchmarks/flow_overhead.py " + " ".join(sys.argv[1:]))
    with tempfile.TemporaryDirectory() as tmp:
        a, b = Path(tmp) / "dvc", Path(tmp) / "flow"
        env_a, env_b = make_copy(a, overrides), make_copy(b, overrides)
        dvc_s, _ = timed(["dvc", "repro"], a, env_a)
        flow_s, out = timed([sys.executable, "-m", "flows.retrain"], b, env_b)
        assert "retrain: promoted v1" in out, out
        skip_s, out = timed([sys.executable, "-m", "flows.retrain"], b, env_b)
        assert "retrain: skipped" in out, out
    with record("flow_overhead"):
        print("\n| run | seconds | ratio to dvc repro |")
        print("|---|---:|---:|")
        print(f"| `dvc repro` (five stages) | {dvc_s:.1f} | 1.00 |")
        print(f"| `python -m flows.retrain` (same stages + drift check, gate, registration, Prefect cold start) "
              f"| {flow_s:.1f} | {flow_s / dvc_s:.3f} |")
        print(f"| `python -m flows.retrain`, nothing changed (skipped; Prefect start included) | {skip_s:.1f} | "
              f"{skip_s / dvc_s:.3f} |")
        print(f"\nflow/dvc wall-time ratio {flow_s / dvc_s:.3f} (goal <= 1.10); "
              f"skipped run {skip_s:.1f} s (goal <= 15 s)")


if __name__ == "__main__":
    main()
