"""`papersim search` and `papersim similar` on an index built by the stage."""

import json

import pytest

from papersim.cli import main as cli
from papersim.errors import PapersimError
from papersim.retrieval.search import (
    check_request,
    load_search_index,
    search_text,
    similar_papers,
)


def search(ws, *argv):
    return cli([*argv, "--index", str(ws / "artifacts/index"), "--model", str(ws / "models/encoder")])


def test_search_modes_and_json(built, capsys):
    assert search(built, "search", "supersonic wing flutter", "-k", "3", "--json") == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["rank"] for r in rows] == [1, 2, 3] and set(rows[0]) == {
        "rank", "score", "paper_id", "title", "authors", "date", "url", "venue", "categories", "why"}
    assert all("flutter" in r["why"] for r in rows)  # the query's word behind each match
    assert all("flutter" in r["title"] for r in rows)  # both systems put the flutter papers first
    assert search(built, "search", "supersonic wing flutter", "--mode", "bm25", "-k", "4", "--json") == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert all("flutter" in r["title"] for r in rows)  # every match on the rare words is a flutter paper
    assert search(built, "search", "message passing in graph neural networks", "--mode", "dense", "-k", "5") == 0
    lines = capsys.readouterr().out.splitlines()
    table = [line.split(maxsplit=2) for line in lines if not line.startswith(" " * 13)]  # rank., score, title
    assert [int(rank.rstrip(".")) for rank, *_ in table] == [1, 2, 3, 4, 5]
    assert [float(score) for _, score, *_ in table] == sorted((float(score) for _, score, *_ in table), reverse=True)
    assert all(title.startswith("A study of message passing in graph neural networks") for *_, title in table)
    assert sum(line.strip().startswith("id: ") for line in lines) == 5  # each paper's id under its title


def test_served_search_is_the_fusion_evaluate_measures(built):
    import pandas as pd

    from papersim.encoders.encode import load_text_encoder
    from papersim.retrieval.dense import dense_hits
    from papersim.retrieval.fusion import fuse_rankings
    from papersim.retrieval.lexical import BM25, lexical_hits
    from papersim.retrieval.passage import passage_text

    si = load_search_index(built / "artifacts/index")
    encoder = load_text_encoder(str(built / "models/encoder"), "torch", 32)
    si.embed = encoder.encode
    assert si.fusion.method == "convex" and si.fusion.alpha == 0.5  # as models/serving.json chose
    query = "message passing for wing flutter"
    served = search_text(si, query, 10)["paper_id"].tolist()
    # What evaluate computes for `served` on the same corpus: both systems' hits, fused.
    papers = pd.read_parquet(built / "data/processed/papers.parquet")
    ids, texts = papers["paper_id"].tolist(), [passage_text(t, a) for t, a in zip(papers["title"], papers["abstract"])]
    lexical = lexical_hits(BM25(ids, texts), ["q"], [query], 100)
    dense = dense_hits(ids, encoder.encode(texts), ["q"], encoder.encode([query]), 100)
    assert served == fuse_rankings(lexical, dense, si.fusion)["q"][:10]
    hybrid = search_text(si, query, 10, "hybrid")["paper_id"].tolist()
    assert hybrid != served or si.fusion.method == "rrf"  # hybrid is plain RRF, not the served fusion


def test_similar_returns_the_papers_on_the_same_topic_without_the_paper_itself(built, capsys):
    assert search(built, "similar", "p0", "-k", "5", "--json") == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    # p0's topic (wing flutter) is every fourth paper's: the other five are its nearest, itself excluded
    assert {r["paper_id"] for r in rows} == {"p4", "p8", "p12", "p16", "p20"}
    assert [r["rank"] for r in rows] == [1, 2, 3, 4, 5]
    scores = [r["score"] for r in rows]
    assert scores == sorted(scores, reverse=True)


@pytest.mark.parametrize("argv, message", [
    (["search", "   "], "empty query"),
    (["search", "flutter", "-k", "0"], "k must be between 1 and 100, got 0"),
    (["search", "flutter", "-k", "101"], "k must be between 1 and 100, got 101"),
    (["similar", "p999"], "unknown paper id 'p999'"),
])
def test_bad_requests_are_one_line_errors(built, capsys, argv, message):
    assert search(built, *argv) == 1
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


def test_missing_index_tells_the_user_to_run_the_pipeline(tmp_path, capsys):
    assert cli(["search", "flutter", "--index", str(tmp_path / "none")]) == 1
    assert "run the pipeline first" in capsys.readouterr().err


def test_index_from_another_model_is_refused(built, tiny_model_dir, capsys):
    weights = built / "models/encoder/model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-1] + bytes([weights.read_bytes()[-1] ^ 1]))
    assert search(built, "search", "flutter", "--mode", "dense") == 1
    assert "rebuild it" in capsys.readouterr().err


