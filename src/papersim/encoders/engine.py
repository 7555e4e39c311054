"""Where encoding runs: this process (`local`), or an actor pool on a Ray cluster (`ray`).

`ray` sends the texts through Ray Data `map_batches` to `ray_actors` actors, each holding the
encoder (loaded once per actor, from the same folder, backend and sequence length), on the cluster
at `ray_address` ("" starts a local instance). The vectors come back under the same encoder key,
so they fill the same embedding cache and the rest of the pipeline does not change. Ray is an
optional extra (`pip install papersim[ray]`); workers must be able to import papersim (a cluster
started from this virtual environment, or a runtime_env that installs it).
"""

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from papersim.encoders.encode import Encoder, load_text_encoder
from papersim.errors import PapersimError
from papersim.progress import track

ENGINES = ("local", "ray")


@dataclass(frozen=True)
class EncodingEngine:
    """Fields shared by the config of every stage that encodes (params keys of the same names)."""

    engine: str = "local"  # local: this process; ray: Ray Data actors holding the encoder (papersim[ray])
    ray_address: str = ""  # ray: "" starts a local instance; "auto" or host:port joins a running cluster
    ray_actors: int = 2  # ray: encoder replicas; one per GPU, or one per ray_cpus_per_actor cores
    ray_cpus_per_actor: float = 1.0  # ray on CPUs: cores each replica holds (its torch/OpenVINO threads)

    @classmethod
    def of(cls, cfg: "EncodingEngine") -> "EncodingEngine":
        """Just the engine fields of a stage's config."""
        return cls(**{f.name: getattr(cfg, f.name) for f in dataclasses.fields(cls)})

    def check_engine(self) -> None:
        if self.engine not in ENGINES:
            raise ValueError(f"engine must be one of {', '.join(ENGINES)} (got {self.engine!r})")
        if self.ray_actors < 1 or self.ray_cpus_per_actor <= 0:
            raise ValueError("ray_actors must be >= 1 and ray_cpus_per_actor > 0")


class _EncodeActor:
    """One Ray actor: the encoder loaded once, then batches of {row, text} -> {row, embedding}."""

    def __init__(self, folder: str, backend: str, max_seq_length: int, batch_size: int,
                 converted_cache: Path | None = None) -> None:
        self.encoder = load_text_encoder(folder, backend, max_seq_length, batch_size, converted_cache)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {"row": batch["row"], "embedding": self.encoder.encode(batch["text"].tolist())}  # (batch, dim)


@dataclass(frozen=True)
class RayEncoder(Encoder):
    """An Encoder whose `encode` runs on a Ray actor pool; key, fingerprint and dim are the local ones."""

    folder: str = ""
    max_seq_length: int = 128
    settings: EncodingEngine = EncodingEngine()

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        import ray

        if not ray.is_initialized():
            ray.init(address=self.settings.ray_address or None, include_dashboard=False, log_to_driver=False,
                     configure_logging=False)
        ray.data.DataContext.get_current().enable_progress_bars = False  # a bar per operator: lines below instead
        gpu = self.backend == "torch" and ray.cluster_resources().get("GPU", 0) >= 1
        n_blocks = min(len(texts), self.settings.ray_actors * 4)  # a few blocks per actor keep all of them busy
        data = ray.data.from_items([{"row": i, "text": t} for i, t in enumerate(texts)],
                                   override_num_blocks=n_blocks)
        encoded = data.map_batches(
            _EncodeActor, fn_constructor_args=(self.folder, self.backend, self.max_seq_length, self.batch_size,
                                 self.converted_cache),
            batch_size=self.batch_size * 4, batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=self.settings.ray_actors),
            num_gpus=1 if gpu else 0, num_cpus=0 if gpu else self.settings.ray_cpus_per_actor)
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for batch in track(encoded.iter_batches(batch_format="numpy", batch_size=None), "encoding", total=len(texts),
                           unit="texts", size=lambda batch: len(batch["row"])):
            out[batch["row"]] = batch["embedding"]
        return out


def with_engine(encoder: Encoder, folder: str, max_seq_length: int, settings: EncodingEngine) -> Encoder:
    """`encoder` as it is (local), or the same encoder run on Ray actors."""
    if settings.engine == "local":
        return encoder
    try:
        import ray  # noqa: F401
    except ImportError:
        raise PapersimError("engine: ray needs Ray: pip install 'papersim[ray]' (or set engine: local)") from None
    fields = {f.name: getattr(encoder, f.name) for f in dataclasses.fields(Encoder)}
    return RayEncoder(**fields, folder=folder, max_seq_length=max_seq_length, settings=settings)
