"""What a registered version holds, staged from the workspace and read back from a downloaded copy.

A trained version (the registry's pyfunc, papersim.lifecycle.tracking) carries the served encoder, the
index folder, the evaluate report, the effective params.yaml and dvc.lock, the split its model was
trained and scored with (split.parquet) and the drift reference: a seeded sample of papers with their
vectors and the training corpus's ids and hashes (drift/corpus.parquet), what the next run's drift
check and gate compare with. A refresh version holds only what changed (the index, its report) and a
model_ref.json naming the trained version's artifacts it serves with (encoder, drift reference,
split): an hourly refresh adds an index to the registry, not a copy of the model.
"""

import json
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
MODEL_REF = "model_ref.json"  # a refresh version: the trained version whose artifacts it serves with
SPLIT = "split.parquet"  # mine_pairs' split the model was trained with: a refresh scores on the same test papers
TRAINED_CORPUS = "drift/corpus.parquet"  # paper_id, content_hash (record_hash) of the corpus the model was trained on
# A trained version's artifacts a refresh refers to instead of copying (name in the version's artifacts folder).
MODEL_ARTIFACTS = ("encoder", "similar_encoder", "drift", SPLIT)


@dataclass(frozen=True)
class CorpusDrift:
    """The current corpus against a version: since its model was trained (what the retrain decision
    reads), since the version's own index was built (what a refresh serves), and the embedding test."""

    since_training: CorpusChange
    since_refresh: CorpusChange
    embedding: EmbeddingDrift | None


@dataclass(frozen=True)
class Version:
    """A downloaded version folder (tracking.download_model)."""

    folder: Path
    label: str = ""  # "papersim v3" (fetch); the folder's name otherwise

    @property
    def name(self) -> str:
        return self.label or self.folder.name

    def model_ref(self) -> dict | None:
        """A refresh version's reference to its trained version's artifacts (None: a trained version)."""
        path = self.folder / "artifacts" / MODEL_REF
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None

    def _artifact(self, name: str) -> Path:
        """The version's own artifact `name`, or the one its model_ref names (resolved to a local path);
        a path that does not exist when neither has it."""
        own = self.folder / "artifacts" / name
        ref = self.model_ref()
        if own.exists() or ref is None or name not in ref["artifacts"]:
            return own
        from papersim.lifecycle import tracking

        return tracking.local_artifact(ref["artifacts"][name], self.folder.parent / "refs")

    @property
    def encoder(self) -> Path:
        return self._artifact("encoder")

    @property
    def index(self) -> Path:
        index = self.folder / "artifacts/index"
        if not (index / "index.json").is_file():
            raise PapersimError(f"{self.folder}: the registered version holds no index (artifacts/index/index.json): "
                                "its download is incomplete or its artifacts were removed; delete the folder to "
                                "download it again, or promote another version (`papersim registry list`)")
        return index

    @property
    def similar_encoder(self) -> Path:
        """The encoder of the similar task's vectors, when it is not `encoder` (absent otherwise)."""
        return self._artifact("similar_encoder")

    @property
    def split(self) -> Path | None:
        """The split the model was trained and scored with (None: registered before versions held it)."""
        path = self._artifact(SPLIT)
        return path if path.is_file() else None

    @property
    def model_version(self) -> str | None:
        """The trained version whose model this one serves (None: this one's own)."""
        ref = self.model_ref()
        return str(ref["model_version"]) if ref else None

    def model_artifacts(self, source: str) -> dict[str, str]:
        """The artifact URIs of the trained model this version serves, for a refresh of it to refer to
        (`source`: the version's runs:/ URI in the registry)."""
        ref = self.model_ref()
        if ref is not None:  # a refresh of a refresh refers to the same trained version
            return dict(ref["artifacts"])
        return {name: f"{source}/artifacts/{name}" for name in MODEL_ARTIFACTS
                if (self.folder / "artifacts" / name).exists()}

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

    def trained_corpus(self) -> pd.DataFrame:
        """The ids and hashes of the corpus the version's model was trained on (versions registered before
        they held it: the papers of the version's own index)."""
        path = self._artifact("drift") / "corpus.parquet"
        return pd.read_parquet(path) if path.is_file() else indexed_papers(self.index)

    def drift_against(self, current: pd.DataFrame, cfg: RetrainConfig) -> CorpusDrift:
        """The current corpus against the version's: content change since its model was trained and since
        its index was built, and embedding drift of the same seeded sample rule under the model's encoder
        against the training corpus's reference (None when nothing changed since training)."""
        since_training = corpus_change(self.trained_corpus(), current)
        since_refresh = corpus_change(indexed_papers(self.index), current)
        if since_training.share == 0:
            return CorpusDrift(since_training, since_refresh, None)
        reference = np.load(self._artifact("drift") / "reference.npy")
        vectors = sample_vectors(drift_sample(current, cfg.drift_sample_size), self.index, self.encoder)
        return CorpusDrift(since_training, since_refresh,
                           embedding_drift(reference, vectors, cfg.drift_permutations))


