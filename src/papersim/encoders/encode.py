"""Turning texts into L2-normalised embeddings, with a choice of inference backend.

`torch` runs the sentence-transformers model as trained (CUDA when present, fp32 on a CPU).
`openvino` converts the same weights to OpenVINO, which runs matmuls in bf16 on
CPUs with AVX512-BF16/AMX and in fp32 elsewhere: about 2x the docs/s of torch on 2 CPU
cores with cosine >= 0.9999 to the fp32 vectors (benchmarks/encode.py). `auto` picks
openvino on a CPU and torch on a GPU. Given a folder (`converted_cache`; the stages pass
`<embedding cache>/openvino`), a model is converted once per weights fingerprint and read
back from there by every later load, in any process. Such a load needs neither torch's model nor
sentence-transformers (~8 s to import and load on 2 cores): the converted model and the tokenizer
are read on the first batch, so a stage whose vectors are all in the embedding cache loads nothing.

A text's vector depends on the text alone, never on the texts batched with it: each text is padded to
`padded_width` of its own token count. Padded to the longest text of its batch instead, the same text got
other float bits in another batch (up to 9e-4 per component in bf16, 2e-7 in fp32), so what the embedding
cache held decided which negatives were mined and the 4th decimal of evaluate's metrics. The number of
texts in a batch and the thread count change no bit (OpenVINO on CPU, tested 1 to 64 rows, 1 and 2 threads).
"""

import hashlib
import json
import logging
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from papersim.atomic import atomic_outputs
from papersim.encoders.load import base_model_path, load_encoder
from papersim.env import apply_offline_defaults
from papersim.errors import PapersimError
from papersim.progress import Heartbeat, track

BACKENDS = ("auto", "torch", "openvino")
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


def model_folder(path: str) -> Path:
    """The model folder: `path`, or the packaged all-MiniLM-L6-v2 for ""."""
    return Path(path) if path else base_model_path()


