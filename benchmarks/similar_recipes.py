"""Which training recipe makes "papers similar to this one" better on listings training never saw?

    .venv/bin/python benchmarks/similar_recipes.py [--recipes shipped co_listed_only ...]

Run after the main command: it trains on the main command's own pairs (data/pairs, so the held-out
listings are out of every pair) with train's params changed as each recipe says, and scores each
encoder's dense neighbours (the paper read at 256 tokens, as served) by precision@10 on the validation
listings (what a choice may use) and the test listings (reported only), as benchmarks/similar_views.py
does, with the base model measured in the same run. Trained encoders are kept in
benchmarks/.work/recipes (keyed by recipe and pairs), so a re-run re-trains nothing.
"""

import argparse
import hashlib
import json
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO / "benchmarks"))

from papersim.config import build_config, read_params  # noqa: E402
from papersim.data.groups import similarity_groups  # noqa: E402
from papersim.data.papers import read_papers  # noqa: E402
from papersim.encoders.load import load_encoder  # noqa: E402
from papersim.env import apply_offline_defaults  # noqa: E402
from papersim.evaluation.sets import listing_clusters  # noqa: E402
from papersim.evaluation.significance import clustered_difference  # noqa: E402
from papersim.training.train import TrainConfig, train_encoder  # noqa: E402
from record import record  # noqa: E402

# recipe -> (pair sources kept (None: all), train params changed)
RECIPES = {
    "shipped": (None, {}),  # the main command's own models/encoder (no re-training)
    "co_listed_only": (["co_listed"], {}),
    "title_abstract_only": (["title_abstract", "self_supervised"], {}),
    "lr_3e-5": (None, {"learning_rate": 3e-5}),
    "seq_256": (None, {"max_seq_length": 256}),
    "mnrl": (None, {"loss": "mnrl"}),
}
WORK = REPO / "benchmarks/.work/recipes"


def trained(name: str, train: pd.DataFrame, val: pd.DataFrame, cfg: TrainConfig, groups) -> Path:
    sources, changes = RECIPES[name]
    cfg = replace(cfg, **changes)
    if sources is not None:
        train = train[train["source"].isin(sources)]
    key = hashlib.sha256(json.dumps([name, asdict(cfg), pd.util.hash_pandas_object(train[["anchor", "positive"]])
                                     .sum().item()], default=str).encode()).hexdigest()[:12]
    folder = WORK / f"{name}-{key}"
    if not (folder / "encoder" / "modules.json").is_file():
        model = load_encoder(cfg.base_model, cfg.max_seq_length)
        start = time.perf_counter()
        _, report = train_encoder(model, train, val, cfg, folder / "checkpoints", key, None, groups)
        model.save(str(folder / "encoder"))
        report["wall_s"] = round(time.perf_counter() - start, 1)
        (folder / "train.json").write_text(json.dumps(report, indent=1, default=str))
    return folder / "encoder"


def main() -> None:
    from similar_views import VIEWS, score_task, tasks

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipes", nargs="+", default=list(RECIPES), choices=list(RECIPES))
    args = parser.parse_args()
    apply_offline_defaults()
    print("command: .venv/bin/python benchmarks/similar_recipes.py " + " ".join(sys.argv[1:]), flush=True)
    params = read_params(REPO / "params.yaml")
    cfg = build_config(TrainConfig, params["train"], "params.yaml: train")
    train, val = (pd.read_parquet(REPO / f"data/pairs/{part}.parquet") for part in ("train", "val"))
    papers = read_papers(REPO / "data/processed/papers.parquet")
    groups = dict(zip(papers["paper_id"], similarity_groups(papers["groups"], cfg.max_group_size)))
    encoders = {"base": "", **{name: str(REPO / "models/encoder") if name == "shipped" else
                               str(trained(name, train, val, cfg, groups)) for name in args.recipes}}
    sets = tasks()
    views = {"256": VIEWS["256"]}
    results = {name: score_task(task, encoders, views, lexical=("paper",)) for name, task in sets.items()}
    clusters = {name: listing_clusters(task, task.query_ids) for name, task in sets.items()}
    with record("similar_recipes"):
        print("\n| recipe | val P@10 dense | val - base (95% CI by listing) | test P@10 dense | test - base | "
              "test P@10 + bm25 paper z0.5 |")
        print("|---|---|---|---|---|---|")
        for name in encoders:
            row = f"{name}@256"
            diffs = {s: clustered_difference(results[s][row], results[s]["base@256"], clusters[s]) for s in sets}
            print(f"| {name} | {results['val'][row].mean():.3f} | {diffs['val'].mean:+.3f} ({diffs['val'].low:+.3f} to "
                  f"{diffs['val'].high:+.3f}) | {results['test'][row].mean():.3f} | {diffs['test'].mean:+.3f} "
                  f"({diffs['test'].low:+.3f} to {diffs['test'].high:+.3f}) | "
                  f"{results['test'][row + ' + paper z0.5'].mean():.3f} |")


if __name__ == "__main__":
    main()
