"""What a candidate serves: the encoder and fusion answering queries, and how papers similar to a paper are
answered. The train stage chooses it (papersim.training.selection) and writes models/serving.json; build_index,
evaluate, `papersim search` and the registered model read it from here, without importing training."""

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from papersim.errors import PapersimError
from papersim.retrieval.fusion import Fusion
from papersim.retrieval.similar import ENCODERS, Similar


@dataclass(frozen=True)
class Serving:
    """The candidate's served system: written next to the trained model, copied into the index."""

    encoder: str  # "trained" | "base"
    base_model: str  # the base encoder's folder ("" = the packaged all-MiniLM-L6-v2)
    fusion: Fusion
    reason: str
    evidence: dict = field(default_factory=dict)  # pseudo-query scores behind the choices
    similar: Similar | None = None  # how "papers similar to this one" is answered (None: chosen before it was)

    def to_dict(self) -> dict:
        return {"encoder": self.encoder, "base_model": self.base_model, "fusion": self.fusion.to_dict(),
                "reason": self.reason, "evidence": self.evidence,
                **({"similar": self.similar.to_dict()} if self.similar is not None else {})}

    @classmethod
    def from_dict(cls, values: Mapping) -> "Serving":
        if values.get("encoder") not in ENCODERS:
            raise PapersimError(f"serving choice names encoder {values.get('encoder')!r}: expected one of "
                                f"{', '.join(ENCODERS)} (rerun the train stage)")
        return cls(encoder=values["encoder"], base_model=values.get("base_model", ""),
                   fusion=Fusion.from_dict(values["fusion"]), reason=values.get("reason", ""),
                   evidence=dict(values.get("evidence", {})),
                   similar=Similar.from_dict(values["similar"]) if "similar" in values else None)

    def tags(self) -> dict[str, str]:
        """The MLflow tags every run and version that serves this choice carries."""
        return {"papersim.served_encoder": self.encoder, "papersim.serving_reason": self.reason,
                "papersim.fusion": self.fusion.describe(),
                **({"papersim.similar": self.similar.describe()} if self.similar is not None else {})}

    def encoder_folder(self, trained: str) -> str:
        """The served encoder's folder: `trained`, or the base model's ("" = packaged)."""
        return trained if self.encoder == "trained" else self.base_model

    def similar_folder(self, trained: str) -> str:
        """The folder of the encoder whose vectors answer "papers similar to this one": a merged one is the
        train stage's `similar_encoder`, beside `trained` (`merged_folder`)."""
        if self.similar is None:
            return self.encoder_folder(trained)
        return {"trained": trained, "base": self.base_model,
                "merged": str(merged_folder(Path(trained)))}[self.similar.encoder]


def merged_folder(trained: Path) -> Path:
    """Where the train stage writes the similar task's merged encoder: `similar_encoder` beside the trained one."""
    return trained.parent / "similar_encoder"


def read_serving(path: Path) -> Serving:
    """models/serving.json as the train stage wrote it; a missing file says which stage to run."""
    if not Path(path).is_file():
        raise PapersimError(f"{path}: no serving choice; run the train stage first (`dvc repro train`)")
    return Serving.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))