def test_library_checks_requests_and_finds_the_paper_by_its_title(built):
    from papersim.encoders.encode import load_text_encoder

    si = load_search_index(built / "artifacts/index")
    si.embed = load_text_encoder(str(built / "models/encoder"), "torch", 32).encode
    assert search_text(si, "A study of wing flutter at supersonic speed, part 12", 3, "bm25")["paper_id"][0] == "p12"
    assert search_text(si, "A study of wing flutter at supersonic speed, part 12", 3)["paper_id"][0] == "p12"
    # p1's neighbours are papers on its topic (heat transfer: every fourth paper from p1)
    assert set(similar_papers(si, "p1", 2)["paper_id"]) <= {"p5", "p9", "p13", "p17", "p21"}
    with pytest.raises(PapersimError, match="unknown mode"):
        check_request(5, "sparse")
    with pytest.raises(PapersimError, match="query too long"):
        check_request(5, "dense", "x" * 10_001)


def test_served_similar_is_what_evaluate_measures_and_never_lists_the_paper_or_its_copy(built):
    import pandas as pd

    from papersim.encoders.encode import load_text_encoder
    from papersim.evaluation.evaluate import EvaluateConfig, evaluate_similar
    from papersim.evaluation.sets import colisting_set
    from papersim.retrieval.similar import Similar

    si = load_search_index(built / "artifacts/index")
    assert si.similar == Similar.from_dict(json.loads((built / "models/serving.json").read_text())["similar"])
    served = similar_papers(si, "p0", 10)
    assert "p0" not in set(served["paper_id"]) and served["rank"].tolist() == list(range(1, 11))
    # evaluate's `served` on the same corpus ranks p0's neighbours the same way (one implementation)
    papers = pd.read_parquet(built / "data/processed/papers.parquet")
    task = colisting_set(papers, {"p0"}, set(papers["paper_id"]), 100, "similar")
    encoder = load_text_encoder(str(built / "models/encoder"), "torch", 32)
    result = evaluate_similar(task, {"served_similar": encoder.encode}, EvaluateConfig(beir_sets=[], depth=100),
                              si.similar)
    expected = [task.doc_ids[i] for i in result_rankings(task, si, encoder)][:10]
    assert served["paper_id"].tolist() == expected
    assert result.scores["served"]["precision@10"] == pytest.approx(
        sum(pid in task.qrels["p0"] for pid in expected) / 10)


def result_rankings(task, si, encoder):
    """The served similar ranking of task's first query, computed from the library pieces evaluate uses."""
    from papersim.retrieval.dense import dense_search
    from papersim.retrieval.lexical import BM25
    from papersim.retrieval.similar import answer_similar, duplicates, excluded_rows

    row = task.doc_ids.index(task.query_ids[0])
    vectors = encoder.encode(task.doc_texts)
    found, scores = dense_search(vectors, vectors[[row]], 101)
    exclude = excluded_rows([row], duplicates(task.doc_hashes))
    bm25 = BM25(task.doc_ids, task.doc_texts)
    return answer_similar(bm25, [task.query_texts[0]], [(found[0].tolist(), scores[0].tolist())], exclude,
                          si.similar)[0][0]


def test_an_exact_duplicate_is_never_a_similar_paper(workspace, tracking):
    import pandas as pd

    from stages.build_index import main as build

    papers = pd.read_parquet(workspace / "data/processed/papers.parquet")
    copy = papers.iloc[[0]].assign(paper_id="p0-copy")  # same text and content hash under another id
    pd.concat([papers, copy], ignore_index=True).to_parquet(workspace / "data/processed/papers.parquet", index=False)
    assert build(["--params", str(workspace / "params.yaml"), "--papers",
                  str(workspace / "data/processed/papers.parquet"), "--pairs", str(workspace / "data/pairs"),
                  "--model", str(workspace / "models/encoder"), "--serving", str(workspace / "models/serving.json"),
                  "--embedding-cache", str(workspace / "cache"), "--out", str(workspace / "artifacts/index"),
                  "--report", str(workspace / "reports/build_index.json")]) == 0
    si = load_search_index(workspace / "artifacts/index")
    for pid in ("p0", "p0-copy"):
        found = set(similar_papers(si, pid, 20)["paper_id"])
        assert not found & {"p0", "p0-copy"} and {"p4", "p8"} <= found


