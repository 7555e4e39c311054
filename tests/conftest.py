"""Shared fixtures: offline environment, one real SQLite MLflow store per test session, tiny corpora."""

import json
import os
from pathlib import Path

import pytest

from papersim.env import OFFLINE_DEFAULTS

for _key, _value in OFFLINE_DEFAULTS.items():  # before any test imports mlflow, dvc or GX
    os.environ[_key] = _value

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def mlflow_store(tmp_path_factory) -> str:
    """A real SQLite-backed MLflow tracking store, created once (creating the schema takes seconds)."""
    root = tmp_path_factory.mktemp("mlflow")
    return f"sqlite:///{root / 'mlflow.db'}"


@pytest.fixture
def tracking(mlflow_store, monkeypatch, request) -> str:
    """Point stages at the session store, in an experiment of this test's own; returns its name."""
    experiment = "test-" + request.node.name.replace("[", "-").replace("]", "")[:200]
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_store)
    monkeypatch.setenv("PAPERSIM_EXPERIMENT", experiment)
    monkeypatch.delenv("PAPERSIM_PARENT_RUN_ID", raising=False)
    return experiment


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def paper(i: int, **overrides) -> dict:
    """A plausible paper record with a unique id, title and abstract."""
    row = {
        "id": f"p{i}",
        "title": f"Contrastive learning of paper embeddings, part {i}",
        "abstract": f"We study method number {i} for learning representations of scientific abstracts "
        f"with Siamese networks and report retrieval results on benchmark {i}.",
        "categories": ["cs.LG"],
    }
    row.update(overrides)
    return row


PAGE_HEADER = "new\n\nGet trending papers in your email inbox!\n\nSubscribe\n\nbyAK and the research community\n\nMar 14\n\n"


def write_page(path: Path, papers: list[tuple[str, str]]) -> Path:
    """A saved listing page in the site's format: header, then title/abstract paragraphs."""
    path.parent.mkdir(parents=True, exist_ok=True)
    body = "".join(f"{title}\n\n{abstract}\n\n" for title, abstract in papers)
    path.write_text(PAGE_HEADER + body, encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A tiny randomly initialised BERT (1 layer, 32 dims) with the packaged tokenizer, saved as a
    sentence-transformers folder: real code paths, seconds instead of minutes on a CPU."""
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Normalize, Pooling, Transformer
    from transformers import AutoTokenizer, BertConfig, BertModel

    from papersim.models import base_model_path

    root = tmp_path_factory.mktemp("tiny-model")
    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(str(base_model_path()))
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=1,
                        num_attention_heads=2, intermediate_size=64, max_position_embeddings=256)
    BertModel(config).save_pretrained(root / "hf")
    tokenizer.save_pretrained(root / "hf")
    model = SentenceTransformer(modules=[Transformer(str(root / "hf")), Pooling(32, "mean"), Normalize()])
    model.save(str(root / "model"))
    return root / "model"
