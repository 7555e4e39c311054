"""An embedding cache keyed by (encoder key, text hash), so no stage encodes a text twice.

Layout: `<cache>/<encoder key>/part-*.parquet`, columns `text_hash` (string) and `embedding`
(fixed-size list of float32), at most PART_ROWS rows each in row groups of GROUP_ROWS; beside them
`<cache>/openvino/<conversion key>/model.{xml,bin}`, each encoder's OpenVINO conversion (made once). New
vectors go to new part files written atomically, so a crash mid-write loses at most that batch
and never corrupts what was cached before. The cache is a side store, not a pipeline output:
deleting it only costs encoding time.

Lookups read each part's hash column once per process (an index: the hashes sorted as 40-byte
strings, 48 bytes a cached vector) and then only the row groups holding wanted vectors, so a
lookup's memory is the vectors it returns plus one row group, not the whole cache.
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


def converted_cache(cache: Path | None) -> Path | None:
    """Where the stages keep OpenVINO conversions: in the embedding cache, which is as disposable."""
    return None if cache is None else Path(cache) / "openvino"


def text_hash(text: str) -> str:
    """SHA-1 of the UTF-8 text: the cache key of one text."""
    return hashlib.sha1(text.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Encoded:
    vectors: np.ndarray  # (n_texts, dim) float32 unit vectors, in input order
    n_encoded: int  # texts that were not in the cache (unique texts actually run through the model)


@dataclass
class _FolderIndex:
    """Where each cached vector of one encoder folder lives: its hashes sorted as fixed-width bytes,
    with (part number, row) alongside; 48 bytes a vector (a dict of str keys took ~220)."""

    parts: list[Path] = field(default_factory=list)
    keys: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype="S40"))  # sorted text hashes
    where: np.ndarray = field(default_factory=lambda: np.zeros((0, 2), dtype=np.int32))  # (part, row) per key

    def refresh(self, folder: Path) -> None:
        """Index the parts written since the last look (by any process): their hash column only."""
        if any(not part.is_file() for part in self.parts):  # the cache was cleared: start over
            self.parts, self.keys, self.where = [], self.keys[:0], self.where[:0]
        known = set(self.parts)
        keys, where = [self.keys], [self.where]
        for part in sorted(folder.glob("part-*.parquet")):
            if part not in known:
                hashes = pq.read_table(part, columns=["text_hash"]).column("text_hash").to_numpy()
                keys.append(hashes.astype("S40"))
                where.append(np.stack([np.full(len(hashes), len(self.parts)), np.arange(len(hashes))], axis=1))
                self.parts.append(part)
        if len(keys) > 1:
            keys, where = np.concatenate(keys), np.concatenate(where).astype(np.int32)
            order = np.argsort(keys, kind="stable")  # a text cached twice: its first copy is found
            self.keys, self.where = keys[order], where[order]

    def find(self, digests: np.ndarray) -> np.ndarray:
        """Position in `keys` of each digest (S40), -1 where it is not cached."""
        at = np.searchsorted(self.keys, digests)
        found = at < len(self.keys)
        found[found] = self.keys[at[found]] == digests[found]
        return np.where(found, at, -1)

    def read(self, positions: np.ndarray, dim: int) -> np.ndarray:
        """(len(positions), dim) vectors at `find` positions, one row group at a time."""
        out = np.zeros((len(positions), dim), dtype=np.float32)
        part, row = self.where[positions].T
        group = part.astype(np.int64) * (PART_ROWS // GROUP_ROWS + 1) + row // GROUP_ROWS
        order = np.argsort(group, kind="stable")
        bounds = np.flatnonzero(np.diff(group[order])) + 1
        for rows in np.split(order, bounds) if len(order) else []:  # the out rows of one row group
            number, first = int(part[rows[0]]), int(row[rows[0]]) // GROUP_ROWS
            column = pq.ParquetFile(self.parts[number]).read_row_group(first, columns=["embedding"]).column(0)
            vectors = column.combine_chunks().flatten().to_numpy().reshape(-1, dim)  # (GROUP_ROWS, dim)
            out[rows] = vectors[row[rows] % GROUP_ROWS]
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


def encode_cached(encoder: Encoder, texts: Sequence[str], cache: Path | None) -> Encoded:
    """Embeddings of `texts`, reading what `cache` holds for this encoder and adding the rest (a long
    encoding writes progress lines, papersim.progress)."""
    hashes = np.array([text_hash(text) for text in texts], dtype="S40")
    index = _FolderIndex()
    if cache is not None:
        folder = (Path(cache) / encoder.key).resolve()
        index = _INDEXES.setdefault(folder, _FolderIndex())
        index.refresh(folder)
    at = index.find(hashes)
    missing: dict[bytes, str] = {}  # hash -> text of what must be encoded, each text once
    for i in np.flatnonzero(at < 0).tolist():
        missing.setdefault(hashes[i], texts[i])
    vectors = np.zeros((len(texts), encoder.dim), dtype=np.float32)
    cached = np.flatnonzero(at >= 0)
    if len(cached):  # read before adding parts: a refresh re-sorts the index and moves the positions
        vectors[cached] = index.read(at[cached], encoder.dim)
    fresh = encoder.encode(list(missing.values())) if missing else None  # (n_missing, dim)
    if fresh is not None and cache is not None:
        _write_parts(folder, [digest.decode() for digest in missing], fresh)
        index.refresh(folder)
    if fresh is not None:
        position = {digest: i for i, digest in enumerate(missing)}
        new = np.flatnonzero(at < 0)
        vectors[new] = fresh[[position[hashes[i]] for i in new.tolist()]]
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
    encoder = load_text_encoder(folder, backend, max_seq_length, batch_size, converted_cache(cache))
    return CachedEmbedder(with_engine(encoder, folder, max_seq_length, EncodingEngine.of(engine)), cache)
