"""Fusion rules across corpus shapes: what `served` gains over BM25, the base model and plain RRF.

    .venv/bin/python benchmarks/fusion.py [--backend openvino]

The one judged collection in the repository is Cranfield, so its shapes are made from it: the
same 225 judged queries over (1) titled abstracts as shipped, (2) the abstracts without titles,
(3) the titles alone (title-only records), (4) each abstract's first sentence alone (one-sentence
untitled documents). Per shape, side by side in one run, nDCG@10 of:
  - baselines: bm25, base (the packaged all-MiniLM-L6-v2, dense), rrf (RRF k=60 of the two: the
    plain fusion a user builds without papersim);
  - fixed convex fusions: alpha 0.5 with z-score or min-max normalised scores (and 0.3 / 0.7 with
    z-scores, to show how sensitive the result is to the weight);
  - auto: alpha chosen per shape on pseudo-queries by the rule the train stage applies to judged queries
    (papersim.training.selection.choose_weight: picked on half the queries, kept only if it beats 0.5
    on the other half beyond noise; 10% of the shape's papers, picked by the seeded split, ask for
    themselves), with z-score or min-max normalisation. The train stage never uses pseudo-queries for
    the weight: these rows show why.
The judgments only score the rules; nothing is tuned on them beyond choosing among these rules.
"""

import argparse
import json
import re
import sys
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from papersim.encoders.cache import encode_cached  # noqa: E402
from papersim.encoders.encode import load_text_encoder  # noqa: E402
from papersim.env import apply_offline_defaults  # noqa: E402
from papersim.evaluation.metrics import score_rankings  # noqa: E402
from papersim.retrieval.dense import dense_hits  # noqa: E402
from papersim.retrieval.fusion import Fusion, fuse_rankings  # noqa: E402
from papersim.retrieval.lexical import BM25, lexical_hits  # noqa: E402
from papersim.retrieval.passage import passage_text  # noqa: E402
from papersim.training.pairs import MinePairsConfig, assign_splits  # noqa: E402
from papersim.training.selection import pseudo_queries, select_serving  # noqa: E402
from record import record  # noqa: E402