def test_a_filtered_answer_is_the_top_k_of_the_filtered_papers(built):
    """Against brute force: the served fusion of every kept paper's exact cosine and its BM25 score."""
    import numpy as np

    from papersim.encoders.encode import load_text_encoder
    from papersim.retrieval.filters import Filter
    from papersim.retrieval.fusion import fuse

    si = load_search_index(built / "artifacts/index")
    si.embed = load_text_encoder(str(built / "models/encoder"), "torch", 32).encode
    vectors = np.stack([si.index.reconstruct(i) for i in range(si.index.ntotal)])  # (24, dim)
    dates = si.papers["date"]
    for flt in (Filter(since="2015-06"), Filter(until="2013"), Filter(groups=("cat1", "page3")),
                Filter(since="2012", until="2019-01", groups=("page0",))):
        keep = np.flatnonzero([  # decided here from the stored fields, not through the index's filter code
            (not (flt.since or flt.until) or (d is not None and d == d and
                                              (not flt.since or d[:len(flt.since)] >= flt.since) and
                                              (not flt.until or d[:len(flt.until)] <= flt.until)))
            and (not flt.groups or bool(set(flt.groups) & {*g, *c}))
            for d, g, c in zip(dates, si.papers["groups"], si.papers["categories"])])
        assert 0 < len(keep) < 24, flt
        query = "wing flutter and message passing"
        cosine = vectors[keep] @ si.embed([query])[0]
        dense = (keep[np.argsort(-cosine, kind="stable")].tolist(), np.sort(cosine)[::-1].tolist())
        scores = next(si.bm25.score_rows([query]))
        matched = [r for r in keep[np.argsort(-scores[keep], kind="stable")] if scores[r] > 0]
        lexical = (matched, [float(scores[r]) for r in matched])
        truth = [si.ids["paper_id"][r] for r in fuse(lexical, dense, si.fusion)[0][:10]]
        found = search_text(si, query, 10, "served", flt)
        assert found["paper_id"].tolist() == truth, flt
        assert len(found) == min(10, len(keep))  # the top k of the kept papers, not fewer
        assert set(search_text(si, query, 10, "bm25", flt)["paper_id"]) <= {si.ids["paper_id"][r] for r in keep}
        similar = similar_papers(si, "p4", 5, flt)
        allowed = {si.ids["paper_id"][r] for r in keep} - {"p4"}
        assert set(similar["paper_id"]) <= allowed and len(similar) == min(5, len(allowed)), flt


def test_answers_carry_the_papers_metadata_and_an_undated_paper_matches_no_date_filter(built):
    from papersim.retrieval.filters import Filter

    si = load_search_index(built / "artifacts/index")
    hits = similar_papers(si, "p0", 23)
    p8 = hits.set_index("paper_id").loc["p8"]
    assert list(p8["authors"]) == ["Author 8", "B. Coauthor"] and p8["date"] == "2018-09-18"
    assert p8["url"] == "https://example.org/papers/p8" and list(p8["categories"]) == ["cat2"]
    p5 = hits.set_index("paper_id").loc["p5"]  # a paper without metadata: empty, not missing
    assert list(p5["authors"]) == [] and p5["date"] is None and p5["url"] is None
    assert "p5" not in set(similar_papers(si, "p0", 23, Filter(since="1900"))["paper_id"])
    assert all(hits["why"].map(len) > 0) and "flutter" in hits.iloc[0]["why"]  # p0's topic words behind the top hit
    assert hits["paper_id"].tolist() == similar_papers(si, "p0", 23)["paper_id"].tolist()  # why changes no order


def test_the_cli_filters_and_lists_metadata_why_and_math_as_unicode(built, capsys):
    assert search(built, "similar", "p0", "-k", "5", "--since", "2016", "--group", "cat1", "--group", "cat2",
                  "--json") == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert rows and all(r["date"] >= "2016" and set(r["categories"]) & {"cat1", "cat2"} for r in rows)
    assert search(built, "similar", "p0", "-k", "2") == 0
    out = capsys.readouterr().out
    first = similar_papers(load_search_index(built / "artifacts/index"), "p0", 2).iloc[0]
    day = f"{int(first['date'][8:])} {'JanFebMarAprMayJunJulAugSepOctNovDec'[3 * int(first['date'][5:7]) - 3:][:3]}"
    assert f"{', '.join(first['authors'])} | {day} {first['date'][:4]} | {', '.join(first['categories'])}" in out
    assert first["url"] in out and f"why: {', '.join(first['why'])}" in out and f"id: {first['paper_id']}" in out
    assert search(built, "search", "flutter", "--until", "2019-02-30") == 1
    assert "error: until: '2019-02-30' is not a date" in capsys.readouterr().err
    assert search(built, "search", "flutter", "--since", "2099") == 0
    assert capsys.readouterr().out.strip() == "no matching papers (since 2099)"


def test_the_listing_prints_latex_as_unicode():
    from papersim.cli import listing

    text = listing([{"rank": 1, "score": 0.5, "paper_id": "x", "title": r"Bounds of $\mathcal{O}(\alpha n)$ for \textit{all}",
                     "authors": [], "date": None, "url": None, "venue": None, "categories": [], "why": []}])
    assert "α" in text and "$" not in text and "\\" not in text and "for all" in text
