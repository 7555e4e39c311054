"""The embedding cache: texts are encoded once per encoder, new texts only."""

import numpy as np

from papersim.encoders.cache import cached_embedder, encode_cached
from papersim.encoders.encode import conversion_key, load_text_encoder


def test_second_call_encodes_nothing_and_returns_the_same_vectors(tiny_encoder, tmp_path):
    texts = [f"paper number {i} about wings" for i in range(10)]
    first = encode_cached(tiny_encoder, texts, tmp_path)
    second = encode_cached(tiny_encoder, texts, tmp_path)
    assert (first.n_encoded, second.n_encoded) == (10, 0)
    np.testing.assert_array_equal(first.vectors, second.vectors)
    np.testing.assert_allclose(first.vectors, tiny_encoder.encode(texts), atol=1e-6)


def test_only_new_texts_are_encoded_and_repeats_once(tiny_encoder, tmp_path):
    old = [f"paper number {i} about wings" for i in range(6)]
    encode_cached(tiny_encoder, old, tmp_path)
    new = ["a new paper on flutter", "another new paper", "a new paper on flutter"]
    result = encode_cached(tiny_encoder, old + new, tmp_path)
    assert result.n_encoded == 2
    np.testing.assert_array_equal(result.vectors[6], result.vectors[8])
    # cached and new vectors of one call, each in its place (new parts re-sort the hash index)
    np.testing.assert_allclose(result.vectors, tiny_encoder.encode(old + new), atol=1e-6)
    assert len(list((tmp_path / tiny_encoder.key).glob("part-*.parquet"))) == 2


def test_other_encoder_settings_do_not_share_vectors(tiny_encoder, tiny_model_dir, tmp_path):
    other = load_text_encoder(str(tiny_model_dir), "torch", max_seq_length=8, batch_size=4)
    encode_cached(tiny_encoder, ["some text"], tmp_path)
    assert encode_cached(other, ["some text"], tmp_path).n_encoded == 1


def test_without_a_cache_everything_is_encoded(tiny_encoder):
    assert encode_cached(tiny_encoder, ["a", "b", "a"], None).n_encoded == 2


def test_vectors_come_back_from_many_parts_and_row_groups(tiny_encoder, tmp_path, monkeypatch):
    import papersim.encoders.cache as cache_module

    monkeypatch.setattr(cache_module, "PART_ROWS", 7)  # 30 texts: 5 parts of up to 7 rows,
    monkeypatch.setattr(cache_module, "GROUP_ROWS", 3)  # each in row groups of 3
    texts = [f"paper {i} on supersonic flutter" for i in range(30)]
    first = encode_cached(tiny_encoder, texts, tmp_path)
    assert len(list((tmp_path / tiny_encoder.key).glob("part-*.parquet"))) == 5
    cache_module._INDEXES.clear()  # a new process: the index is rebuilt from the hash columns
    shuffled = texts[::-1] + texts[:4]
    again = encode_cached(tiny_encoder, shuffled, tmp_path)
    assert again.n_encoded == 0
    np.testing.assert_array_equal(again.vectors, first.vectors[[*range(29, -1, -1), 0, 1, 2, 3]])


def test_a_cleared_cache_is_filled_again(tiny_encoder, tmp_path):
    import shutil

    encode_cached(tiny_encoder, ["a text", "another"], tmp_path)
    shutil.rmtree(tmp_path / tiny_encoder.key)
    assert encode_cached(tiny_encoder, ["a text", "another"], tmp_path).n_encoded == 2


def test_the_openvino_conversion_is_kept_beside_the_vectors(tiny_model_dir, tmp_path):
    embed = cached_embedder(str(tiny_model_dir), "openvino", 32, 4, tmp_path / "cache")
    vectors = embed(["wing flutter", "boundary layers"])  # (2, 32)
    converted = tmp_path / "cache/openvino" / conversion_key(embed.encoder.fingerprint)
    assert (converted / "model.xml").is_file() and embed.encoder.converted_cache == tmp_path / "cache/openvino"
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == sorted([embed.encoder.key, "openvino"])
    again = cached_embedder(str(tiny_model_dir), "openvino", 32, 4, tmp_path / "cache")
    np.testing.assert_allclose(again(["wing flutter", "boundary layers"]), vectors, atol=1e-6)
