"""Encoder backends on the tiny model: same vectors from torch and OpenVINO, keys that follow the weights,
OpenVINO conversions made once and read back, a quiet conversion."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from papersim.encoders import encode
from papersim.encoders.encode import conversion_key, load_text_encoder, model_fingerprint
from papersim.encoders.load import save_tiny_encoder
from papersim.errors import PapersimError

TEXTS = ["wing flutter at supersonic speed", "contrastive learning of paper embeddings",
         "a much longer text about boundary layers, heat transfer and the flow over swept wings " * 3, "x"]


def test_torch_and_openvino_give_the_same_unit_vectors(tiny_model_dir):
    torch_enc = load_text_encoder(str(tiny_model_dir), "torch", max_seq_length=64, batch_size=2)
    ov_enc = load_text_encoder(str(tiny_model_dir), "openvino", max_seq_length=64, batch_size=3)
    a, b = torch_enc.encode(TEXTS), ov_enc.encode(TEXTS)  # (4, 32) each
    assert a.shape == b.shape == (4, 32) and a.dtype == b.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(b, axis=1), 1.0, atol=1e-5)
    assert (a * b).sum(axis=1).min() > 0.999  # bf16 matmuls where the CPU has them, fp32 elsewhere
    assert ov_enc.backend == "openvino" and torch_enc.key != ov_enc.key  # vectors of two backends never mix
    assert torch_enc.fingerprint == ov_enc.fingerprint


@pytest.mark.parametrize("backend", ["torch", "openvino"])
def test_a_texts_vector_has_the_same_bits_whatever_it_is_batched_with(tmp_path, backend):
    # What the embedding cache already holds decides which texts are encoded together: no vector may change
    # with it, or the mined negatives and evaluate's metrics would depend on the cache. 128 dimensions: at
    # 32 the kernels' blocking hides the padding's effect that 128 and MiniLM's 384 show.
    enc = load_text_encoder(str(save_tiny_encoder(tmp_path, dim=128)), backend, max_seq_length=64, batch_size=2)
    together = enc.encode(TEXTS)  # (4, 128)
    assert np.array_equal(enc.encode(TEXTS[::-1])[::-1], together)
    assert np.array_equal(np.concatenate([enc.encode([text]) for text in TEXTS]), together)


def test_fingerprint_follows_the_weights(tiny_model_dir, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(tiny_model_dir, copy)
    assert model_fingerprint(str(copy)) == model_fingerprint(str(tiny_model_dir))
    weights = copy / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1  # one flipped bit in the last weight
    weights.write_bytes(bytes(data))
    assert model_fingerprint(str(copy)) != model_fingerprint(str(tiny_model_dir))


def test_bad_backend_and_missing_weights_are_clear_errors(tiny_model_dir, tmp_path):
    with pytest.raises(PapersimError, match="unknown encoder backend 'onnx'"):
        load_text_encoder(str(tiny_model_dir), "onnx")
    with pytest.raises(PapersimError, match="no model weights"):
        load_text_encoder(str(tmp_path))


# Run in a fresh interpreter, as a stage runs: OpenVINO picks its telemetry module once, at its first import.
NO_TELEMETRY_PROBE = """
import sys, urllib.request
from pathlib import Path

def record(request, *args, **kwargs):  # OpenVINO's telemetry posts through urlopen, from a forked sender
    with open(Path(sys.argv[2]) / "requests.log", "a") as log:
        log.write(getattr(request, "full_url", str(request)) + "\\n")
    raise OSError("offline")

urllib.request.urlopen = record
from papersim.encoders.encode import load_text_encoder

