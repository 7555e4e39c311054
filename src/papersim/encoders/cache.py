"""An embedding cache keyed by (encoder key, text hash), so no stage encodes a text twice.

Layout: `<cache>/<encoder key>/part-*.parquet`, columns `text_hash` (string) and `embedding`
(fixed-size list of float32), at most PART_ROWS rows each in row groups of GROUP_ROWS. New
vectors go to new part files written atomically, so a crash mid-write loses at most that batch
and never corrupts what was cached before. The cache is a side store, not a pipeline output:
deleting it only costs encoding time.

Lookups read each part's hash column once per process (an index: hash -> part, row) and then
only the row groups holding wanted vectors, so a lookup's memory is the vectors it returns plus
one row group, not the whole cache.
"""

import hashlib
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from papersim.atomic import atomic_outputs
from papersim.encoders.encode import Encoder, load_text_encoder
from papersim.encoders.engine import EncodingEngine, with_engine

PART_ROWS = 65_536  # vectors per part file: 96 MiB at dim 384
GROUP_ROWS = 4_096  # vectors per row group: the unit a lookup reads (6 MiB at dim 384)


def text_hash(text: str) -> str:
    """SHA-1 of the UTF-8 text: the cache key of one text."""
    return hashlib.sha1(text.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Encoded:
    vectors: np.ndarray  # (n_texts, dim) float32 unit vectors, in input order
    n_encoded: int  # texts that were not in the cache (unique texts actually run through the model)


@dataclass
class _FolderIndex:
    """Where each cached vector of one encoder folder lives: hash -> (part number, row)."""

    parts: list[Path] = field(default_factory=list)
    rows: dict[str, tuple[int, int]] = field(default_factory=dict)

    def refresh(self, folder: Path) -> None:
        """Index the parts written since the last look (by any process): their hash column only."""
        if any(not part.is_file() for part in self.parts):  # the cache was cleared: start over
            self.parts, self.rows = [], {}
        known = set(self.parts)
        for part in sorted(folder.glob("part-*.parquet")):
            if part not in known:
                hashes = pq.read_table(part, columns=["text_hash"]).column("text_hash").to_pylist()
                number = len(self.parts)
                self.parts.append(part)
                for row, digest in enumerate(hashes):
                    self.rows.setdefault(digest, (number, row))

    def read(self, digests: list[str], dim: int) -> np.ndarray:
        """(len(digests), dim) vectors of indexed hashes, one row group at a time."""
        out = np.zeros((len(digests), dim), dtype=np.float32)
        wanted: dict[tuple[int, int], list[tuple[int, int]]] = {}  # (part, row group) -> [(row in group, out row)]
        for i, digest in enumerate(digests):
            number, row = self.rows[digest]
            wanted.setdefault((number, row // GROUP_ROWS), []).append((row % GROUP_ROWS, i))
        for (number, group), rows in sorted(wanted.items()):
            column = pq.ParquetFile(self.parts[number]).read_row_group(group, columns=["embedding"]).column(0)
            vectors = column.combine_chunks().flatten().to_numpy().reshape(-1, dim)  # (GROUP_ROWS, dim)
            at, into = np.array(rows).T
            out[into] = vectors[at]
        return out


_INDEXES: dict[Path, _FolderIndex] = {}  # one per encoder folder, per process


def _write_parts(folder: Path, hashes: list[str], vectors: np.ndarray) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    dim = vectors.shape[1]
    for start in range(0, len(hashes), PART_ROWS):
        chunk = vectors[start:start + PART_ROWS]
        column = pa.FixedSizeListArray.from_arrays(pa.array(chunk.reshape(-1), pa.float32()), dim)
        table = pa.table({"text_hash": pa.array(hashes[start:start + PART_ROWS], pa.string()), "embedding": column})
        with atomic_outputs(folder / f"part-{uuid.uuid4().hex}.parquet") as (tmp,):
            pq.write_table(table, tmp, row_group_size=GROUP_ROWS)


def encode_cached(encoder: Encoder, texts: Sequence[str], cache: Path | None, progress: bool = False) -> Encoded:
    """Embeddings of `texts`, reading what `cache` holds for this encoder and adding the rest."""
    hashes = [text_hash(text) for text in texts]
    missing: dict[str, str] = {}
    index = _FolderIndex()
    if cache is not None:
        folder = (Path(cache) / encoder.key).resolve()
        index = _INDEXES.setdefault(folder, _FolderIndex())
        index.refresh(folder)
    for digest, text in zip(hashes, texts):
        if digest not in index.rows and digest not in missing:
            missing[digest] = text
    fresh = encoder.encode(list(missing.values()), progress=progress) if missing else None  # (n_missing, dim)
    if fresh is not None and cache is not None:
        _write_parts(folder, list(missing), fresh)
        index.refresh(folder)
    vectors = np.zeros((len(texts), encoder.dim), dtype=np.float32)
    cached = [i for i, digest in enumerate(hashes) if digest not in missing]
    if cached:
        vectors[cached] = index.read([hashes[i] for i in cached], encoder.dim)
    if fresh is not None:
        position = {digest: i for i, digest in enumerate(missing)}
        new = [i for i, digest in enumerate(hashes) if digest in missing]
        vectors[new] = fresh[[position[hashes[i]] for i in new]]
    return Encoded(vectors=vectors, n_encoded=len(missing))


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