def fetch(model_name: str, version: str, root: Path) -> Version:
    """A registered version: the artifact store's own folder when it is on this disk, else a copy downloaded
    once into the repository's registry cache."""
    from papersim.lifecycle import tracking

    return Version(tracking.download_model(model_name, version, Path(root) / REGISTRY_CACHE), f"{model_name} v{version}")


def drift_metrics(drift: CorpusDrift, cfg: RetrainConfig) -> dict[str, float]:
    """What the flow logs: change since the model was trained (what retrains), since the last refresh (what
    a refresh serves) and the share that triggers a retrain; an identical corpus is the same sample under
    the same encoder, MMD^2 0."""
    trained, refreshed, embedding = drift.since_training, drift.since_refresh, drift.embedding
    return {"drift.changed_share": trained.share, "drift.new_papers": trained.new,
            "drift.changed_papers": trained.changed, "drift.removed_papers": trained.removed,
            "drift.trained_papers": trained.n_reference, "drift.current_papers": trained.n_current,
            "drift.refresh_new_papers": refreshed.new, "drift.refresh_changed_papers": refreshed.changed,
            "drift.refresh_removed_papers": refreshed.removed, "drift.trigger_share": cfg.min_changed_share,
            "drift.mmd2": embedding.mmd2 if embedding else 0.0, "drift.p_value": embedding.p_value if embedding else 1.0,
            "drift.centroid_shift": embedding.centroid_shift if embedding else 0.0}


@dataclass(frozen=True)
class Candidate:
    """The pipeline's outputs that make a trained version (dvc.yaml's outs in a workspace)."""

    root: Path
    papers: Path
    serving: Path
    model: Path
    index: Path
    report: Path
    params: Path
    lock: Path
    per_query: Path | None = None  # evaluate_per_query.parquet (None: a version without it)
    split: Path | None = None  # mine_pairs' split.parquet (None: a version without it)

    @classmethod
    def in_workspace(cls, root: Path) -> "Candidate":
        root = Path(root)
        return cls(root, root / "data/processed/papers.parquet", root / "models/serving.json", root / "models/encoder",
                   root / "artifacts/index", root / "reports/evaluate.json", root / "params.yaml", root / "dvc.lock",
                   root / "reports" / PER_QUERY, root / "data/pairs" / SPLIT)


def register(candidate: Candidate, cfg: RetrainConfig, decision: dict, params_fingerprint: str, run_id: str,
             tags: dict[str, str], description: str | None = None) -> str:
    """Stage, upload and register the candidate as a version of `cfg.model_name` (no alias yet). Returns
    the version number. The description defaults to the gate's outcome."""
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
        tags = {**version_tags(serving, decision, params_fingerprint, cfg, len(papers), report), **tags}
        return tracking.register_search_model(run_id, cfg.model_name, artifacts, tags, staging,
                                              description=description or version_description(decision, cfg))


