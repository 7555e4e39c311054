"""Which training recipe makes "papers similar to this one" better on listings training never saw?

    .venv/bin/python benchmarks/similar_recipes.py [--recipes shipped merge_0.5 gist co_listed_only ...]

Run after the main command: it trains on the main command's own pairs (data/pairs, so the held-out
listings are out of every pair) with train's params changed as each recipe says, or merges the shipped
models/encoder with the base model in weight space (merge_A: (1 - A) x base + A x shipped, no training;
WiSE-FT), and scores each encoder's dense neighbours (the paper read at 256 tokens, as served) and their
fusion with BM25 of the whole paper (z-score convex, 0.5: the served default) by precision@10 on four
listing sets (papersim.evaluation.sets.listing_sets): validation papers asking for their co-listed papers
on known listings (listing-mates were trained on) and on unseen ones (whole listings held out), what a
choice may use; the same two on the test split, reported only. Differences to the base model, measured in
the same run, with 95% intervals resampling listings. Trained and merged encoders are kept in
benchmarks/.work/recipes (keyed by recipe, config and pairs or weights), so a re-run re-trains nothing.
"""

import argparse
import hashlib
import json
import os
import shutil
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
from papersim.evaluation.sets import listing_clusters, listing_sets  # noqa: E402
from papersim.evaluation.significance import clustered_difference  # noqa: E402
from papersim.training.merge import merge_weights  # noqa: E402
from papersim.training.train import TrainConfig, train_encoder  # noqa: E402
from record import record  # noqa: E402

L2SP_WEIGHT = 0.3  # the shipped run ends 3.1 (squared) from the base weights with a ranking loss of ~1.0: at
# 0.3 the pull costs about as much as the loss there, a real brake that still lets the loss fall
# recipe -> (pair sources kept (None: all), train params changed)
RECIPES = {
    "shipped": (None, {}),  # the main command's own models/encoder (no re-training)
    "co_listed_only": (["co_listed"], {}),  # no self-retrieval pairs (title -> abstract, inverse cloze)
    "title_abstract_only": (["title_abstract", "self_supervised"], {}),
    "gist": (None, {"loss": "gist"}),  # in-batch negatives the base model scores above the positive are dropped
    "l2sp": (None, {"l2sp_weight": L2SP_WEIGHT}),  # pulled toward the base weights
    "lr_3e-5": (None, {"learning_rate": 3e-5}),
    "steps_20": (None, {"max_steps": 20, "eval_steps": 20, "save_steps": 20}),  # a third of the shipped steps
    "seq_256": (None, {"max_seq_length": 256}),
    "mnrl": (None, {"loss": "mnrl"}),
}
MERGES = {"merge_0.25": 0.25, "merge_0.5": 0.5, "merge_0.75": 0.75}  # recipe -> weight of the shipped encoder
SETS = {"val known": ("val", "val"), "val unseen": ("val", "val_unseen"),  # name -> (split part, listing_sets key)
        "test known": ("test", "test"), "test unseen": ("test", "test_unseen")}
SERVED = " + paper z0.5"  # the similar task's default fusion: whole-paper BM25, z-scores, dense weight 0.5
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


def merged(name: str) -> Path:
    """The shipped encoder merged with the base model at MERGES[name], saved once per shipped weights."""
    shipped = REPO / "models/encoder"
    weights = hashlib.sha256((shipped / "model.safetensors").read_bytes()).hexdigest()[:12]
    folder = WORK / f"{name}-{weights}"
    if not (folder / "encoder" / "modules.json").is_file():
        start = time.perf_counter()
        model = merge_weights(load_encoder(""), load_encoder(str(shipped)), MERGES[name])
        tmp = folder / f".encoder.tmp-{os.getpid()}"  # a crash leaves no half-written encoder to be reused
        model.save(str(tmp))
        shutil.rmtree(folder / "encoder", ignore_errors=True)  # one a crash left without its modules.json
        os.replace(tmp, folder / "encoder")
        (folder / "train.json").write_text(json.dumps({"merge_s": round(time.perf_counter() - start, 1)}))
    return folder / "encoder"


def listing_tasks(max_group_size: int) -> dict:
    """SETS: validation papers over the non-test papers, test papers over all, each on known and unseen listings."""
    papers = read_papers(REPO / "data/processed/papers.parquet")
    split = pd.read_parquet(REPO / "data/pairs/split.parquet")
    test = set(split.loc[split["split"] == "test", "paper_id"])
    pools = {"val": set(papers["paper_id"]) - test, "test": set(papers["paper_id"])}
    found = {part: listing_sets(papers, split, part, max_group_size, pool, prefix=part) for part, pool in pools.items()}
    return {name: found[part][key] for name, (part, key) in SETS.items() if key in found[part]}


