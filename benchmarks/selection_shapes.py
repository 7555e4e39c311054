"""Does the serving choice pick what the judgments favour? Cranfield made into the shapes users bring.

    .venv/bin/python benchmarks/selection_shapes.py [--shapes titled untitled ...] [--learning-rate 1e-3 --steps 10]

Per shape, as a new user's corpus would go through the pipeline: the shape's papers are mined into
pairs (mine_pairs' params, the seeded split), the base model is trained on them (train's params: the
shipped CPU profile unless overridden), and the train stage's own choice (`choose_serving`) picks the
search encoder and fusion on the validation papers. Then Cranfield's 225 judged queries score bm25,
base, trained, base_hybrid (RRF) and served on the shape's corpus, and the table says what the choice
picked, on which evidence, and whether the judgments agree. Trained encoders are kept in
benchmarks/.work/shapes (keyed by shape, params and data), so re-running after a change to the
selection re-trains nothing. Shapes (papersim.evaluation.shapes): titled (Cranfield as shipped),
untitled (the abstracts alone), title_only (the titles alone), one_sentence (every sentence its own
document; a query is relevant to each sentence of a relevant abstract).
Cranfield's judgments here choose the selection *method* (a development set); no number in params is
set from them.
"""

import argparse
import hashlib
import json
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from papersim.config import build_config, read_params  # noqa: E402
from papersim.encoders.cache import cached_embedder  # noqa: E402
from papersim.encoders.load import load_encoder  # noqa: E402
from papersim.env import apply_offline_defaults  # noqa: E402
from papersim.evaluation.evaluate import EvaluateConfig, evaluate_set  # noqa: E402
from papersim.evaluation.sets import EvalSet  # noqa: E402
from papersim.evaluation.shapes import SHAPES, read_beir_papers, reshape  # noqa: E402
from papersim.evaluation.significance import paired_difference  # noqa: E402
from papersim.retrieval.passage import passage_text  # noqa: E402
from papersim.training.pairs import MinePairsConfig, mine_pairs  # noqa: E402
from papersim.training.selection import FAMILIES, choose_serving, pseudo_queries, select_serving  # noqa: E402
from papersim.training.train import TrainConfig, train_encoder  # noqa: E402
from record import record  # noqa: E402

CRANFIELD = REPO / "data/raw/beir/cranfield"
WORK = REPO / "benchmarks/.work"
TRAINING_FIELDS = ("base_model", "loss", "matryoshka_dims", "mini_batch_size", "max_seq_length", "batch_size",
                   "num_negatives", "learning_rate", "warmup_ratio", "weight_decay", "max_steps", "eval_steps",
                   "save_steps", "early_stopping_patience", "seed", "precision", "max_group_size")  # the weights' own


