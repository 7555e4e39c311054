"""Weight-space merging of a fine-tuned encoder with the model it started from.

A fine-tuned model's gains on what it was trained for often survive a partial step back toward its
starting weights while the losses elsewhere shrink (WiSE-FT, Wortsman et al. 2022,
https://arxiv.org/abs/2109.01903; LM-Cocktail for embedding models, https://arxiv.org/abs/2311.13534).
"""

import copy

from papersim.errors import PapersimError


def merge_state(base: dict, trained: dict, a: float) -> dict:
    """(1 - a) * base + a * trained for every floating-point tensor; other tensors (token ids) are base's.

    Both state dicts must hold the same keys with the same shapes; a in [0, 1] (0: base, 1: trained)."""
    if not 0 <= a <= 1:
        raise PapersimError(f"merge weight a must be in [0, 1] (0: the base model, 1: the trained one), got {a}")
    for key in [*base, *(k for k in trained if k not in base)]:
        if key not in base or key not in trained:
            raise PapersimError(f"cannot merge: `{key}` is in the {'base' if key in base else 'trained'} model "
                                "only; merge a model with the one it was fine-tuned from")
        if base[key].shape != trained[key].shape:
            raise PapersimError(f"cannot merge: `{key}` has shape {tuple(base[key].shape)} in the base model and "
                                f"{tuple(trained[key].shape)} in the trained one; merge a model with the one it "
                                "was fine-tuned from")
    # (1 - a) * b + a * t rather than lerp: a = 0 and a = 1 give either model's weights bit for bit
    return {k: (1 - a) * b + a * trained[k].to(b) if b.is_floating_point() else b.clone()
            for k, b in base.items()}


def merge_weights(base, trained, a: float):
    """A new SentenceTransformer: `base`'s modules and settings with the weights `merge_state` gives."""
    merged = copy.deepcopy(base)
    merged.load_state_dict(merge_state(base.state_dict(), trained.state_dict(), a))
    return merged
