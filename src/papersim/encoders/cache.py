"""An embedding cache keyed by (encoder key, text hash), so no stage encodes a text twice.

Layout: `<cache>/<encoder key>/part-*.parquet`, columns `text_hash` (string) and `embedding`
(fixed-size list of float32). New vectors go to a new part file written atomically, so a
crash mid-write loses at most that batch and never corrupts what was cached before. The
cache is a side store, not a pipeline output: deleting it only costs encoding time.
"""

import hashlib
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from papersim.atomic import atomic_outputs
from papersim.encoders.encode import Encoder, load_text_encoder
from papersim.encoders.engine import EncodingEngine, with_engine


def text_hash(text: str) -> str:
    """SHA-1 of the UTF-8 text: the cache key of one text."""
    return hashlib.sha1(text.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Encoded:
    vectors: np.ndarray  # (n_texts, dim) float32 unit vectors, in input order
    n_encoded: int  # texts that were not in the cache (unique texts actually run through the model)


def _read_cache(folder: Path, dim: int) -> dict[str, np.ndarray]:
    cached: dict[str, np.ndarray] = {}
    for part in sorted(folder.glob("part-*.parquet")):
        table = pq.read_table(part)
        vectors = table.column("embedding").combine_chunks().flatten().to_numpy().reshape(-1, dim)
        cached.update(zip(table.column("text_hash").to_pylist(), vectors))
    return cached


def _write_part(folder: Path, hashes: list[str], vectors: np.ndarray) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    dim = vectors.shape[1]
    column = pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1), pa.float32()), dim)
    table = pa.table({"text_hash": pa.array(hashes, pa.string()), "embedding": column})
    with atomic_outputs(folder / f"part-{uuid.uuid4().hex}.parquet") as (tmp,):
        pq.write_table(table, tmp)


def encode_cached(encoder: Encoder, texts: Sequence[str], cache: Path | None, progress: bool = False) -> Encoded:
    """Embeddings of `texts`, reading what `cache` holds for this encoder and adding the rest."""
    hashes = [text_hash(text) for text in texts]
    folder = cache / encoder.key if cache is not None else None
    known = _read_cache(folder, encoder.dim) if folder is not None and folder.is_dir() else {}
    missing: dict[str, str] = {}
    for digest, text in zip(hashes, texts):
        if digest not in known and digest not in missing:
            missing[digest] = text
    if missing:
        fresh = encoder.encode(list(missing.values()), progress=progress)  # (n_missing, dim)
        if folder is not None:
            _write_part(folder, list(missing), fresh)
        known.update(zip(missing, fresh))
    vectors = np.stack([known[digest] for digest in hashes]) if hashes else np.zeros((0, encoder.dim), np.float32)
    return Encoded(vectors=vectors.astype(np.float32, copy=False), n_encoded=len(missing))


@dataclass(frozen=True)
class CachedEmbedder:
    """texts -> (n, dim) unit vectors through the cache: the `embed` callable the library's functions take."""

    encoder: Encoder
    cache: Path | None

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        return encode_cached(self.encoder, texts, self.cache).vectors


def cached_embedder(folder: str, backend: str, max_seq_length: int, batch_size: int, cache: Path | None,
                    engine: EncodingEngine = EncodingEngine()) -> CachedEmbedder:
    """Load the encoder at `folder` ("" = the packaged base model) behind the embedding cache; what
    is not cached is encoded where `engine` says (this process or Ray actors)."""
    encoder = load_text_encoder(folder, backend, max_seq_length, batch_size)
    return CachedEmbedder(with_engine(encoder, folder, max_seq_length, EncodingEngine.of(engine)), cache)
