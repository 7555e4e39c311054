"""A paper as the encoder sees it: truncated, or in windows cut at the tokenizer's offsets and mean-pooled."""

import numpy as np
import pytest

from papersim.encoders.load import base_model_path
from papersim.encoders.windows import PaperView, pool_windows, split_windows, windowed_embed


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(base_model_path()))


def test_windows_are_slices_of_the_text_of_at_most_the_model_s_length(tokenizer):
    long = " ".join(f"word{i} about flutter" for i in range(200))  # ~1,000 word pieces
    short = "Wing flutter at supersonic speed."
    slices, owner = split_windows([long, short], tokenizer, 64, 3)
    assert owner.tolist() == [0, 0, 0, 1]  # the long text cut to 3 windows; the short one whole
    assert slices[3] == short
    for piece in slices[:3]:
        assert piece in long and len(tokenizer(piece, add_special_tokens=False)["input_ids"]) <= 62
    assert long.startswith(slices[0]) and long.index(slices[1]) > len(slices[0]) - 1  # consecutive, in order


def test_pooled_vectors_are_the_mean_of_a_paper_s_windows_at_unit_length():
    vectors = np.array([[1, 0], [0, 1], [1, 0]], dtype=np.float32)  # (n_slices, dim)
    pooled = pool_windows(vectors, np.array([0, 0, 1]), 2)
    assert np.allclose(pooled, [[2 ** -0.5, 2 ** -0.5], [1, 0]])


def test_a_windowed_view_embeds_every_window_and_a_truncated_one_is_the_encoder_itself(tokenizer):
    seen = []

    def embed(texts):  # records what the encoder was asked for; one-hot by window count so far
        seen.extend(texts)
        return np.eye(8, dtype=np.float32)[np.arange(len(texts)) % 8]

    assert windowed_embed(embed, base_model_path(), PaperView(256, 1)) is embed
    long = " ".join(["flutter of swept wings"] * 120)  # ~480 word pieces: 2 windows of 254
    vectors = windowed_embed(embed, base_model_path(), PaperView(256, 4))([long, "short"])
    assert len(seen) == 3 and vectors.shape == (2, 8)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1)


def test_views_parse_from_their_params_names_and_reject_nonsense():
    assert PaperView.parse("256") == PaperView(256, 1) and PaperView.parse("128x4") == PaperView(128, 4)
    assert PaperView.parse(PaperView(128, 4).label()) == PaperView(128, 4)
    assert PaperView.from_dict(PaperView(256, 3).to_dict()) == PaperView(256, 3)
    for bad in ("many", "0", "256x0", "1024"):
        with pytest.raises(ValueError, match="tokens"):
            PaperView.parse(bad)