print(load_text_encoder(sys.argv[1], "openvino", max_seq_length=16).encode(["wing flutter"]).shape)
"""


def test_openvino_conversion_sends_no_telemetry_and_writes_nothing_to_home(tiny_model_dir, tmp_path):
    home, spy = tmp_path / "home", tmp_path / "spy"
    home.mkdir()
    spy.mkdir()
    # No consent file in HOME and no CI variable: OpenVINO's own default would be to send.
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "TF_BUILD", "JENKINS_URL")} | {"HOME": str(home)}
    result = subprocess.run([sys.executable, "-c", NO_TELEMETRY_PROBE, str(tiny_model_dir), str(spy)],
                            check=False, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "(1, 32)"  # the converted model still encodes
    assert not (spy / "requests.log").exists()
    assert list(home.iterdir()) == []  # no consent folder, client id or usage counts


@pytest.mark.parametrize("backend", ["torch", "openvino"])
def test_concurrent_calls_from_a_server_pool_give_the_sequential_vectors(tiny_model_dir, backend):
    # A model server calls predict from a thread pool: one OpenVINO infer request cannot serve two calls.
    from concurrent.futures import ThreadPoolExecutor

    encoder = load_text_encoder(str(tiny_model_dir), backend, 32)
    texts = [f"query number {i} about wing flutter" for i in range(64)]
    sequential = np.vstack([encoder.encode([t]) for t in texts])
    with ThreadPoolExecutor(8) as pool:
        concurrent = np.vstack(list(pool.map(lambda t: encoder.encode([t]), texts)))
    np.testing.assert_allclose(concurrent, sequential, atol=1e-6)


def test_a_conversion_is_made_once_per_fingerprint_and_read_back_with_the_same_vectors(tiny_model_dir, tmp_path,
                                                                                       monkeypatch):
    cache = tmp_path / "openvino"
    in_memory = load_text_encoder(str(tiny_model_dir), "openvino", max_seq_length=64).encode(TEXTS)
    first = load_text_encoder(str(tiny_model_dir), "openvino", max_seq_length=64, converted_cache=cache)
    folder = cache / conversion_key(first.fingerprint)
    assert sorted(p.name for p in folder.iterdir()) == ["model.bin", "model.xml"]
    assert [p.name for p in cache.iterdir()] == [folder.name]  # no temporary sibling left behind

    def no_conversion(*args):
        raise AssertionError("converted again although the cache holds this model")

    with monkeypatch.context() as patch:
        patch.setattr(encode, "_convert", no_conversion)
        again = load_text_encoder(str(tiny_model_dir), "openvino", max_seq_length=32, converted_cache=cache)
        np.testing.assert_allclose(again.encode(TEXTS[:2]), first.encode(TEXTS[:2]), atol=1e-6)
    np.testing.assert_allclose(first.encode(TEXTS), in_memory, atol=1e-6)  # saved as converted (fp32, no fp16)

    other = tmp_path / "other-weights"  # other weights: another key, converted, not read from the first
    shutil.copytree(tiny_model_dir, other)
    data = bytearray((other / "model.safetensors").read_bytes())
    data[-1] ^= 1
    (other / "model.safetensors").write_bytes(bytes(data))
    assert load_text_encoder(str(other), "openvino", converted_cache=cache).fingerprint != first.fingerprint
    assert len(list(cache.iterdir())) == 2

    (folder / "model.xml").write_text("<not a model")  # damaged: converted again and replaced
    np.testing.assert_allclose(load_text_encoder(str(tiny_model_dir), "openvino", max_seq_length=64,
                                                 converted_cache=cache).encode(TEXTS), in_memory, atol=1e-6)
    assert (folder / "model.xml").read_text().startswith("<?xml")


CACHED_LOAD = """
import json, sys
from papersim.encoders.encode import load_text_encoder
encoder = load_text_encoder(sys.argv[1], sys.argv[2], max_seq_length=64, converted_cache=sys.argv[3])
loaded = "sentence_transformers" in sys.modules
vectors = encoder.encode(json.loads(sys.argv[4]))
print(json.dumps({"before": loaded, "after": "sentence_transformers" in sys.modules, "key": encoder.key,
                  "dim": encoder.dim, "backend": encoder.backend, "vectors": vectors.tolist()}))
"""


@pytest.mark.parametrize("backend", ["openvino", "auto"])
def test_a_cached_conversion_loads_without_sentence_transformers_and_encodes_the_same(tiny_model_dir, tmp_path,
                                                                                       backend):
    cache = tmp_path / "openvino"
    full = load_text_encoder(str(tiny_model_dir), "openvino", max_seq_length=64, converted_cache=cache)
    expected = full.encode(TEXTS)  # converted now, with the model loaded
    proc = subprocess.run([sys.executable, "-c", CACHED_LOAD, str(tiny_model_dir), backend, str(cache),
                           json.dumps(TEXTS)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    seen = json.loads(proc.stdout.strip().splitlines()[-1])
    assert seen["before"] is False and seen["after"] is False  # the conversion and the tokenizer were enough
    assert (seen["key"], seen["dim"], seen["backend"]) == (full.key, full.dim, "openvino")  # the same cache entries
    np.testing.assert_allclose(np.array(seen["vectors"]), expected, atol=1e-6)


# A fresh interpreter, as a stage: transformers prints its notices once per process.
QUIET_PROBE = """
import logging, sys, warnings
from papersim.encoders.encode import load_text_encoder

load_text_encoder(sys.argv[1], "openvino", max_seq_length=16).encode(["wing flutter"])
warnings.warn("papersim: a warning of our own")
logging.getLogger("transformers.modeling_utils").warning("another transformers notice")
"""


def test_conversion_prints_no_tracer_or_loss_type_notices_and_other_warnings_still_show(tiny_model_dir):
    result = subprocess.run([sys.executable, "-c", QUIET_PROBE, str(tiny_model_dir)], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr
    for noise in ("TracerWarning", "loss_type", "ForCausalLMLoss", "is_gradient_checkpointing"):
        assert noise not in result.stderr, result.stderr
    assert "papersim: a warning of our own" in result.stderr  # the filters end with the trace
    assert "another transformers notice" in result.stderr
