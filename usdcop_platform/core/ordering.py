"""Pipeline order of a dependency graph: topological, ties broken by declaration order.

A plain topological sort leaves the order of independent nodes open (Dagster's own toposort puts
the live path's first asset beside the raw market data); an alphabetical one ignores dependencies
(datasets/ before raw/). Kahn's algorithm that always takes the ready node declared first gives
the order a reader follows: the batch pipeline as the code location declares its domains, then
the live path, then monitoring, with every node after all its parents.
"""

from __future__ import annotations

import heapq
from collections.abc import Hashable, Iterable, Mapping, Sequence
from typing import TypeVar

N = TypeVar("N", bound=Hashable)


def pipeline_order(declared: Sequence[N], parents: Mapping[N, Iterable[N]]) -> list[N]:
    """Every node of `declared` after all its parents; among nodes ready at once, declaration order.

    Parents outside `declared` are ignored (an external source, a foreign asset). Raises ValueError
    naming the nodes of a cycle (none can be placed) and on a node declared twice."""
    rank: dict[N, int] = {}
    for i, node in enumerate(declared):
        if node in rank:
            raise ValueError(f"node {node!r} is declared twice")
        rank[node] = i
    waiting: dict[N, int] = {}
    children: dict[N, list[N]] = {node: [] for node in declared}
    for node in declared:
        known = {p for p in parents.get(node, ()) if p in rank and p != node}
        waiting[node] = len(known)
        for p in known:
            children[p].append(node)
    ready = [(rank[n], n) for n in declared if waiting[n] == 0]
    heapq.heapify(ready)
    out: list[N] = []
    while ready:
        _, node = heapq.heappop(ready)
        out.append(node)
        for child in children[node]:
            waiting[child] -= 1
            if waiting[child] == 0:
                heapq.heappush(ready, (rank[child], child))
    if len(out) != len(declared):
        stuck = [n for n in declared if waiting[n] > 0]
        raise ValueError(f"dependency cycle among {stuck!r}")
    return out
