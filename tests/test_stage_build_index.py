"""The build_index stage: a searchable index, extended with new papers only, never half-written."""

import json

import pandas as pd

from stages.build_index import main
from tests.conftest import papers_frame


def args(ws, *extra):
    return ["--params", str(ws / "params.yaml"), "--papers", str(ws / "data/processed/papers.parquet"),
            "--pairs", str(ws / "data/pairs"), "--model", str(ws / "models/encoder"),
            "--serving", str(ws / "models/serving.json"), "--embedding-cache", str(ws / "cache"),
            "--out", str(ws / "artifacts/index"),
            "--report", str(ws / "reports/build_index.json"), *extra]


def test_builds_then_extends_with_exactly_the_new_papers(workspace, tracking):
    assert main(args(workspace)) == 0
    first = json.loads((workspace / "reports/build_index.json").read_text())
    ran = json.loads((workspace / "reports/build_index.timings.json").read_text())  # run facts: not in the report
    assert (first["mode"], first["factory"], first["papers"], ran["papers_encoded"]) == ("full", "Flat", 24, 24)
    assert "papers_encoded" not in first and "queries_per_second" in ran and "queries_per_second" not in first
    assert first["recall@10"] == 1.0 and first["recall_queries"] == 6 and first["memory_bytes"] > 0
    index = workspace / "artifacts/index"
    assert {p.name for p in index.iterdir()} == {"index.faiss", "ids.parquet", "index.json", "bm25", "papers.parquet"}
    details = pd.read_parquet(index / "papers.parquet")
    assert details["paper_id"].tolist() == pd.read_parquet(index / "ids.parquet")["paper_id"].tolist()
    source = pd.read_parquet(workspace / "data/processed/papers.parquet").set_index("paper_id")
    assert details["abstract"].tolist() == source.loc[details["paper_id"], "abstract"].tolist()
    assert first["serving"]["encoder"] == "trained" and first["serving"]["fusion"]["alpha"] == 0.5

    papers = pd.concat([papers_frame(24), papers_frame(2, start=24)], ignore_index=True)
    papers.to_parquet(workspace / "data/processed/papers.parquet", index=False)
    assert main(args(workspace)) == 0
    second = json.loads((workspace / "reports/build_index.json").read_text())
    ran = json.loads((workspace / "reports/build_index.timings.json").read_text())
    assert (second["mode"], second["papers"], second["papers_added"], ran["papers_encoded"]) == \
        ("incremental", 26, 2, 2)
    assert pd.read_parquet(index / "ids.parquet")["paper_id"].tolist()[-2:] == ["p24", "p25"]
    assert pd.read_parquet(index / "papers.parquet")["paper_id"].tolist()[-2:] == ["p24", "p25"]


def test_the_base_encoder_is_indexed_when_it_serves(workspace, tracking, tiny_model_dir):
    from papersim.encoders.encode import model_fingerprint

    serving = json.loads((workspace / "models/serving.json").read_text())
    similar = {**serving["similar"], "encoder": "base"}
    (workspace / "models/serving.json").write_text(json.dumps({**serving, "encoder": "base", "similar": similar}))
    (workspace / "models/encoder/model.safetensors").write_bytes(b"not the served weights")
    assert main(args(workspace)) == 0
    info = json.loads((workspace / "artifacts/index/index.json").read_text())
    assert info["serving"]["encoder"] == "base" and info["model_fingerprint"] == model_fingerprint(str(tiny_model_dir))
    assert not (workspace / "artifacts/index/similar.faiss").exists()  # papers answered from the same vectors


