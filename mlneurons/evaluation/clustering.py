"""The order in which a similarity heatmap lists its languages: similar languages side by side.

One function, :func:`cluster_order`, used by every clustered heatmap (RankC, Jaccard of
correct facts, fact-neuron overlap), so the orders are comparable. It is UPGMA (average
linkage) written out by hand, because scipy is not a runtime dependency: start with every
item alone; repeatedly join the two clusters with the highest mean pairwise similarity
(ties: the pair that comes first in the current order); the leaves of the final tree, each
join writing its earlier cluster first, are the order.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence


def cluster_order(similarity: Sequence[Sequence[float | None]]) -> list[int]:
    """The leaf order of average-linkage (UPGMA) clustering of a symmetric similarity matrix.

    Missing similarities (``None`` or nan, e.g. a pair without shared facts) are left out
    of the averages; two clusters with none between them are joined last. The diagonal is
    not read.

    Raises:
        ValueError: the matrix is not square.
    """
    n = len(similarity)
    if any(len(row) != n for row in similarity):
        raise ValueError(f"a similarity matrix must be square; got {n} rows of other lengths")

    def value(i: int, j: int) -> float | None:
        v = similarity[i][j]
        return None if v is None or math.isnan(v) else float(v)

    clusters: list[list[int]] = [[i] for i in range(n)]
    while len(clusters) > 1:
        best: tuple[float, int, int] | None = None
        for a in range(len(clusters)):
            for b in range(a + 1, len(clusters)):
                known = [
                    v for i in clusters[a] for j in clusters[b] if (v := value(i, j)) is not None
                ]
                link = sum(known) / len(known) if known else -math.inf
                if best is None or link > best[0]:
                    best = (link, a, b)
        assert best is not None
        _, a, b = best
        clusters[a] = clusters[a] + clusters[b]
        del clusters[b]
    return clusters[0] if clusters else []


def clustered_labels(
    labels: Sequence[str], table: Mapping[str, Mapping[str, float | None]]
) -> list[str]:
    """``labels`` in :func:`cluster_order` of the language x language ``table``."""
    matrix = [[table.get(a, {}).get(b) for b in labels] for a in labels]
    return [labels[i] for i in cluster_order(matrix)]


__all__ = ["cluster_order", "clustered_labels"]
