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