def model_fingerprint(path: str) -> str:
    """SHA-256 of the model's weight files and configs: equal fingerprints mean equal vectors."""
    folder = model_folder(path)
    files = [folder / name for name in WEIGHT_FILES if (folder / name).is_file()]
    if not files:
        raise PapersimError(f"{folder}: no model weights ({' or '.join(WEIGHT_FILES)}); run the train stage first")
    digest = hashlib.sha256()
    for file in files + sorted(folder.glob("*.json")) + sorted(folder.glob("[0-9]_*/*.json")):
        digest.update(file.name.encode())
        with open(file, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()[:32]


@dataclass(frozen=True)
class Encoder:
    """Texts -> (n, dim) float32 unit vectors; `key` names the vectors it produces (for caching)."""

    key: str  # fingerprint + backend + sequence length: vectors with one key are interchangeable
    fingerprint: str  # the weights' hash (model_fingerprint)
    backend: str  # the backend actually used ("torch" or "openvino")
    dim: int
    encode_batch: Callable[[list[str]], np.ndarray]  # one batch of texts -> (batch, dim) unit vectors
    batch_size: int
    converted_cache: Path | None = None  # where OpenVINO conversions are kept (None: converted in memory)

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """(len(texts), dim) unit vectors; longest texts first so batches pad little. A long encoding writes
        progress lines (papersim.progress; the caller names the texts with `working_on`)."""
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        order = np.argsort([-len(text) for text in texts], kind="stable")
        batches = (order[start:start + self.batch_size] for start in range(0, len(texts), self.batch_size))
        for rows in track(batches, "encoding", total=len(texts), unit="texts", size=len):
            out[rows] = self.encode_batch([texts[i] for i in rows])
        return out


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def _is_mean_pooling(model) -> bool:
    """OpenVINO path re-implements the pooling: only mean pooling over a plain transformer."""
    from sentence_transformers.models import Normalize, Pooling, Transformer

    modules = list(model)
    kinds = [type(module) for module in modules]
    if kinds[:2] != [Transformer, Pooling] or any(kind is not Normalize for kind in kinds[2:]):
        return False
    return modules[1].pooling_mode == "mean"


def _normalise(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return (vectors / np.maximum(norms, 1e-12)).astype(np.float32)


PAD_MULTIPLE = 16  # padded widths are multiples of 16 tokens: at most 15 padding tokens a text


def padded_width(tokens: int, max_seq_length: int) -> int:
    """The width a text of `tokens` tokens is padded to: a function of its own length only, so that its
    vector does not depend on the texts batched with it (the padded width changes the kernels' blocking)."""
    return min(max_seq_length, -(-max(tokens, 1) // PAD_MULTIPLE) * PAD_MULTIPLE)


def _by_width(tokenizer, texts: list[str], max_seq_length: int) -> Iterator[tuple[int, np.ndarray]]:
    """(padded width, positions in `texts`) of each group of texts padded to the same width."""
    lengths = [len(ids) for ids in tokenizer(texts, truncation=True, max_length=max_seq_length)["input_ids"]]
    widths = np.array([padded_width(n, max_seq_length) for n in lengths])
    for width in np.unique(widths).tolist():
        yield width, np.flatnonzero(widths == width)


def _torch_batch(model) -> Callable[[list[str]], np.ndarray]:
    def encode_batch(texts: list[str]) -> np.ndarray:
        out = np.zeros((len(texts), model.get_embedding_dimension()), dtype=np.float32)
        for width, rows in _by_width(model.tokenizer, texts, model.max_seq_length):
            out[rows] = model.encode([texts[i] for i in rows], batch_size=len(rows), convert_to_numpy=True,
                                     show_progress_bar=False,
                                     processing_kwargs={"text": {"padding": "max_length", "max_length": width}})
        return _normalise(out)

    return encode_batch


def _block_openvino_telemetry() -> None:
    """OpenVINO's converter sends usage telemetry unless a consent file in $HOME says no; without
    its telemetry module importable it falls back to its own no-op stub."""
    import sys

    sys.modules.setdefault("openvino_telemetry", None)


CONVERSION_FORMAT = 1  # part of a converted model's key: bump when the conversion changes


def conversion_key(fingerprint: str) -> str:
    """Names one converted model: the weights, and the converter and tracer versions that made it."""
    from importlib.metadata import version

    parts = [CONVERSION_FORMAT, fingerprint, version("openvino"), version("torch"), version("transformers")]
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:24]


class _DropMessages(logging.Filter):
    def __init__(self, *fragments: str) -> None:
        super().__init__()
        self.fragments = fragments

    def filter(self, record: logging.LogRecord) -> bool:
        return not any(fragment in record.getMessage() for fragment in self.fragments)


@contextmanager
def _quiet_tracing() -> Iterator[None]:
    """Silence, for the trace only and by message, what tracing a sentence encoder makes torch and
    transformers print: nothing in it concerns a papersim user or is theirs to act on.

    - TracerWarning "Converting a tensor to a Python boolean...": transformers' mask and attention
      code branches on shapes (`padding_length > 0`, `is_causal = q_length > 1 and ...`); an encoder
      takes the same branch for every input (no causal mask), so the traced graph is right for all.
    - FutureWarning "`is_gradient_checkpointing` is deprecated" and the log line "`loss_type=None` was
      set in the config ... `ForCausalLMLoss`": the tracer reads every property of the module, and
      these two properties complain when read; an encoder neither checkpoints nor computes a loss here.
    Other warnings, papersim's own among them, still show; the filters end with the block.
    """
    notice = _DropMessages("`loss_type=", "Using the default loss: `ForCausalLMLoss`")
    logger = logging.getLogger("transformers.modeling_utils")
    logger.addFilter(notice)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Converting a tensor to a Python boolean might cause the trace")
            warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated")
            yield
    finally:
        logger.removeFilter(notice)


def _convert(model, max_seq_length: int):
    """The transformer of `model` as an OpenVINO model (dynamic batch and sequence length)."""
    import openvino as ov
    import torch

    transformer = model[0].auto_model.eval()
    example = model.tokenizer(["an example"], padding=True, truncation=True, max_length=max_seq_length,
                              return_tensors="pt")
    with torch.no_grad(), _quiet_tracing():
        # Traced here rather than by ov.convert_model, which re-runs the trace to check it (~5 s a model).
        traced = torch.jit.trace(transformer, example_kwarg_inputs=dict(example), check_trace=False, strict=False)
        return ov.convert_model(traced)


def _read_conversion(converted_cache: Path, fingerprint: str):
    """The OpenVINO model converted earlier from these weights, or None (not converted, or damaged files
    after a disk error: the caller converts again and replaces them)."""
    _block_openvino_telemetry()
    import openvino as ov

    folder = Path(converted_cache) / conversion_key(fingerprint)
    if not ((folder / "model.xml").is_file() and (folder / "model.bin").is_file()):
        return None
    try:
        return ov.Core().read_model(str(folder / "model.xml"))
    except RuntimeError:
        return None


def _openvino_model(model, max_seq_length: int, fingerprint: str, converted_cache: Path | None):
    """The converted model: read from `converted_cache`/<conversion key> when converted before, else
    converted now and (with a cache) saved there atomically, so a killed save leaves nothing half-written."""
    import openvino as ov

    if converted_cache is None:
        return _convert(model, max_seq_length)
    converted = _read_conversion(converted_cache, fingerprint)
    if converted is not None:
        return converted
    converted = _convert(model, max_seq_length)
    with atomic_outputs(Path(converted_cache) / conversion_key(fingerprint)) as (tmp,):
        ov.save_model(converted, str(tmp / "model.xml"), compress_to_fp16=False)  # fp32 as converted: same vectors
    return converted


def _openvino_batch(model, max_seq_length: int, fingerprint: str,
                    converted_cache: Path | None = None) -> Callable[[list[str]], np.ndarray]:
    _block_openvino_telemetry()
    return _compiled_batch(_openvino_model(model, max_seq_length, fingerprint, converted_cache), model.tokenizer,
                           max_seq_length)


def _compiled_batch(converted, tokenizer, max_seq_length: int) -> Callable[[list[str]], np.ndarray]:
    """One batch of texts -> mean-pooled unit vectors, on the OpenVINO model `converted`."""
    import openvino as ov

    compiled = ov.Core().compile_model(converted, "CPU")
    # A traced graph's inputs are named after forward()'s arguments, sometimes with a suffix ("attention_mask.1").
    names = [port.any_name.split(".")[0] for port in compiled.inputs]

    requests = threading.local()  # an infer request serves one call at a time: one per thread (a server's pool)

    def encode_batch(texts: list[str]) -> np.ndarray:
        texts = [text.strip() for text in texts]
        if not hasattr(requests, "request"):
            requests.request = compiled.create_infer_request()
        positions, pooled = [], []
        for width, rows in _by_width(tokenizer, texts, max_seq_length):
            tokens = tokenizer([texts[i] for i in rows], padding="max_length", truncation=True, max_length=width,
                               return_tensors="np")
            hidden = requests.request.infer([tokens[name] for name in names])[0]  # (rows, width, dim)
            mask = tokens["attention_mask"][..., None].astype(np.float32)  # (rows, width, 1)
            positions.append(rows)
            pooled.append((hidden * mask).sum(axis=1) / np.maximum(mask.sum(axis=1), 1.0))  # (rows, dim)
        out = np.empty_like(np.concatenate(pooled))
        out[np.concatenate(positions)] = np.concatenate(pooled)
        return _normalise(out)

    return encode_batch


class _OnFirstBatch:
    """A batch encoder built by `build()` when the first batch arrives (once, whichever thread asks)."""

    def __init__(self, build: Callable[[], Callable[[list[str]], np.ndarray]]) -> None:
        self._build, self._encode, self._lock = build, None, threading.Lock()

    def __call__(self, texts: list[str]) -> np.ndarray:
        if self._encode is None:
            with self._lock:
                if self._encode is None:
                    self._encode = self._build()
        return self._encode(texts)


def _converted_encoder(path: str, fingerprint: str, max_seq_length: int, batch_size: int,
                       converted_cache: Path) -> "Encoder | None":
    """The OpenVINO encoder of an earlier conversion in `converted_cache` (only mean-pooling models are
    converted), its tokenizer and compiled model loaded on the first batch; None without one."""
    converted = _read_conversion(converted_cache, fingerprint)
    if converted is None:
        return None
    dim = converted.outputs[0].get_partial_shape()[2]
    if not dim.is_static:
        return None

    def build() -> Callable[[list[str]], np.ndarray]:
        from transformers import AutoTokenizer  # the tokenizer sentence-transformers loads from the same folder

        return _compiled_batch(converted, AutoTokenizer.from_pretrained(str(model_folder(path))), max_seq_length)

    return Encoder(key=encoder_key(fingerprint, "openvino", max_seq_length), fingerprint=fingerprint,
                   backend="openvino", dim=dim.get_length(), encode_batch=_OnFirstBatch(build),
                   batch_size=batch_size, converted_cache=converted_cache)


VECTORS_FORMAT = 2  # part of every encoder key: bump when the same weights give other vectors (2: padded_width)


def encoder_key(fingerprint: str, backend: str, max_seq_length: int) -> str:
    """Names the vectors of one model on one backend at one sequence length (the embedding cache's folder)."""
    parts = [fingerprint, backend, max_seq_length, VECTORS_FORMAT]
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:24]


def load_text_encoder(path: str, backend: str = "auto", max_seq_length: int = 128, batch_size: int = 32,
                      converted_cache: Path | None = None) -> Encoder:
    """An Encoder for the model at `path` ("" = packaged base model) on the chosen backend; OpenVINO
    conversions are kept in (and read from) `converted_cache` when given."""
    if backend not in BACKENDS:
        raise PapersimError(f"unknown encoder backend {backend!r}: use one of {', '.join(BACKENDS)}")
    apply_offline_defaults()
    fingerprint = model_fingerprint(path)
    if converted_cache is not None and (backend == "openvino" or backend == "auto" and not _cuda_available()):
        converted = _converted_encoder(path, fingerprint, max_seq_length, batch_size, converted_cache)
        if converted is not None:
            return converted
    with Heartbeat(f"loading the encoder at {model_folder(path)}"):  # tens of seconds on 2 cores with a conversion
        model = load_encoder(path, max_seq_length)
        if backend == "auto":
            backend = "torch" if _cuda_available() or not _is_mean_pooling(model) else "openvino"
        if backend == "openvino":
            if not _is_mean_pooling(model):
                raise PapersimError(f"{model_folder(path)}: the openvino backend supports mean-pooling models only; "
                                    "use backend: torch")
            encode_batch = _openvino_batch(model, max_seq_length, fingerprint, converted_cache)
        else:
            encode_batch = _torch_batch(model)
    key = encoder_key(fingerprint, backend, max_seq_length)
    return Encoder(key=key, fingerprint=fingerprint, backend=backend, dim=model.get_embedding_dimension(),
                   encode_batch=encode_batch, batch_size=batch_size, converted_cache=converted_cache)