CRANFIELD = REPO / "data/raw/beir/cranfield"
SENTENCE = re.compile(r"(?<=[.!?])\s+")


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def shapes() -> dict[str, pd.DataFrame]:
    """paper_id, title, abstract per shape (documents with nothing left are dropped, as ingest would)."""
    docs = [d for d in read_jsonl(CRANFIELD / "corpus.jsonl") if (d.get("text") or "").strip()]
    frame = pd.DataFrame({"paper_id": [str(d["_id"]) for d in docs], "title": [d.get("title", "") for d in docs],
                          "abstract": [d["text"] for d in docs]})
    first = frame["abstract"].map(lambda text: SENTENCE.split(text.strip())[0])
    return {
        "titled abstracts": frame,
        "untitled abstracts": frame.assign(title=""),
        "title-only records": frame.assign(abstract=frame["title"], title="").query("abstract.str.strip() != ''"),
        "one-sentence documents": frame.assign(abstract=first, title=""),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backend", default="openvino")
    parser.add_argument("--max-seq-length", type=int, default=128, help="tokens per text (the shipped 128, or 256)")
    parser.add_argument("--cache", default=str(REPO / "benchmarks/.work/embeddings"))
    args = parser.parse_args()
    apply_offline_defaults()
    print("command: .venv/bin/python benchmarks/fusion.py " + " ".join(sys.argv[1:]))
    encoder = load_text_encoder("", args.backend, max_seq_length=args.max_seq_length, batch_size=32)
    embed = lambda texts: encode_cached(encoder, texts, Path(args.cache)).vectors  # noqa: E731
    queries = read_jsonl(CRANFIELD / "queries.jsonl")
    qrels: dict[str, dict[str, int]] = {}
    for line in (CRANFIELD / "qrels/test.tsv").read_text().splitlines()[1:]:
        q, d, r = line.split("\t")
        qrels.setdefault(q, {})[d] = int(r)
    queries = [q for q in queries if str(q["_id"]) in qrels]
    qids, qtexts = [str(q["_id"]) for q in queries], [q["text"] for q in queries]
    qvectors = embed(qtexts)
    rules = ["bm25", "base", "rrf", "convex 0.5 zscore", "convex 0.5 minmax", "convex 0.3 zscore",
             "convex 0.7 zscore", "auto zscore", "auto minmax"]
    rows = []
    for shape, papers in shapes().items():
        ids = papers["paper_id"].tolist()
        texts = [passage_text(t, a) for t, a in zip(papers["title"], papers["abstract"])]
        bm25 = BM25(ids, texts)
        lexical = lexical_hits(bm25, qids, qtexts, 100)
        dense = dense_hits(ids, embed(texts), qids, qvectors, 100)
        judged = {q: {d: r for d, r in qrels[q].items() if d in set(ids)} for q in qids}
        runs = {"bm25": {q: h[0] for q, h in lexical.items()}, "base": {q: h[0] for q, h in dense.items()},
                "rrf": fuse_rankings(lexical, dense, Fusion(method="rrf")),
                "convex 0.5 zscore": fuse_rankings(lexical, dense, Fusion(alpha=0.5, normalisation="zscore")),
                "convex 0.5 minmax": fuse_rankings(lexical, dense, Fusion(alpha=0.5, normalisation="minmax")),
                "convex 0.3 zscore": fuse_rankings(lexical, dense, Fusion(alpha=0.3, normalisation="zscore")),
                "convex 0.7 zscore": fuse_rankings(lexical, dense, Fusion(alpha=0.7, normalisation="zscore"))}
        split = assign_splits(ids, MinePairsConfig())
        asking = {pid for pid, s in zip(ids, split) if s == "val"}
        pq = pseudo_queries(papers, asking, 13, 500, 20_000)
        alphas = {}
        for how in ("zscore", "minmax"):
            # Passed as if judged, so that choose_weight runs on them: the train stage never does this.
            chosen = select_serving([pq.to_set()], "judged", {"trained": embed}, Fusion(normalisation=how), True,
                                    False, 0.0, "english", "")
            alphas[how] = chosen.fusion.alpha
            runs[f"auto {how}"] = fuse_rankings(lexical, dense, chosen.fusion)
        scores = {rule: score_rankings(runs[rule], judged).metrics["ndcg@10"] for rule in rules}
        rows.append({"shape": shape, "docs": len(ids), "pseudo_queries": len(pq.query_ids), **scores,
                     "alpha zscore": alphas["zscore"], "alpha minmax": alphas["minmax"]})
    table = pd.DataFrame(rows)
    with record("fusion"):
        print(f"\nCranfield's {len(qids)} judged queries, nDCG@10 (base = packaged all-MiniLM-L6-v2, "
              f"{encoder.backend}, {args.max_seq_length} tokens)\n")
        print("| shape | docs | " + " | ".join(rules) + " | auto alpha (zscore / minmax) |")
        print("|---|---:|" + "---:|" * len(rules) + "---|")
        for r in rows:
            best = max(r[rule] for rule in ("bm25", "base", "rrf"))
            cells = [f"**{r[rule]:.4f}**" if r[rule] >= best and rule not in ("bm25", "base", "rrf")
                     else f"{r[rule]:.4f}" for rule in rules]
            print(f"| {r['shape']} | {r['docs']} | " + " | ".join(cells)
                  + f" | {r['alpha zscore']:g} / {r['alpha minmax']:g} |")
        means = table[rules].mean()
        print("| **mean** | | " + " | ".join(f"{means[rule]:.4f}" for rule in rules) + " | |")
        print("\nbold: at least the best baseline (bm25, base, rrf) of that shape")
        for rule in rules[3:]:
            floor = int(sum(r[rule] >= max(r["bm25"], r["base"], r["rrf"]) for r in rows))
            print(f"{rule}: mean - rrf mean = {means[rule] - means['rrf']:+.4f}; "
                  f">= best baseline on {floor}/{len(rows)} shapes")
    print(json.dumps({rule: round(float(means[rule]), 4) for rule in rules}))


if __name__ == "__main__":
    main()
