"""What a registered version holds, staged from the workspace and read back from a downloaded copy.

A version (the registry's pyfunc, papersim.lifecycle.tracking) carries the served encoder, the
index folder, the evaluate report, the effective params.yaml and the drift reference (a seeded
sample of papers with their vectors): everything the next run's drift check and gate compare with.
"""

import json
import os
import shutil
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd

from papersim.atomic import scratch_folder
from papersim.errors import PapersimError
from papersim.lifecycle.drift import (
    CorpusChange,
    EmbeddingDrift,
    corpus_change,
    drift_sample,
    embedding_drift,
    sample_vectors,
)
from papersim.lifecycle.retrain import RetrainConfig, eval_set_hashes
from papersim.retrieval.index import indexed_papers
from papersim.retrieval.choice import Serving

REGISTRY_CACHE = "cache/registry"  # local copies of registered versions (a side store, like cache/embeddings)
PER_QUERY = "evaluate_per_query.parquet"  # the gate pairs the candidate's queries with these (gate_rule significant)
REPORTS = ("evaluate.json", "eval.json")  # versions registered before the report took the stage's name hold eval.json


@dataclass(frozen=True)
class Version:
    """A downloaded version folder (tracking.download_model)."""

    folder: Path

    @property
    def encoder(self) -> Path:
        return self.folder / "artifacts/encoder"

    @property
    def index(self) -> Path:
        return self.folder / "artifacts/index"

    @property
    def similar_encoder(self) -> Path:
        """The encoder of the similar task's vectors, when it is not `encoder` (absent otherwise)."""
        return self.folder / "artifacts/similar_encoder"

    def report(self) -> dict:
        """The evaluate report the version was registered with."""
        for name in REPORTS:
            path = self.folder / "artifacts" / name
            if path.is_file():
                return json.loads(path.read_text(encoding="utf-8"))
        raise PapersimError(f"{self.folder}: the registered version holds no evaluate report ({' or '.join(REPORTS)})")

    def per_query(self) -> pd.DataFrame | None:
        """The evaluate stage's per-query scores the version was registered with (None: registered before
        versions held them; the champion gate then re-scores it)."""
        path = self.folder / "artifacts" / PER_QUERY
        return pd.read_parquet(path) if path.is_file() else None

    def drift_against(self, current: pd.DataFrame, cfg: RetrainConfig) -> tuple[CorpusChange, EmbeddingDrift | None]:
        """The current corpus against the version's: content change, and embedding drift of the same
        seeded sample rule under the version's encoder (None when nothing changed)."""
        change = corpus_change(indexed_papers(self.index), current)
        if change.share == 0:
            return change, None
        reference = np.load(self.folder / "artifacts/drift/reference.npy")
        vectors = sample_vectors(drift_sample(current, cfg.drift_sample_size), self.index, self.encoder)
        return change, embedding_drift(reference, vectors, cfg.drift_permutations)


def fetch(model_name: str, version: str, root: Path) -> Version:
    """A registered version, downloaded once into the repository's registry cache."""
    from papersim.lifecycle import tracking

    return Version(tracking.download_model(model_name, version, Path(root) / REGISTRY_CACHE))


def drift_metrics(change: CorpusChange, drift: EmbeddingDrift | None) -> dict[str, float]:
    """What the flow logs: an identical corpus is the same sample under the same encoder, MMD^2 0."""
    return {"drift.changed_share": change.share, "drift.new_papers": change.new,
            "drift.changed_papers": change.changed, "drift.removed_papers": change.removed,
            "drift.mmd2": drift.mmd2 if drift else 0.0, "drift.p_value": drift.p_value if drift else 1.0,
            "drift.centroid_shift": drift.centroid_shift if drift else 0.0}


@dataclass(frozen=True)
class Candidate:
    """The pipeline's outputs that make a version (dvc.yaml's outs in a workspace)."""

    root: Path
    papers: Path
    serving: Path
    model: Path
    index: Path
    report: Path
    params: Path
    lock: Path
    per_query: Path | None = None  # evaluate_per_query.parquet (None: a version without it)

    @classmethod
    def refreshed(cls, root: Path, carried: "Version", scratch: Path) -> "Candidate":
        """A refresh: the carried version's model, params and dvc.lock (what the model was built with),
        the workspace's current papers, and the scratch folder's serving config, index and report."""
        return cls(Path(root), Path(root) / "data/processed/papers.parquet", scratch / "serving.json", carried.encoder,
                   scratch / "index", scratch / "evaluate.json", carried.folder / "artifacts/params.yaml",
                   carried.folder / "artifacts/dvc.lock", scratch / PER_QUERY)

    @classmethod
    def in_workspace(cls, root: Path) -> "Candidate":
        root = Path(root)
        return cls(root, root / "data/processed/papers.parquet", root / "models/serving.json", root / "models/encoder",
                   root / "artifacts/index", root / "reports/evaluate.json", root / "params.yaml", root / "dvc.lock",
                   root / "reports" / PER_QUERY)


