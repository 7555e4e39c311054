"""Encoding on a real local Ray cluster (`ray start --head` on 127.0.0.1, 2 CPUs, its own process
group, stopped by PID): the same vectors as local encoding, and the same embedding cache."""

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil
import pytest

from papersim.encoders.cache import cached_embedder, encode_cached
from papersim.encoders.encode import load_text_encoder
from papersim.encoders.engine import EncodingEngine, RayEncoder, with_engine
from papersim.errors import PapersimError

ray = pytest.importorskip("ray", reason="papersim[ray] is installed by the test command")  # noqa: F841

TEXTS = [f"Paper {i} on {topic}." for i in range(40)
         for topic in ("supersonic flutter", "graph networks", "speech")][:100]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ray_cluster(tmp_path_factory):
    """A head node with 2 CPUs in its own process group; its address."""
    port = _free_port()
    ray_bin = Path(sys.executable).with_name("ray")
    temp = tmp_path_factory.mktemp("ray")
    # A home of its own: Ray keeps an auth token in ~/.ray, and one left there by another Ray
    # instance makes the head require a token this driver does not send.
    home = tmp_path_factory.mktemp("ray-home")
    isolation = pytest.MonkeyPatch()
    isolation.setenv("HOME", str(home))
    isolation.setenv("RAY_AUTH_MODE", "disabled")
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    proc = subprocess.Popen([str(ray_bin), "start", "--head", "--block", "--node-ip-address=127.0.0.1",
                             f"--port={port}", "--num-cpus=2", "--num-gpus=0", "--include-dashboard=false",
                             "--disable-usage-stats", f"--temp-dir={temp}"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    address = f"127.0.0.1:{port}"
    try:
        deadline = time.time() + 120
        while True:  # the GCS answers on its port once the head is up
            assert proc.poll() is None, "ray start exited"
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.time() < deadline, "the Ray head did not start in 120 s"
                time.sleep(0.5)
        assert _cluster_processes(temp), "the cluster's processes name its session folder"
        yield address
    finally:
        import ray as ray_module

        ray_module.shutdown()
        isolation.undo()
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=5)  # `ray start --block` itself may not exit on SIGTERM (seen: 30 s): its group is killed
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        deadline = time.time() + 30  # workers run in sessions of their own: they exit when the raylet is gone
        while _cluster_processes(temp) and time.time() < deadline:
            time.sleep(0.5)
        assert _cluster_processes(temp) == [], "Ray processes outlived the cluster"


def _cluster_processes(temp: Path) -> list[int]:
    """Live processes of the cluster whose session lives under `temp`."""
    found = []
    for p in psutil.process_iter(["pid", "cmdline", "status"]):
        try:
            if p.info["status"] != psutil.STATUS_ZOMBIE and str(temp) in " ".join(p.info["cmdline"] or []):
                found.append(p.info["pid"])
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


def test_two_ray_actors_encode_like_this_process_and_fill_the_same_cache(ray_cluster, tiny_model_dir, tmp_path):
    settings = EncodingEngine(engine="ray", ray_address=ray_cluster, ray_actors=2)
    local = load_text_encoder(str(tiny_model_dir), "torch", 32, 8)
    remote = with_engine(local, str(tiny_model_dir), 32, settings)
    assert isinstance(remote, RayEncoder) and remote.key == local.key  # one cache for both

    expected = local.encode(TEXTS)  # (100, 32)
    got = remote.encode(TEXTS)
    cosine = np.sum(expected * got, axis=1)
    assert got.shape == expected.shape and cosine.min() >= 0.9999

    embed = cached_embedder(str(tiny_model_dir), "torch", 32, 8, tmp_path / "cache", settings)
    first = encode_cached(embed.encoder, TEXTS, tmp_path / "cache")
    assert first.n_encoded == len(set(TEXTS))
    again = encode_cached(local, TEXTS, tmp_path / "cache")  # this process reads what the actors wrote
    assert again.n_encoded == 0 and np.sum(again.vectors * expected, axis=1).min() >= 0.9999


def test_an_unknown_engine_is_a_config_error():
    with pytest.raises(ValueError, match="engine must be one of local, ray"):
        EncodingEngine(engine="spark").check_engine()


def test_ray_missing_is_a_clear_error(monkeypatch, tiny_model_dir):
    monkeypatch.setitem(sys.modules, "ray", None)  # as if papersim[ray] were not installed
    local = load_text_encoder(str(tiny_model_dir), "torch", 32, 8)
    with pytest.raises(PapersimError, match=r"pip install 'papersim\[ray\]'"):
        with_engine(local, str(tiny_model_dir), 32, EncodingEngine(engine="ray"))
