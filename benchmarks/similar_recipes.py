"""Which training recipe makes "papers similar to this one" better on listings training never saw?

    .venv/bin/python benchmarks/similar_recipes.py [--recipes shipped merge_0.5 gist co_listed_only distil ...]

Run after the main command: it trains on the main command's own pairs (data/pairs, so the held-out
listings are out of every pair) with train's params changed as each recipe says, or merges the shipped
models/encoder with the base model in weight space (merge_A: (1 - A) x base + A x shipped, no training;
WiSE-FT), or distils the served fusion into the base model (distil: papersim.training.distil, margin-MSE
on the train split's papers ranked by whole-paper BM25 + base dense, z-score convex 0.5; distil_merge_A:
(1 - A) x base + A x distil), and scores each encoder's dense neighbours (the paper read at 256 tokens, as
served) and their fusion with BM25 of the whole paper (z-score convex, 0.5: the served default) by precision@10 on four
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

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO / "benchmarks"))

from papersim.config import build_config, read_params  # noqa: E402
from papersim.data.groups import similarity_groups  # noqa: E402
from papersim.data.papers import read_papers  # noqa: E402
from papersim.encoders.load import load_encoder  # noqa: E402
from papersim.env import apply_offline_defaults  # noqa: E402
from papersim.encoders.cache import cached_embedder  # noqa: E402
from papersim.evaluation.metrics import ndcg_at_k  # noqa: E402
from papersim.evaluation.sets import held_out_set, listing_clusters, listing_sets, load_beir_set  # noqa: E402
from papersim.evaluation.significance import clustered_difference, paired_difference  # noqa: E402
from papersim.retrieval.dense import dense_hits  # noqa: E402
from papersim.retrieval.fusion import Fusion, fuse_rankings  # noqa: E402
from papersim.retrieval.lexical import BM25, lexical_hits  # noqa: E402
from papersim.training.distil import (DistilConfig, distillation_examples, train_distilled,  # noqa: E402
                                      training_papers)
from papersim.training.merge import merge_weights  # noqa: E402
from papersim.training.similar_choice import choose_encoder  # noqa: E402
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
# recipe -> (DistilConfig changed, train params changed); train's own rate, steps (60), batch, warm-up and seed
DISTILS = {
    "distil": ({}, {}),
}
DISTIL_MERGES = {"distil_merge_0.5": ("distil", 0.5)}  # recipe -> (distilled recipe, its weight against base)
SETS = {"val known": ("val", "val"), "val unseen": ("val", "val_unseen"),  # name -> (split part, listing_sets key)
        "test known": ("test", "test"), "test unseen": ("test", "test_unseen")}
SERVED = " + paper z0.5"  # the similar task's default fusion: whole-paper BM25, z-scores, dense weight 0.5
WORK = REPO / "benchmarks/.work/recipes"


def training_settings(cfg: TrainConfig) -> dict:
    """The config as a cache key: without the similar task's choice settings (similar_*), which steer what
    serves after training and never the weights, so a new one leaves every trained recipe cached."""
    return {k: v for k, v in asdict(cfg).items() if not k.startswith("similar_")}


def trained(name: str, train: pd.DataFrame, val: pd.DataFrame, cfg: TrainConfig, groups) -> Path:
    sources, changes = RECIPES[name]
    cfg = replace(cfg, **changes)
    if sources is not None:
        train = train[train["source"].isin(sources)]
    key = hashlib.sha256(json.dumps([name, training_settings(cfg), pd.util.hash_pandas_object(
        train[["anchor", "positive"]]).sum().item()], default=str).encode()).hexdigest()[:12]
    folder = WORK / f"{name}-{key}"
    if not (folder / "encoder" / "modules.json").is_file():
        model = load_encoder(cfg.base_model, cfg.max_seq_length)
        start = time.perf_counter()
        _, report = train_encoder(model, train, val, cfg, folder / "checkpoints", key, None, groups)
        model.save(str(folder / "encoder"))
        report["wall_s"] = round(time.perf_counter() - start, 1)
        (folder / "train.json").write_text(json.dumps(report, indent=1, default=str))
    return folder / "encoder"


def merged(name: str, trained: Path, a: float) -> Path:
    """The `trained` encoder merged with the base model at weight `a`, saved once per trained weights."""
    weights = hashlib.sha256((trained / "model.safetensors").read_bytes()).hexdigest()[:12]
    folder = WORK / f"{name}-{weights}"
    if not (folder / "encoder" / "modules.json").is_file():
        start = time.perf_counter()
        model = merge_weights(load_encoder(""), load_encoder(str(trained)), a)
        save_atomic(model, folder / "encoder")
        (folder / "train.json").write_text(json.dumps({"merge_s": round(time.perf_counter() - start, 1)}))
    return folder / "encoder"


def save_atomic(model, target: Path) -> None:
    """Save `model` at `target`: a crash leaves no half-written encoder to be reused."""
    tmp = target.parent / f".{target.name}.tmp-{os.getpid()}"
    model.save(str(tmp))
    shutil.rmtree(target, ignore_errors=True)  # one a crash left without its modules.json
    os.replace(tmp, target)


def distilled(name: str, cfg: TrainConfig) -> Path:
    """The base model distilled from the served fusion on the train split's papers (DISTILS[name]), once per
    config and papers."""
    from similar_views import WORK as VIEWS_WORK

    changes, train_changes = DISTILS[name]
    distil, cfg = replace(DistilConfig(), **changes), replace(cfg, **train_changes)
    papers = training_papers(read_papers(REPO / "data/processed/papers.parquet"),
                             pd.read_parquet(REPO / "data/pairs/split.parquet"))
    key = hashlib.sha256(json.dumps([name, training_settings(cfg), asdict(distil), pd.util.hash_pandas_object(
        papers[["paper_id", "title", "abstract"]]).sum().item()], default=str).encode()).hexdigest()[:12]
    folder = WORK / f"{name}-{key}"
    if not (folder / "encoder" / "modules.json").is_file():
        start = time.perf_counter()
        # the teacher's dense side is the served base vectors: the cache the scoring below reads them from
        embed = cached_embedder(cfg.base_model, "auto", distil.max_seq_length, 32, VIEWS_WORK / "cache")
        examples, infos = distillation_examples(papers, embed, distil, cfg.seed)
        teacher_s = time.perf_counter() - start
        print(f"{name}: {infos}", flush=True)
        model = load_encoder(cfg.base_model, distil.max_seq_length)
        start = time.perf_counter()
        _, report = train_distilled(model, examples, cfg, distil, folder / "checkpoints")
        wall_s = time.perf_counter() - start
        save_atomic(model, folder / "encoder")
        (folder / "train.json").write_text(json.dumps({"wall_s": round(wall_s, 1), "teacher_s": round(teacher_s, 1),
                                                       "distil": asdict(distil), "examples": infos, **report},
                                                      indent=1, default=str))
    return folder / "encoder"


def listing_tasks(max_group_size: int) -> dict:
    """SETS: validation papers over the non-test papers, test papers over all, each on known and unseen listings.
    Validation papers are the train stage's choice papers (mine_pairs' `choice`: in no pair), as it reads them."""
    papers = read_papers(REPO / "data/processed/papers.parquet")
    split = pd.read_parquet(REPO / "data/pairs/split.parquet")
    test = set(split.loc[split["split"] == "test", "paper_id"])
    pools = {"val": set(papers["paper_id"]) - test, "test": set(papers["paper_id"])}
    choosing = split[split["choice"] | (split["split"] != "val")] if "choice" in split else split
    found = {part: listing_sets(papers, choosing, part, max_group_size, pool, prefix=part)
             for part, pool in pools.items()}
    return {name: found[part][key] for name, (part, key) in SETS.items() if key in found[part]}


def search_scores(encoders: dict[str, str], max_group_size: int) -> dict[str, dict[str, np.ndarray]]:
    """Search quality as evaluate reads it, each encoder's dense ranking alone and fused with BM25 as search
    serves (z-score convex 0.5): per-query nDCG@10 on Cranfield (a development set: the fusion rule was chosen
    on it) and on the test split (held-out titles asking for their own abstracts). set -> row -> (n_queries,)."""
    from similar_views import WORK as VIEWS_WORK

    papers = read_papers(REPO / "data/processed/papers.parquet")
    split = pd.read_parquet(REPO / "data/pairs/split.parquet")
    sets = {"cranfield": load_beir_set(REPO / "data/raw/beir/cranfield"),
            "test split": held_out_set(papers, split, max_group_size, 2000, 200_000)}
    served = Fusion("convex", 0.5, "zscore", depth=100)
    out = {}
    for name, task in sets.items():
        lexical = lexical_hits(BM25(task.doc_ids, task.doc_texts, "english"), task.query_ids, task.query_texts, 100)
        rows = {}
        for enc, folder in encoders.items():
            embed = cached_embedder(folder, "auto", 128, 32, VIEWS_WORK / "cache")  # search reads 128 tokens
            dense = dense_hits(task.doc_ids, embed(task.doc_texts), task.query_ids, embed(task.query_texts), 100)
            fused = fuse_rankings(lexical, dense, served)
            rows[enc] = np.array([ndcg_at_k(dense[q][0], task.qrels[q], 10) for q in task.query_ids])
            rows[f"{enc} + bm25"] = np.array([ndcg_at_k(fused[q], task.qrels[q], 10) for q in task.query_ids])
        out[name] = rows
    return out


def cost(name: str, folder: str) -> str:
    """How long the encoder took to make: train wall time, or the merge's."""
    if name == "base":
        return ""
    if name == "shipped":
        timings = REPO / "reports/train.timings.json"  # the main command's own run
        return f"{json.loads(timings.read_text())['train_runtime_s']:.0f} s" if timings.is_file() else "main command"
    report = json.loads((Path(folder).parent / "train.json").read_text())
    if "merge_s" in report:
        return f"merge {report['merge_s']:.0f} s"
    return f"{report['wall_s']:.0f} s" + (f" + teacher {report['teacher_s']:.0f} s" if "teacher_s" in report else "")


