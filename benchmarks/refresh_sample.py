"""New papers reaching the champion on the bundled sample: the refresh flow against a retrain, side by side.

    .venv/bin/python benchmarks/refresh_sample.py [--new 100]

In a scratch clone of this repository (its own MLflow store, Prefect home and DVC cache; the embedding
cache copied from this checkout, as a machine that ran the main command has it):
  1. `python -m flows.retrain`: the first champion (not timed against anything; its time is printed);
  2. `--new` papers appended to the arXiv source, then `python -m flows.refresh`, timed from start to
     "new version is champion" (the process's wall time: Python start, Prefect's temporary server,
     ingest, build_index, evaluate, registration and promotion);
  3. `--new` more papers appended, then `python -m flows.retrain --force` with the retrain threshold
     at 0: what new papers cost before a refresh existed (a retrain, its gate, and a registration),
     timed the same way.
The new papers are pipeline_scale's synthetic ones (real sentences of the bundled sample, new ids).
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from record import record

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

SOURCE = "data/raw/arxiv/ml_kaggle_abstracts_sample.jsonl"


def clone(root: Path) -> Path:
    repo = root / "repo"
    subprocess.run(["git", "clone", "-q", "--no-hardlinks", str(REPO), str(repo)], check=True)
    for name in ("cache/embeddings",):  # vectors of the bundled papers, as after the main command
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, repo / name, symlinks=True)
    return repo


def append_papers(repo: Path, n: int, start: int) -> None:
    from pipeline_scale import write_corpus

    with tempfile.TemporaryDirectory() as tmp:
        write_corpus(Path(tmp) / "new.jsonl", start + n, seed=7)
        rows = [json.loads(line) for line in (Path(tmp) / "new.jsonl").read_text(encoding="utf-8").splitlines()]
    with (repo / SOURCE).open("a", encoding="utf-8") as f:
        for row in rows[start:]:
            f.write(json.dumps({**row, "id": f"new-{row['id']}"}) + "\n")


def timed(repo: Path, env: dict, *args: str) -> tuple[float, str]:
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", *args, "--root", str(repo)], cwd=REPO, env=env,
                          capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode:
        raise SystemExit(f"{' '.join(args)} failed:\n{(proc.stdout + proc.stderr)[-4000:]}")
    return wall, proc.stdout.strip().splitlines()[-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--new", type=int, default=100)
    args = parser.parse_args()
    print("command: .venv/bin/python benchmarks/refresh_sample.py " + " ".join(sys.argv[1:]), flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        repo = clone(Path(tmp))
        env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
               "MLFLOW_TRACKING_URI": f"sqlite:///{repo / 'mlruns/mlflow.db'}", "PREFECT_HOME": str(repo / ".prefect"),
               "PYTHONUNBUFFERED": "1"}
        env.pop("PREFECT_API_URL", None)  # Prefect's temporary server, as the main command uses
        env.pop("PAPERSIM_PARENT_RUN_ID", None)
        (repo / "mlruns").mkdir()
        first, said = timed(repo, env, "flows.retrain")
        print(f"first champion: {first:.0f} s ({said})", flush=True)
        append_papers(repo, args.new, 0)
        refresh, said_refresh = timed(repo, env, "flows.refresh")
        append_papers(repo, args.new, args.new)
        retrain, said_retrain = timed(repo, env, "flows.retrain", "--force")
    with record("refresh_sample"):
        print(f"\n| {args.new} new papers reach the champion by | wall seconds (Prefect start-up included) | "
              "ratio to the retrain | outcome |")
        print("|---|---:|---:|---|")
        print(f"| **refresh** (`python -m flows.refresh`) | **{refresh:.0f}** | **{refresh / retrain:.2f}** | "
              f"{said_refresh[:120]} |")
        print(f"| retrain (`python -m flows.retrain --force`, the baseline) | {retrain:.0f} | 1.00 | "
              f"{said_retrain[:120]} |")


if __name__ == "__main__":
    main()
