"""Co-listing groups (listing pages, categories) as a signal that papers are similar."""

from collections import Counter
from collections.abc import Iterable, Sequence


def similarity_groups(groups: Iterable[Sequence[str]], max_group_size: int) -> list[list[str]]:
    """Each paper's groups that count for similarity: those with 2 to `max_group_size` papers.

    `groups` holds every paper's groups (papers.parquet `groups`); sizes are counted over all of them.
    A group of one has no one to find; a broad one (cs.LG) says little about similarity.
    """
    groups = [list(gs) for gs in groups]
    sizes = Counter(g for gs in groups for g in gs)
    return [[g for g in gs if 2 <= sizes[g] <= max_group_size] for gs in groups]
