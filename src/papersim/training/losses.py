"""A contrastive loss that knows which papers are listed together.

In-batch negatives (MultipleNegativesRankingLoss) treat every other pair's positive as a negative.
On a listing site that is often wrong: two pairs drawn from the same listing page put papers of one
page in a batch as each other's negatives, and the loss then pushes apart exactly what the page says
belongs together (seen here: the loss sat at ln(batch) and co-listing precision fell). Here each row
carries its papers' co-listing group codes; an in-batch candidate that shares a group with the anchor
is left out of the softmax (neither positive nor negative), as GISTEmbed masks a guide model's false
negatives. Paper-to-paper similarity is symmetric, so both directions count (anchor -> positives and
positive -> anchors), averaged.
"""

import torch
from torch import Tensor, nn

NO_GROUP = -1  # padding of a row's group codes
MAX_GROUPS = 8  # group codes kept per row (anchor's and positive's); a paper on more pages is rare


def shared_group_mask(codes: Tensor) -> Tensor:
    """(batch, batch) True where rows i and j share a group code; codes (batch, width), NO_GROUP-padded."""
    same = codes[:, None, :, None] == codes[None, :, None, :]  # (batch, batch, width, width)
    real = (codes >= 0)[:, None, :, None]
    return (same & real).flatten(2).any(-1)


def masked_ranking_loss(anchors: Tensor, positives: Tensor, codes: Tensor, scale: float,
                        negatives: Tensor | None = None) -> Tensor:
    """Symmetric in-batch softmax cross-entropy over cosine scores, co-listed candidates masked.

    anchors, positives (batch, dim); negatives (batch * n, dim) or None; codes (batch, width).
    """
    a = nn.functional.normalize(anchors, dim=-1)
    p = nn.functional.normalize(positives, dim=-1)
    batch = a.shape[0]
    target = torch.arange(batch, device=a.device)
    masked = shared_group_mask(codes) & ~torch.eye(batch, dtype=torch.bool, device=a.device)  # (batch, batch)
    forward = (a @ p.T) * scale  # (batch, batch): anchor i against every positive
    backward = (p @ a.T) * scale  # (batch, batch): positive i against every anchor
    forward = forward.masked_fill(masked, float("-inf"))
    backward = backward.masked_fill(masked, float("-inf"))
    if negatives is not None:
        n = nn.functional.normalize(negatives, dim=-1)
        forward = torch.cat([forward, (a @ n.T) * scale], dim=1)  # (batch, batch + batch * n)
    return (nn.functional.cross_entropy(forward, target) + nn.functional.cross_entropy(backward, target)) / 2


class CoListingLoss(nn.Module):
    """sentence-transformers loss over (anchor, positive[, negative_1..n], label) rows, label being the
    row's co-listing group codes (`group_codes`)."""

    def __init__(self, model, scale: float = 20.0):  # 20: MultipleNegativesRankingLoss' scale (temperature 0.05)
        super().__init__()
        self.model = model
        self.scale = scale

    def forward(self, sentence_features, labels: Tensor) -> Tensor:
        embeddings = [self.model(features)["sentence_embedding"] for features in sentence_features]
        negatives = torch.cat(embeddings[2:]) if len(embeddings) > 2 else None
        return masked_ranking_loss(embeddings[0], embeddings[1], labels, self.scale, negatives)

    @property
    def citation(self) -> str:
        return "GISTEmbed (Solatorio 2024) for masking in-batch false negatives"


def group_codes(anchor_groups: list[list[str]], positive_groups: list[list[str]],
                width: int = MAX_GROUPS) -> list[list[int]]:
    """Per row, integer codes of the groups of its anchor and positive papers, NO_GROUP-padded to `width`."""
    vocabulary: dict[str, int] = {}
    rows = []
    for anchor, positive in zip(anchor_groups, positive_groups):
        codes = [vocabulary.setdefault(g, len(vocabulary)) for g in dict.fromkeys([*anchor, *positive])][:width]
        rows.append(codes + [NO_GROUP] * (width - len(codes)))
    return rows


class L2SPLoss(nn.Module):
    """`loss` plus weight x sum((theta - theta_start)^2) over the trainable weights: fine-tuning pulled toward the
    weights it started from (L2-SP, Li et al. 2018, https://arxiv.org/abs/1802.01483), not toward zero."""

    def __init__(self, model, loss: nn.Module, weight: float):
        super().__init__()
        self.model, self.loss, self.weight = model, loss, weight
        self.start = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}  # plain
        # tensors, not buffers: the trainer's optimizer and checkpoints never see them

    def drift(self) -> Tensor:
        """Squared distance of the trainable weights from where training started (a scalar)."""
        params = dict(self.model.named_parameters())
        return sum(((params[n] - p0.to(params[n].device)) ** 2).sum() for n, p0 in self.start.items())

    def forward(self, sentence_features, labels: Tensor) -> Tensor:
        return self.loss(sentence_features, labels) + self.weight * self.drift()

    @property
    def citation(self) -> str:
        return "L2-SP (Li, Grandvalet and Davis 2018): explicit inductive bias for transfer learning"
