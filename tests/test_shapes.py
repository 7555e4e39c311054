"""Every corpus shape runs through the five stages, or its bad rows are rejected with the rule named.

One tiny corpus per shape (untitled abstracts, title-only records, one-sentence documents, very
long abstracts, documents that tokenise to nothing), ingested, mined, trained (tiny model),
evaluated on a judged set of the same shape and indexed, in-process, then searched.
"""

import json

import pandas as pd
import pytest
import yaml

from papersim.cli import main as cli
from stages import build_index, evaluate, ingest, mine_pairs, train
from tests.conftest import REPO, TOPICS, write_jsonl

pytestmark = pytest.mark.slow

WORDS = ["pressure", "vortex", "lattice", "kernel", "gradient", "spectrum", "nozzle", "entropy", "graph", "token"]


def sentence(i: int, j: int) -> str:
    return f"The {WORDS[(i + j) % 10]} of {TOPICS[i % 4]} changes with {WORDS[(i * 3 + j) % 10]} in trial {i}."


def abstract(i: int, n_sentences: int = 4) -> str:
    return " ".join(sentence(i, j) for j in range(n_sentences))


def shape_records(shape: str) -> list[dict]:
    """~40 records of one shape (ids r0, r1, ...)."""
    n = 40
    if shape == "untitled_abstracts":
        return [{"id": f"r{i}", "title": "", "abstract": abstract(i)} for i in range(n)]
    if shape == "title_only":
        return [{"id": f"r{i}", "title": f"On {TOPICS[i % 4]} and the {WORDS[i % 10]} in trial {i}", "abstract": ""}
                for i in range(n)]
    if shape == "one_sentence":
        return [{"id": f"r{i}", "title": "", "abstract": sentence(i, 0) if i % 3 else f"Short {TOPICS[i % 4]} {i}."}
                for i in range(n)]
    if shape == "long_abstracts":
        rows = [{"id": f"r{i}", "title": f"A long study of {TOPICS[i % 4]}, part {i}", "abstract": abstract(i, 60)}
                for i in range(n)]
        rows.append({"id": "too-long", "title": "A full text pasted as an abstract", "abstract": abstract(99, 400)})
        return rows
    if shape == "empty_tokens":
        rows = [{"id": f"r{i}", "title": "", "abstract": abstract(i)} for i in range(n)]
        rows += [{"id": "numbers", "title": "", "abstract": "1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18"},
                 {"id": "stopwords", "title": "", "abstract": "It is that it was and is to be of the one in which"}]
        return rows
    raise ValueError(shape)


def judged_set(folder, records: list[dict]) -> None:
    """A BEIR set of the same shape: its corpus is the records, two queries (one tokenises to nothing)."""
    write_jsonl(folder / "corpus.jsonl", [{"_id": r["id"], "title": r["title"], "text": r["abstract"]}
                                          for r in records])
    write_jsonl(folder / "queries.jsonl", [{"_id": "q1", "text": f"{TOPICS[1]} {WORDS[1]}"},
                                           {"_id": "q2", "text": "of the and 42"}])
    (folder / "qrels").mkdir()
    (folder / "qrels/test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\tr1\t1\nq2\tr2\t1\n")


