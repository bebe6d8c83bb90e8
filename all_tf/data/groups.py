"""Connected groups of items linked in pairs (duplicate groups, blocks of file numbers).

Example:
    >>> component_labels(5, [(3, 1), (4, 2)]).tolist()
    [0, 1, 2, 1, 2]
"""

from __future__ import annotations

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components


def component_labels(n: int, pairs) -> np.ndarray:
    """Connected-component label of each of ``n`` items linked by ``pairs`` of indices.

    Args:
        n: number of items (indices 0..n-1).
        pairs: iterable of (i, j) index pairs; the links are undirected.

    Returns:
        int array (n,): components numbered 0, 1, ... in the order of their first
        (lowest-index) item, so item 0 is always in component 0.
    """
    pairs = np.asarray(list(pairs), dtype=np.int64).reshape(-1, 2)
    if n == 0:
        return np.zeros(0, np.int64)
    graph = coo_matrix((np.ones(len(pairs), np.int64), (pairs[:, 0], pairs[:, 1])), shape=(n, n))
    _, labels = connected_components(graph, directed=False)
    _, first = np.unique(labels, return_index=True)
    renumber = np.empty(len(first), np.int64)
    renumber[np.argsort(first)] = np.arange(len(first))
    return renumber[labels]