def trained_encoder(name: str, papers: pd.DataFrame, mine: MinePairsConfig, cfg: TrainConfig) -> tuple[Path, dict]:
    """The shape's trained encoder folder (trained once per shape, params and data) and its pairs report."""
    trains = {k: v for k, v in asdict(cfg).items() if k in TRAINING_FIELDS}
    key = hashlib.sha256(json.dumps([name, asdict(mine), trains, papers["content_hash"].tolist()],
                                    sort_keys=True, default=str).encode()).hexdigest()[:12]
    folder = WORK / "shapes" / f"{name}-{key}"
    result = mine_pairs(papers, mine, None)
    if not (folder / "encoder" / "modules.json").is_file():
        model = load_encoder(cfg.base_model, cfg.max_seq_length)
        start = time.perf_counter()
        _, report = train_encoder(model, result.train, result.val, cfg, folder / "checkpoints", key)
        model.save(str(folder / "encoder"))
        report["wall_s"] = round(time.perf_counter() - start, 1)
        (folder / "train.json").write_text(json.dumps(report, indent=1, default=str))
    return folder / "encoder", {**result.report, "split": result.split}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--shapes", nargs="+", default=list(SHAPES), choices=SHAPES)
    parser.add_argument("--learning-rate", type=float, help="override train.learning_rate (e.g. a destructive 1e-3)")
    parser.add_argument("--steps", type=int, help="override train.max_steps (eval and save steps follow)")
    parser.add_argument("--json", help="also write the rows here")
    args = parser.parse_args()
    apply_offline_defaults()
    print("command: .venv/bin/python benchmarks/selection_shapes.py " + " ".join(sys.argv[1:]), flush=True)
    params = read_params(REPO / "params.yaml")
    mine = replace(build_config(MinePairsConfig, params["mine_pairs"], "params.yaml: mine_pairs"),
                   num_negatives=0, miners=["bm25"])  # train reads no mined negatives (train.num_negatives: 0)
    cfg = build_config(TrainConfig, params["train"], "params.yaml: train")
    if args.learning_rate is not None:
        cfg = replace(cfg, learning_rate=args.learning_rate)
    if args.steps is not None:
        cfg = replace(cfg, max_steps=args.steps, eval_steps=args.steps, save_steps=args.steps)
    ecfg = build_config(EvaluateConfig, params["evaluate"], "params.yaml: evaluate")
    ecfg = replace(ecfg, systems=["bm25", "base", "trained", "base_hybrid", "served"])
    papers, queries, qrels = read_beir_papers(CRANFIELD)
    cache = WORK / "embeddings"
    rows = []
    for name in args.shapes:
        docs, judged = reshape(papers, qrels, name)
        folder, pairs = trained_encoder(name, docs, mine, cfg)
        embed = {"trained": cached_embedder(str(folder), cfg.backend, cfg.max_seq_length, cfg.encode_batch_size,
                                            cache, cfg),
                 "base": cached_embedder(cfg.base_model, cfg.backend, cfg.max_seq_length, cfg.encode_batch_size,
                                         cache, cfg)}
        start = time.perf_counter()
        serving = choose_serving(docs, pairs["split"], embed, cfg, pairs.get("pairs", {}).get("train", {}))
        choose_s = time.perf_counter() - start
        qids = [q for q in queries if judged.get(q)]
        eval_set = EvalSet(name=name, doc_ids=docs["paper_id"].tolist(),
                           doc_texts=[passage_text(t, a) for t, a in zip(docs["title"], docs["abstract"])],
                           query_ids=qids, query_texts=[queries[q] for q in qids],
                           qrels={q: judged[q] for q in qids}, content_hash=name)
        result = evaluate_set(eval_set, {**embed, "served": embed[serving.encoder]}, ecfg, serving.fusion)
        # What pseudo-queries would have said, were they evidence: every family (the former rule), and the
        # family the shape's pairs taught least (sentence queries of a title-trained model).
        split = pairs["split"]
        val = set(split.loc[split["split"] == "val", "paper_id"])
        pool = docs[~docs["paper_id"].isin(set(split.loc[split["split"] == "test", "paper_id"]))]
        said = {}
        for families in (FAMILIES, ("sentence",)):
            pq = pseudo_queries(pool, val, cfg.seed, cfg.selection_queries, cfg.selection_docs, families)
            would = select_serving([pq.to_set()], "pseudo-queries", embed, cfg.serving_fusion(), False, True, 0.0,
                                   cfg.stemmer, "")
            said["+".join(families)] = {**would.evidence.get("trained_minus_base", {}), "kinds": pq.kinds}
        ndcg = {s: v["ndcg@10"] for s, v in result.scores.items()}
        gain = paired_difference(result.per_query["trained"]["ndcg@10"], result.per_query["base"]["ndcg@10"])
        best = max(("bm25", "base", "base_hybrid"), key=ndcg.get)
        favoured = "trained" if gain.mean > 0.01 else "base" if gain.mean < -0.01 else "tie"
        rows.append({"shape": name, "docs": len(docs), "queries": len(qids), "train_pairs": pairs["pairs"]["train"],
                     **ndcg, "best_baseline": best, "served_minus_best": ndcg["served"] - ndcg[best],
                     "trained_minus_base": [round(gain.mean, 4), round(gain.low, 4), round(gain.high, 4)],
                     "judgments_favour": favoured, "chosen_encoder": serving.encoder,
                     "agrees": favoured in ("tie", serving.encoder), "fusion": serving.fusion.describe(),
                     "reason": serving.reason, "evidence": serving.evidence, "choose_s": round(choose_s, 1),
                     "pseudo_queries_say": said})
        print(json.dumps(rows[-1], default=str), flush=True)
    with record("selection_shapes"):
        print(f"\nCranfield's judged queries, nDCG@10; train: {cfg.loss}, lr {cfg.learning_rate:g}, {cfg.max_steps} "
              "steps (params.yaml unless overridden)\n")
        print("| shape | docs | train pairs | bm25 | base | trained | base_hybrid | **served** "
              "| served - best baseline | trained - base (95% CI) | judgments favour | chosen | fusion |")
        print("|---|---:|---|---:|---:|---:|---:|---:|---:|---|---|---|---|")
        for r in rows:
            tb = r["trained_minus_base"]
            kinds = ", ".join(f"{k} {v}" for k, v in r["train_pairs"].items() if k != "total")
            print(f"| {r['shape']} | {r['docs']} | {kinds} | {r['bm25']:.4f} | {r['base']:.4f} | {r['trained']:.4f} | "
                  f"{r['base_hybrid']:.4f} | **{r['served']:.4f}** | {r['served_minus_best']:+.4f} | "
                  f"{tb[0]:+.4f} ({tb[1]:+.3f} to {tb[2]:+.3f}) | {r['judgments_favour']} | {r['chosen_encoder']} | "
                  f"{r['fusion']} |")
        print("\nWhat validation pseudo-queries say, trained - base dense nDCG@10 (95% CI), were they evidence:\n")
        print("| shape | title + sentence queries (the former rule) | sentence queries only |")
        print("|---|---|---|")
        for r in rows:
            cells = [f"{v['mean']:+.4f} ({v['ci95'][0]:+.3f} to {v['ci95'][1]:+.3f}; {v['n']} queries)" if "mean" in v
                     else "no query" for v in r["pseudo_queries_say"].values()]
            print(f"| {r['shape']} | " + " | ".join(cells) + " |")
        for r in rows:
            print(f"\n{r['shape']}: {r['reason']}")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1, default=str))


if __name__ == "__main__":
    main()