def register_refresh(root: Path, carried: Version, source: str, scratch: Path, cfg: RetrainConfig, decision: dict,
                     params_fingerprint: str, run_id: str, tags: dict[str, str], description: str) -> str:
    """Register a refresh of `carried` (its registry source `source`): the scratch folder's index, serving
    config and report, the workspace's papers, and a reference to the trained model's artifacts (encoder,
    drift reference, split) instead of copies. Returns the version number."""
    from papersim.lifecycle import tracking
    from papersim.retrieval.choice import read_serving

    root = Path(root)
    papers = len(pd.read_parquet(root / "data/processed/papers.parquet", columns=["paper_id"]))
    serving = read_serving(scratch / "serving.json")
    report = json.loads((scratch / "evaluate.json").read_text(encoding="utf-8"))
    ref = {"model_version": carried.model_version or tags.get("papersim.model_version", ""),
           "artifacts": carried.model_artifacts(source)}
    with scratch_folder(root / REGISTRY_CACHE, "staging") as staging:
        (staging / MODEL_REF).write_text(json.dumps(ref, indent=1, sort_keys=True), encoding="utf-8")
        shutil.copy(carried.folder / "artifacts/params.yaml", staging / "params.yaml")  # what the model was built with
        shutil.copy(carried.folder / "artifacts/dvc.lock", staging / "dvc.lock")
        artifacts = {"model_ref": staging / MODEL_REF, "index": scratch / "index", "evaluate": scratch / "evaluate.json",
                     "params": staging / "params.yaml", "lock": staging / "dvc.lock"}
        if (scratch / PER_QUERY).is_file():
            artifacts["per_query"] = scratch / PER_QUERY
        tags = {**version_tags(serving, decision, params_fingerprint, cfg, papers, report), **tags}
        return tracking.register_search_model(run_id, cfg.model_name, artifacts, tags, staging,
                                              description=description, artifact_path=tracking.REFRESH_ARTIFACT_PATH)


def stage_version(staging: Path, papers: pd.DataFrame, encoder: Path, candidate: Candidate,
                  cfg: RetrainConfig) -> dict[str, Path]:
    """Prepare a trained version's artifacts in `staging`: the drift reference (vectors read from the index:
    no encoding, and the training corpus's ids and hashes), a copy of the effective params, dvc.lock and
    split, and of the served encoder when it is not the trained folder. Returns the artifacts by name."""
    sample = drift_sample(papers, cfg.drift_sample_size)
    (staging / "drift").mkdir()
    np.save(staging / "drift/reference.npy", sample_vectors(sample, candidate.index, encoder))
    sample[["paper_id", "content_hash"]].to_parquet(staging / "drift/sample.parquet", index=False)
    hashes = [c for c in ("paper_id", "content_hash", "record_hash") if c in papers]
    papers[hashes].to_parquet(staging / TRAINED_CORPUS, index=False)
    shutil.copy(candidate.params, staging / "params.yaml")  # the effective params, overrides included
    shutil.copy(candidate.lock, staging / "dvc.lock")  # what each stage ran with: params, data and code hashes
    if encoder.name != "encoder":  # MLflow names a directory artifact after its folder: the base model's is not
        shutil.copytree(encoder, staging / "encoder")
        encoder = staging / "encoder"
    extra = {"per_query": candidate.per_query} if candidate.per_query and candidate.per_query.is_file() else {}
    if candidate.split and candidate.split.is_file():
        extra["split"] = candidate.split
    return {"encoder": encoder, "index": candidate.index, "evaluate": candidate.report,
            "params": staging / "params.yaml", "lock": staging / "dvc.lock", "drift": staging / "drift", **extra}


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
            similar, base_model = replace(similar, encoder="base", merge_weight=None), str(version.similar_encoder)
        elif similar.encoder == si.info.get("serving", {}).get("encoder"):
            similar = replace(similar, encoder="trained")
        else:
            base_model = si.info.get("serving", {}).get("base_model", "")
    return Serving("trained", base_model, si.fusion, "the champion's served system, re-scored", similar=similar)
