"""What a candidate serves: pseudo-queries from the val split, the encoder choice and the fusion weight."""

import hashlib
import json
import re

import numpy as np
import pandas as pd
import pytest

from papersim.retrieval.choice import Serving
from papersim.retrieval.fusion import Fusion
from papersim.training.selection import FAMILIES, independent_families, pseudo_queries, select_serving
from tests.conftest import TOPICS


def bag_of_words(texts: list[str]) -> np.ndarray:
    """A real, if simple, embedder: hashed word counts, L2-normalised (lexical overlap as cosine)."""
    out = np.zeros((len(texts), 256), dtype=np.float32)
    for i, text in enumerate(texts):
        for word in text.lower().replace(".", " ").replace(",", " ").split():
            out[i, int(hashlib.md5(word.encode()).hexdigest(), 16) % 256] += 1
    return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)


def noise(texts: list[str]) -> np.ndarray:
    """An encoder that learned nothing useful: vectors unrelated to the text."""
    vectors = np.random.default_rng(len(texts)).normal(size=(len(texts), 16)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def oracle(texts: list[str]) -> np.ndarray:
    """An encoder that knows which paper a text is from: one-hot of the paper number it names first (corpus()
    names its paper in the title and in every sentence; the topics hold no digits)."""
    out = np.zeros((len(texts), 128), dtype=np.float32)
    for i, text in enumerate(texts):
        out[i, int(re.search(r"\d+", text).group()) % 128] = 1.0
    return out


def corpus(n: int = 40) -> pd.DataFrame:
    """Papers on the four TOPICS; unlike papers_frame, every third is untitled and each abstract has three
    sentences that name their paper, so a sentence pseudo-query has one right answer."""
    rows = []
    for i in range(n):
        topic = TOPICS[i % 4]
        rows.append({"paper_id": f"p{i}", "title": f"Notes on {topic} number {i}" if i % 3 else "",
                     "abstract": f"We examine {topic} in setting {i}. The apparatus {i} was calibrated twice. "
                                 f"Results for case {i} agree with theory {i * 7}."})
    return pd.DataFrame(rows)


def choose(pq, embed, fusion: Fusion = Fusion(), alpha_auto: bool = True, select: bool = True,
           source: str = "pseudo-queries", min_gain: float = 0.0):
    """select_serving on `pq`'s queries as `source` evidence, with BM25's English stemmer and the packaged base."""
    return select_serving([pq.to_set()], source, embed, fusion, alpha_auto, select, min_gain, "english", "")


def test_each_query_paper_asks_for_the_rest_of_itself_and_the_others_are_distractors():
    papers = corpus()
    pq = pseudo_queries(papers, {f"p{i}" for i in range(10)}, seed=13, max_queries=8, max_docs=30)
    assert len(pq.query_ids) == 8 and len(pq.doc_ids) == 30 and sum(pq.kinds.values()) == 8
    assert set(pq.kinds) == {"title", "sentence"}  # titled papers go both ways, untitled ones by a sentence
    for qid, query in zip(pq.query_ids, pq.query_texts):
        pid = pq.relevant[qid]
        doc = pq.doc_texts[pq.doc_ids.index(pid)]
        assert query not in doc  # the document no longer holds what asks for it
        title, abstract = papers.set_index("paper_id").loc[pid, ["title", "abstract"]]
        assert query == title and doc == abstract or query in abstract and doc.startswith(title)
    again = pseudo_queries(papers, {f"p{i}" for i in range(10)}, seed=13, max_queries=8, max_docs=30)
    assert again == pq  # seeded: the same queries every run


def test_only_the_families_training_did_not_teach_ask():
    # Training on one self-retrieval family wins the other too: neither is evidence once either was trained on.
    assert independent_families({"title_abstract": 95, "self_supervised": 5, "co_listed": 20}, 0.05) == ()
    assert independent_families({"self_supervised": 300}, 0.05) == ()
    assert independent_families({"co_listed": 300, "labelled": 20}, 0.05) == ("title", "sentence")
    assert independent_families({"co_listed": 95, "title_abstract": 3, "self_supervised": 2}, 0.05) == FAMILIES
    assert independent_families({"co_listed": 94, "title_abstract": 4, "self_supervised": 2}, 0.05) == ()
    assert independent_families(None, 0.05) == ()  # pairs unknown: nothing can be shown independent
    papers = corpus()
    asking = {f"p{i}" for i in range(20)}
    sentences = pseudo_queries(papers, asking, 13, 500, 20_000, ("sentence",))
    assert sentences.kinds == {"sentence": 20}
    titles = pseudo_queries(papers, asking, 13, 500, 20_000, ("title",))
    assert titles.kinds == {"title": 13}  # every third paper is untitled: it is a distractor only
    assert set(titles.doc_ids) == set(papers["paper_id"])
    assert pseudo_queries(papers, asking, 13, 500, 20_000, ()).query_ids == []


def test_the_trained_encoder_serves_only_when_it_beats_the_base_beyond_noise():
    pq = pseudo_queries(corpus(), {f"p{i}" for i in range(20)}, 13, 500, 20_000)
    template = Fusion(method="convex", normalisation="zscore")
    kept = choose(pq, {"trained": noise, "base": bag_of_words}, template)
    assert kept.encoder == "base" and "the base encoder serves" in kept.reason
    assert kept.evidence["base/ndcg@10"] > kept.evidence["trained/ndcg@10"]
    # An encoder that knows each pseudo-query's paper: it serves (its gain's interval is far above 0), ranks every
    # query's paper first (nDCG 1), and so does the fusion chosen for it, at a dense weight of at least 0.5.
    chosen = choose(pq, {"trained": oracle, "base": noise}, template)
    assert chosen.encoder == "trained" and chosen.evidence["trained/ndcg@10"] == pytest.approx(1.0)
    assert chosen.evidence["trained_minus_base"]["ci95"][0] > 0.5 and "(95% CI" in chosen.reason
    assert chosen.evidence["served/ndcg@10"] == pytest.approx(1.0) and chosen.evidence["bm25/ndcg@10"] < 0.99
    assert chosen.fusion.alpha >= 0.5
    # Made to serve noise (selection off), the fusion leans on the words beyond noise: a low dense weight, and
    # the served system is at least BM25 (alpha 0 is BM25's ranking) and far above the noise encoder alone.
    many = pseudo_queries(corpus(120), {f"p{i}" for i in range(80)}, 13, 500, 20_000)  # power for the weight
    off = choose(many, {"trained": noise}, template, select=False, source="judged")
    assert off.encoder == "trained" and "select_encoder is off" in off.reason
    assert off.fusion.alpha <= 0.3 and "beat the default beyond noise" in off.reason
    # The same queries as pseudo-queries are no evidence for the weight: the default stays.
    kept_weight = choose(many, {"trained": noise}, template, select=False)
    assert kept_weight.fusion.alpha == 0.5 and "no evidence for the weight" in kept_weight.reason
    assert off.evidence["served/ndcg@10"] >= off.evidence["bm25/ndcg@10"] > off.evidence["trained/ndcg@10"] + 0.3


def test_a_gain_within_noise_keeps_the_base_encoder():
    """The trained encoder knows one paper better than the base and is the base elsewhere: a real gain on
    the mean, but one query's worth, so its interval reaches 0 and the base serves."""
    pq = pseudo_queries(corpus(), {f"p{i}" for i in range(20)}, 13, 500, 20_000)
    lucky = pq.relevant[pq.query_ids[0]]

    def padded(texts):  # bag_of_words with one more dimension, unused
        return np.pad(bag_of_words(texts), ((0, 0), (0, 1)))

    def slightly_better(texts):  # as padded, but the lucky paper's texts all point along the extra dimension
        vectors = padded(texts)
        for i, text in enumerate(texts):
            if re.search(r"\d+", text).group() == lucky[1:]:
                vectors[i] = 0
                vectors[i, -1] = 1
        return vectors

    base = choose(pq, {"trained": padded, "base": padded})
    assert base.encoder == "base" and base.evidence["trained_minus_base"]["mean"] == 0
    noisy = choose(pq, {"trained": slightly_better, "base": padded})
    gain = noisy.evidence["trained_minus_base"]
    assert gain["mean"] >= 0 and gain["ci95"][0] <= 0 and noisy.encoder == "base"
    assert "not above min_gain" in noisy.reason


def test_a_fixed_alpha_or_rrf_is_kept_and_round_trips_through_json():
    pq = pseudo_queries(corpus(), {f"p{i}" for i in range(20)}, 13, 500, 20_000)
    fixed = choose(pq, {"trained": bag_of_words, "base": noise}, Fusion(alpha=0.8), alpha_auto=False)
    assert fixed.fusion == Fusion(alpha=0.8) and "alpha_ndcg@10" not in fixed.evidence
    rrf = choose(pq, {"trained": oracle, "base": noise}, Fusion(method="rrf"))
    assert rrf.fusion.method == "rrf"
    assert Serving.from_dict(rrf.to_dict()) == rrf
    assert rrf.encoder_folder("models/encoder") == "models/encoder"
    assert Serving("base", "some/base", rrf.fusion, "").encoder_folder("models/encoder") == "some/base"


def test_without_pseudo_queries_the_base_model_serves():
    papers = pd.DataFrame({"paper_id": ["a", "b"], "title": ["", ""], "abstract": ["too short", "also short"]})
    pq = pseudo_queries(papers, {"a"}, 13, 10, 10)
    assert pq.query_ids == []
    serving = choose(pq, {"trained": noise, "base": noise})
    assert serving.encoder == "base" and "no query to choose on in the pseudo-queries" in serving.reason
    # Every family taught by training (an untitled corpus trained on inverse cloze): no evidence, the base serves.
    untaught = pseudo_queries(corpus(), {f"p{i}" for i in range(20)}, 13, 500, 20_000, ())
    serving = choose(untaught, {"trained": oracle, "base": noise}, source="none")
    assert serving.encoder == "base" and serving.fusion == Fusion()
    assert "no evidence that training did not produce" in serving.reason


def test_unknown_encoder_in_a_serving_file_is_an_error():
    from papersim.errors import PapersimError

    with pytest.raises(PapersimError, match="rerun the train stage"):
        Serving.from_dict({"encoder": "mystery", "fusion": {}})


def listed_corpus(n: int = 48) -> pd.DataFrame:
    """corpus() with every paper on its topic's listing page and a content hash."""
    papers = corpus(n)
    return papers.assign(title=[f"Notes on {TOPICS[i % 4]} number {i}" for i in range(n)],
                         groups=[[f"page{i % 4}"] for i in range(n)], content_hash=[f"h{i}" for i in range(n)])


def test_serving_with_a_similar_choice_round_trips_and_names_its_folder():
    from papersim.retrieval.similar import Similar

    serving = Serving("base", "/base", Fusion(), "r", similar=Similar("trained", Fusion(alpha=0.7), 25, "why"))
    assert Serving.from_dict(json.loads(json.dumps(serving.to_dict()))) == serving
    assert serving.encoder_folder("/trained") == "/base" and serving.similar_folder("/trained") == "/trained"
    assert Serving("trained", "", Fusion(), "r").similar_folder("/t") == "/t"  # chosen before papers were
    assert "papersim.similar" in serving.tags()


def test_the_users_judged_queries_are_evidence_for_the_encoder_and_the_weight_whatever_trained(tmp_path):
    from papersim.training.selection import choose_serving
    from papersim.training.train import TrainConfig
    from tests.conftest import write_jsonl

    papers = listed_corpus(60)
    folder = tmp_path / "my_judged"
    write_jsonl(folder / "corpus.jsonl", [{"_id": p, "title": t, "text": a} for p, t, a in
                                          zip(papers["paper_id"], papers["title"], papers["abstract"])])
    write_jsonl(folder / "queries.jsonl", [{"_id": f"q{i}", "text": f"what was measured in case {i}"}
                                           for i in range(40)])
    (folder / "qrels").mkdir()
    (folder / "qrels/test.tsv").write_text("query-id\tcorpus-id\tscore\n"
                                           + "".join(f"q{i}\tp{i}\t1\n" for i in range(40)))
    split = pd.DataFrame({"paper_id": papers["paper_id"], "split": ["val" if i % 5 == 0 else "train"
                                                                    for i in range(60)]})
    cfg = TrainConfig(selection_sets=[str(folder)], fusion_alpha="auto", similar_encoder="base")
    trained_on_titles = {"title_abstract": 500}  # pseudo-queries would be no evidence: the judged set is
    serving = choose_serving(papers, split, {"trained": oracle, "base": noise}, cfg, trained_on_titles)
    assert serving.encoder == "trained" and serving.evidence["evidence"] == "judged"
    assert serving.evidence["sets"] == {"my_judged": 40} and "40 judged (my_judged 40)" in serving.reason
    assert "alpha" in serving.evidence and "on the judged queries" in serving.reason  # the weight is chosen there
    worse = choose_serving(papers, split, {"trained": noise, "base": oracle}, cfg, trained_on_titles)
    assert worse.encoder == "base" and worse.evidence["trained_minus_base"]["ci95"][1] < 0
    without = choose_serving(papers, split, {"trained": oracle, "base": noise}, TrainConfig(), trained_on_titles)
    assert without.encoder == "base" and without.evidence["evidence"] == "none"