def cost(name: str, folder: str) -> str:
    """How long the encoder took to make: train wall time, or the merge's."""
    if name == "base":
        return ""
    if name == "shipped":
        timings = REPO / "reports/train.timings.json"  # the main command's own run
        return f"{json.loads(timings.read_text())['train_runtime_s']:.0f} s" if timings.is_file() else "main command"
    report = json.loads((Path(folder).parent / "train.json").read_text())
    return f"merge {report['merge_s']:.0f} s" if "merge_s" in report else f"{report['wall_s']:.0f} s"


def main() -> None:
    from similar_views import VIEWS, score_task

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    names = [*RECIPES, *MERGES]
    parser.add_argument("--recipes", nargs="+", default=names, choices=names)
    args = parser.parse_args()
    apply_offline_defaults()
    print("command: .venv/bin/python benchmarks/similar_recipes.py " + " ".join(sys.argv[1:]), flush=True)
    params = read_params(REPO / "params.yaml")
    cfg = build_config(TrainConfig, params["train"], "params.yaml: train")
    train, val = (pd.read_parquet(REPO / f"data/pairs/{part}.parquet") for part in ("train", "val"))
    papers = read_papers(REPO / "data/processed/papers.parquet")
    groups = dict(zip(papers["paper_id"], similarity_groups(papers["groups"], cfg.max_group_size)))
    encoders = {"base": ""}
    for name in args.recipes:  # in the order asked: cheap ones first keeps a cut-short run useful
        encoders[name] = str(REPO / "models/encoder" if name == "shipped" else
                             merged(name) if name in MERGES else trained(name, train, val, cfg, groups))
        print(f"{name}: {encoders[name]} ({cost(name, encoders[name])})", flush=True)
    sets = listing_tasks(cfg.max_group_size)
    views = {"256": VIEWS["256"]}
    results = {name: score_task(task, encoders, views, lexical=("paper",)) for name, task in sets.items()}
    clusters = {name: listing_clusters(task, task.query_ids) for name, task in sets.items()}

    def cell(s: str, row: str, against: str) -> str:
        mean = results[s][row].mean()
        if row == against:
            return f"{mean:.3f}"
        d = clustered_difference(results[s][row], results[s][against], clusters[s])
        return f"{mean:.3f} ({d.mean:+.3f}, {d.low:+.3f} to {d.high:+.3f})"

    with record("similar_recipes"):
        print("\nsets: " + "; ".join(f"{s}: {t.facts['papers']} papers asking, {t.facts['groups']} listings, "
                                     f"{t.facts['docs']} searched" for s, t in sets.items()))
        for title, suffix in (("dense neighbours, the paper at 256 tokens", ""),
                              ("served: dense at 256 tokens + whole-paper BM25, z-score convex 0.5", SERVED)):
            print(f"\n{title}: P@10 (minus base's, 95% CI by listing)\n")
            print("| recipe | " + " | ".join(sets) + " | train wall |")
            print("|---" * (len(sets) + 2) + "|")
            for name, folder in encoders.items():
                print(f"| {name} | " + " | ".join(cell(s, f"{name}@256{suffix}", f"base@256{suffix}") for s in sets)
                      + f" | {cost(name, folder)} |")
        if {"val known", "val unseen"} <= set(sets):
            print("\nbar, validation rows only: served known >= base_hybrid + 0.01 and served unseen >= base - 0.005\n")
            print("| recipe | val known: served - base_hybrid | val unseen: served - base (dense) | "
                  "val unseen: served - base_hybrid | passes |")
            print("|---|---|---|---|---|")
            for name in encoders:
                known, unseen = results["val known"], results["val unseen"]
                gain = known[f"{name}@256{SERVED}"].mean() - known[f"base@256{SERVED}"].mean()
                drop = unseen[f"{name}@256{SERVED}"].mean() - unseen["base@256"].mean()
                drop_hybrid = unseen[f"{name}@256{SERVED}"].mean() - unseen[f"base@256{SERVED}"].mean()
                print(f"| {name} | {gain:+.3f} | {drop:+.3f} | {drop_hybrid:+.3f} | "
                      f"{'yes' if gain >= 0.01 - 1e-9 and drop >= -0.005 - 1e-9 else 'no'} |")


if __name__ == "__main__":
    main()