@pytest.fixture
def project(tmp_path, monkeypatch, tracking, tiny_model_dir, stage_argv):
    monkeypatch.chdir(tmp_path)

    def make(shape: str, **ingest_params) -> dict:
        records = shape_records(shape)
        write_jsonl(tmp_path / "data/raw/corpus.jsonl", records)
        judged_set(tmp_path / "data/raw/judged", [r for r in records if r["id"] != "too-long"])
        params = yaml.safe_load((REPO / "params.yaml").read_text())
        params["ingest"].update(sources=[{"path": "data/raw/corpus.jsonl", "format": "jsonl", "name": shape}],
                                require_title=False, on_invalid="quarantine", max_rejected_fraction=0.1,
                                **ingest_params)
        params["mine_pairs"].update(model=str(tiny_model_dir), val_fraction=0.2, test_fraction=0.2,
                                    num_negatives=1, backend="torch")
        params["train"].update(base_model=str(tiny_model_dir), max_seq_length=32, batch_size=2, max_steps=2,
                               eval_steps=1, save_steps=1, logging_steps=1, backend="torch")
        params["evaluate"].update(beir_sets=["data/raw/judged"], base_model=str(tiny_model_dir), backend="torch",
                                  max_seq_length=32)
        params["build_index"].update(backend="torch", max_seq_length=32, recall_queries=5)
        (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        for stage in (ingest, mine_pairs, train, evaluate, build_index):
            name = stage.__name__.split(".")[-1]
            assert stage.main(stage_argv(name)) == 0, f"stage {name} failed on {shape}"
        return {"papers": pd.read_parquet(tmp_path / "data/processed/papers.parquet"),
                "rejected": pd.read_parquet(tmp_path / "data/processed/rejected.parquet"),
                "eval": json.loads((tmp_path / "reports/evaluate.json").read_text()),
                "index": json.loads((tmp_path / "reports/build_index.json").read_text())}
    return make


def served_search(query: str, capsys) -> list[dict]:
    capsys.readouterr()  # what the stages printed
    assert cli(["search", query, "-k", "3", "--json"]) == 0
    return [json.loads(line) for line in capsys.readouterr().out.splitlines()]


def test_untitled_abstracts(project, capsys):
    out = project("untitled_abstracts")
    assert len(out["papers"]) == 40 and (out["papers"]["title"] == "").all()
    assert "served" in out["eval"]["judged"] and out["index"]["papers"] == 40
    assert out["index"]["recall_queries"] == 5  # untitled: abstracts' openings measure the index
    assert len(served_search(f"{TOPICS[2]} gradient", capsys)) == 3


def test_title_only_records_are_searched_by_their_titles(project, capsys):
    out = project("title_only", title_only="keep")
    assert len(out["papers"]) == 40 and out["papers"]["abstract"].str.startswith("On ").all()
    assert "served" in out["eval"]["judged"]
    assert served_search("trial 17", capsys)[0]["paper_id"] == "r17"


def test_title_only_records_are_rejected_with_the_rule_by_default(tmp_path, monkeypatch, tracking, stage_argv):
    monkeypatch.chdir(tmp_path)
    write_jsonl(tmp_path / "data/raw/corpus.jsonl", shape_records("title_only")[:3])
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["ingest"].update(sources=[{"path": "data/raw/corpus.jsonl", "format": "jsonl"}], require_title=False)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    assert ingest.main(stage_argv("ingest")) == 1
    assert not (tmp_path / "data/processed/papers.parquet").exists()


def test_one_sentence_documents(project, capsys):
    out = project("one_sentence")
    assert len(out["papers"]) == 40 and out["index"]["papers"] == 40
    assert out["eval"]["judged"]["n_queries"] == 2 and "served" in out["eval"]["judged"]
    assert len(served_search("vortex", capsys)) == 3


def test_very_long_abstracts_run_and_a_full_text_is_rejected_by_rule(project, capsys):
    out = project("long_abstracts")
    assert len(out["papers"]) == 40 and out["papers"]["abstract"].str.len().min() > 4000
    rejected = out["rejected"]
    assert rejected["paper_id"].tolist() == ["too-long"] and list(rejected["rules"].iloc[0]) == ["abstract_length"]
    assert served_search("A long study of graph", capsys)[0]["title"].startswith("A long study of")


def test_documents_and_queries_that_tokenise_to_nothing(project, capsys):
    out = project("empty_tokens")
    assert {"numbers", "stopwords"} <= set(out["papers"]["paper_id"]) and out["index"]["papers"] == 42
    assert 0 <= out["eval"]["judged"]["bm25"]["ndcg@10"] < 1  # q2 ("of the and 42") retrieves nothing by BM25
    assert len(served_search("the of and", capsys)) == 3  # no BM25 match: the dense half still answers


def test_a_judged_corpus_is_reshaped_with_its_judgments_carried_to_the_new_documents():
    from papersim.evaluation.shapes import reshape

    papers = pd.DataFrame({"paper_id": ["a", "b"], "title": ["Flutter of panels", ""],
                           "abstract": ["the panel flutters at mach two. damping grows with speed! ok.",
                                        "heat moves through the boundary layer."]})
    qrels = {"q1": {"a": 2, "b": 1}, "q2": {"b": 3}}
    docs, judged = reshape(papers, qrels, "one_sentence")
    # lower-case sentences split too; "ok." is under 3 words and is no document
    assert docs["abstract"].tolist() == ["the panel flutters at mach two.", "damping grows with speed!",
                                         "heat moves through the boundary layer."]
    assert docs["paper_id"].tolist() == ["a.0", "a.1", "b.0"] and set(docs["title"]) == {""}
    assert judged == {"q1": {"a.0": 2, "a.1": 2, "b.0": 1}, "q2": {"b.0": 3}}
    titles, judged = reshape(papers, qrels, "title_only")
    assert titles[["paper_id", "title", "abstract"]].values.tolist() == [["a", "", "Flutter of panels"]]
    assert judged == {"q1": {"a": 2}, "q2": {}}
    untitled, _ = reshape(papers, qrels, "untitled")
    assert set(untitled["title"]) == {""} and untitled["abstract"].tolist() == papers["abstract"].tolist()
    assert len(set(untitled["content_hash"])) == 2 and untitled["groups"].tolist() == [[], []]
    with pytest.raises(ValueError, match="unknown shape"):
        reshape(papers, qrels, "poems")