def test_papers_get_an_index_of_their_own_when_another_encoder_answers_them(workspace, tracking, tiny_model_dir):
    import numpy as np

    from papersim.encoders.encode import load_text_encoder
    from papersim.encoders.load import save_tiny_encoder
    from papersim.retrieval.passage import passage_text
    from papersim.retrieval.search import load_search_index, similar_papers

    serving = json.loads((workspace / "models/serving.json").read_text())
    other = save_tiny_encoder(workspace / "other", seed=7)  # another "base" model: other weights, other vectors
    (workspace / "models/serving.json").write_text(json.dumps(
        {**serving, "base_model": str(other), "similar": {**serving["similar"], "encoder": "base"}}))
    assert main(args(workspace)) == 0
    info = json.loads((workspace / "artifacts/index/index.json").read_text())
    assert info["similar"]["encoder"] == "base" and info["similar_index"] == "Flat" and info["similar_recall@10"] == 1.0
    si = load_search_index(workspace / "artifacts/index")
    papers = pd.read_parquet(workspace / "data/processed/papers.parquet")
    row = si.row_of["p3"]
    expected = load_text_encoder(str(other), "torch", 32).encode([passage_text(*papers.loc[3, ["title", "abstract"]])])
    assert np.allclose(si.similar_index.reconstruct(row), expected[0], atol=1e-4)
    assert not np.allclose(si.index.reconstruct(row), expected[0], atol=1e-2)  # the query encoder's: another
    assert "p3" not in set(similar_papers(si, "p3", 5)["paper_id"])


def test_a_merged_similar_encoder_is_read_from_beside_the_trained_one(workspace, tracking, tiny_model_dir):
    import numpy as np

    from papersim.encoders.encode import load_text_encoder, model_fingerprint
    from papersim.encoders.load import load_encoder, save_tiny_encoder
    from papersim.retrieval.passage import passage_text
    from papersim.retrieval.search import load_search_index
    from papersim.training.merge import merge_weights

    serving = json.loads((workspace / "models/serving.json").read_text())
    other = load_encoder(str(save_tiny_encoder(workspace / "other", seed=7)))  # the "trained" one: other weights
    merged = workspace / "models/similar_encoder"  # as the train stage writes a chosen merge
    merge_weights(load_encoder(str(tiny_model_dir)), other, 0.5).save(str(merged))
    similar = {**serving["similar"], "encoder": "merged", "merge_weight": 0.5}
    (workspace / "models/serving.json").write_text(json.dumps({**serving, "encoder": "base", "similar": similar}))
    assert main(args(workspace)) == 0
    info = json.loads((workspace / "artifacts/index/index.json").read_text())
    assert info["similar"]["merge_weight"] == 0.5 and info["similar_model_fingerprint"] == model_fingerprint(str(merged))
    assert info["model_fingerprint"] == model_fingerprint(str(tiny_model_dir))  # search: the base model's
    si = load_search_index(workspace / "artifacts/index")
    papers = pd.read_parquet(workspace / "data/processed/papers.parquet")
    expected = load_text_encoder(str(merged), "torch", 32).encode([passage_text(*papers.loc[3, ["title", "abstract"]])])
    assert np.allclose(si.similar_index.reconstruct(si.row_of["p3"]), expected[0], atol=1e-4)
    assert "merged encoder (0.5 base + 0.5 trained)" in si.similar.describe()


def test_a_failed_build_leaves_the_previous_index(workspace, tracking, capsys):
    assert main(args(workspace)) == 0
    before = {p.name: p.read_bytes() for p in (workspace / "artifacts/index").iterdir() if p.is_file()}
    params = workspace / "params.yaml"
    params.write_text(params.read_text().replace("factory: auto", "factory: NotAnIndex"))
    assert main(args(workspace)) == 1
    assert "faiss cannot build index 'NotAnIndex'" in capsys.readouterr().err
    after = {p.name: p.read_bytes() for p in (workspace / "artifacts/index").iterdir() if p.is_file()}
    assert after == before and not list((workspace / "artifacts").glob(".*tmp*"))


def test_missing_inputs_are_clear_errors(workspace, tracking, capsys):
    assert main(args(workspace, "--papers", str(workspace / "none.parquet"))) == 1
    assert "no ingested papers; run the ingest stage first" in capsys.readouterr().err