def main() -> None:
    from similar_views import VIEWS, score_task

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    names = [*RECIPES, *MERGES, *DISTILS, *DISTIL_MERGES]
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
                             merged(name, REPO / "models/encoder", MERGES[name]) if name in MERGES else
                             distilled(name, cfg) if name in DISTILS else
                             merged(name, distilled(DISTIL_MERGES[name][0], cfg), DISTIL_MERGES[name][1])
                             if name in DISTIL_MERGES else trained(name, train, val, cfg, groups))
        print(f"{name}: {encoders[name]} ({cost(name, encoders[name])})", flush=True)
    sets = listing_tasks(cfg.max_group_size)
    views = {"256": VIEWS["256"]}
    results = {name: score_task(task, encoders, views, lexical=("paper",)) for name, task in sets.items()}
    clusters = {name: listing_clusters(task, task.query_ids) for name, task in sets.items()}
    search = search_scores(encoders, cfg.max_group_size)

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
        print("\nsearch: nDCG@10, dense alone / fused with BM25 as search serves (z-score convex 0.5), minus base's "
              "(95% CI by query); Cranfield is a development set\n")
        print("| recipe | cranfield dense | cranfield fused | test split dense | test split fused |")
        print("|---|---|---|---|---|")
        for name in encoders:
            cells = []
            for s in search:
                for row, against in ((name, "base"), (f"{name} + bm25", "base + bm25")):
                    mean = search[s][row].mean()
                    if name == "base":
                        cells.append(f"{mean:.3f}")
                        continue
                    d = paired_difference(search[s][row], search[s][against])
                    cells.append(f"{mean:.3f} ({d.mean:+.3f}, {d.low:+.3f} to {d.high:+.3f})")
            print(f"| {name} | " + " | ".join(cells) + " |")
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
            candidates = [n for n in encoders if n != "base"]
            blocks = {b: {("base" if n == "base" else n): results[s][f"{n}@256{SERVED}"] for n in encoders}
                      for b, s in (("known", "val known"), ("unseen", "val unseen"))}
            chosen, reason, _ = choose_encoder(candidates, blocks, {"known": clusters["val known"],
                                                                   "unseen": clusters["val unseen"]},
                                               cfg.similar_choice())
            print(f"\nthe train stage's rule (papersim.training.similar_choice.choose_encoder) over these "
                  f"{len(candidates)} candidates at once: {chosen}\n\n> {reason}")


if __name__ == "__main__":
    main()
