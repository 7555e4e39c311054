"""Weight-space merging: a = 0 serves the base model, a = 1 the trained one, in between the weighted average."""

import numpy as np
import pytest
import torch

from papersim.encoders.load import load_encoder, save_tiny_encoder
from papersim.errors import PapersimError
from papersim.training.merge import merge_weights

TEXTS = ["Wing flutter at supersonic speed.", "Message passing in graph neural networks."]


@pytest.fixture(scope="module")
def two_models(tiny_model_dir, tmp_path_factory):
    other = save_tiny_encoder(tmp_path_factory.mktemp("tiny-model-seed-1"), seed=1)
    return load_encoder(str(tiny_model_dir), 32), load_encoder(str(other), 32)


def test_the_end_weights_give_either_models_embeddings(two_models):
    base, trained = two_models
    assert not np.allclose(base.encode(TEXTS), trained.encode(TEXTS))  # the check below can tell them apart
    np.testing.assert_array_equal(merge_weights(base, trained, 0.0).encode(TEXTS), base.encode(TEXTS))
    np.testing.assert_array_equal(merge_weights(base, trained, 1.0).encode(TEXTS), trained.encode(TEXTS))


def test_half_way_is_the_parameter_average_and_leaves_both_models_untouched(two_models):
    base, trained = two_models
    before = {k: v.clone() for k, v in base.state_dict().items()}
    merged = merge_weights(base, trained, 0.5).state_dict()
    for key, value in base.state_dict().items():
        if value.is_floating_point():
            torch.testing.assert_close(merged[key], (value + trained.state_dict()[key]) / 2)
        else:  # token position ids: not weights
            assert torch.equal(merged[key], value)
        assert torch.equal(value, before[key])


def test_models_of_different_shapes_or_weights_out_of_range_are_refused(two_models, tmp_path):
    base, _ = two_models
    wider = load_encoder(str(save_tiny_encoder(tmp_path, dim=16)), 32)
    with pytest.raises(PapersimError, match=r"`0\.model\.embeddings\.word_embeddings\.weight` has shape "
                                            r"\(\d+, 32\) in the base model and \(\d+, 16\)"):
        merge_weights(base, wider, 0.5)
    with pytest.raises(PapersimError, match=r"must be in \[0, 1\].*got 1.5"):
        merge_weights(base, base, 1.5)