def register(candidate: Candidate, cfg: RetrainConfig, decision: dict, params_fingerprint: str, run_id: str,
             tags: dict[str, str], description: str | None = None) -> str:
    """Stage, upload and register the candidate as a version of `cfg.model_name` (no alias yet); the
    uploaded copy stays in the registry cache. Returns the version number. The description defaults to
    the gate's outcome (a refresh names the model version it carries instead)."""
    from papersim.encoders.encode import model_folder
    from papersim.lifecycle import tracking
    from papersim.retrieval.choice import read_serving

    papers = pd.read_parquet(candidate.papers)
    serving = read_serving(candidate.serving)
    encoder = model_folder(serving.encoder_folder(str(candidate.model)))  # what the index serves
    similar = model_folder(serving.similar_folder(str(candidate.model)))  # what answers papers
    report = json.loads(candidate.report.read_text(encoding="utf-8"))
    cache = candidate.root / REGISTRY_CACHE
    cache.mkdir(parents=True, exist_ok=True)
    with scratch_folder(cache, "staging") as staging:  # its writer in its name: a killed run's is swept
        artifacts = stage_version(staging, papers, encoder, candidate, cfg)
        if similar != encoder:  # re-scoring the similar task later needs its encoder (serving needs only the index)
            shutil.copytree(similar, staging / "similar_encoder")
            artifacts["similar_encoder"] = staging / "similar_encoder"
        # the caller's tags win: a refresh keeps the serving tags of the version whose model it carries
        tags = {**version_tags(serving, decision, params_fingerprint, cfg, len(papers), report), **tags}
        version = tracking.register_search_model(run_id, cfg.model_name, artifacts, tags, staging,
                                                 description=description or version_description(decision, cfg))
        target = cache / f"{cfg.model_name}-v{version}"  # the saved copy is exactly what was uploaded: keep it
        if not target.exists():
            os.replace(staging / tracking.MODEL_ARTIFACT_PATH, target)
    return version


def stage_version(staging: Path, papers: pd.DataFrame, encoder: Path, candidate: Candidate,
                  cfg: RetrainConfig) -> dict[str, Path]:
    """Prepare a version's artifacts in `staging`: the drift reference (vectors read from the index:
    no encoding), a copy of the effective params and of the served encoder when it is not the
    trained folder. Returns the artifacts by name."""
    sample = drift_sample(papers, cfg.drift_sample_size)
    (staging / "drift").mkdir()
    np.save(staging / "drift/reference.npy", sample_vectors(sample, candidate.index, encoder))
    sample[["paper_id", "content_hash"]].to_parquet(staging / "drift/sample.parquet", index=False)
    shutil.copy(candidate.params, staging / "params.yaml")  # the effective params, overrides included
    shutil.copy(candidate.lock, staging / "dvc.lock")  # what each stage ran with: params, data and code hashes
    if encoder.name != "encoder":  # MLflow names a directory artifact after its folder: the base model's is not
        shutil.copytree(encoder, staging / "encoder")
        encoder = staging / "encoder"
    per_query = {"per_query": candidate.per_query} if candidate.per_query and candidate.per_query.is_file() else {}
    return {"encoder": encoder, "index": candidate.index, "evaluate": candidate.report,
            "params": staging / "params.yaml", "lock": staging / "dvc.lock", "drift": staging / "drift", **per_query}


def version_tags(serving: Serving, decision: dict, params_fingerprint: str, cfg: RetrainConfig, papers: int,
                 report: dict) -> dict[str, object]:
    """The version's tags: what it serves, the gate's outcome and the sets it was scored on."""
    return {**serving.tags(), "papersim.params_fingerprint": params_fingerprint,
            "papersim.gate": "champion" if decision["promote"] else "challenger",
            "papersim.gate_reason": decision["reason"], "papersim.primary": f"{decision['primary']:.4f}",
            "papersim.primary_metric": cfg.primary_metric, "papersim.papers": papers,
            **{f"eval_set.{name}.content_hash": h for name, h in eval_set_hashes(report).items()}}


def version_description(decision: dict, cfg: RetrainConfig) -> str:
    """The version's description in the registry: the gate's outcome and its reason."""
    outcome = "promoted to champion" if decision["promote"] else "kept as challenger"
    return f"Gate: {outcome}. {cfg.primary_metric} = {decision['primary']:.4f}. {decision['reason']}"


def rescore_serving(version: Version) -> Serving:
    """The version's served system for the evaluate stage: its encoder folder (as the stage's trained
    encoder) and the fusion its index stores (an index built before the fusion was chosen: RRF)."""
    from papersim.retrieval.search import load_search_index
    from papersim.retrieval.similar import Similar

    si = load_search_index(version.index)
    similar, base_model = None, ""
    if "similar" in si.info:  # the version's encoder is "trained" here: map its similar encoder onto that
        similar = Similar.from_dict(si.info["similar"])
        if version.similar_encoder.is_dir():
            similar, base_model = replace(similar, encoder="base"), str(version.similar_encoder)
        elif similar.encoder == si.info.get("serving", {}).get("encoder"):
            similar = replace(similar, encoder="trained")
        else:
            base_model = si.info.get("serving", {}).get("base_model", "")
    return Serving("trained", base_model, si.fusion, "the champion's served system, re-scored", similar=similar)
