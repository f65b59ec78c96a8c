"""core.ordering.pipeline_order: topological, ties in declaration order, cycles named."""

from __future__ import annotations

import random

import pytest

from usdcop_platform.core.ordering import pipeline_order


def test_ready_nodes_keep_declaration_order_and_children_follow_parents() -> None:
    declared = ["raw_bars", "raw_macro", "features", "dataset", "model", "live_bar", "live_signal", "drift"]
    parents = {"features": ["raw_bars", "raw_macro"], "dataset": ["features"], "model": ["dataset"],
               "live_signal": ["live_bar"], "drift": ["dataset", "live_signal"]}
    assert pipeline_order(declared, parents) == declared
    # declared the other way round, the live path comes first: the order is the declaration's, not the alphabet's
    flipped = ["live_bar", "live_signal", "raw_bars", "raw_macro", "features", "dataset", "model", "drift"]
    assert pipeline_order(flipped, parents) == flipped


def test_a_child_declared_before_its_parent_moves_after_it() -> None:
    assert pipeline_order(["c", "b", "a"], {"c": ["b"], "b": ["a"]}) == ["a", "b", "c"]


def test_random_graphs_are_ordered_topologically() -> None:
    rng = random.Random(7)
    for _ in range(200):
        n = rng.randint(1, 12)
        nodes = list(range(n))
        parents = {i: [j for j in range(i) if rng.random() < 0.3] for i in nodes}
        declared = nodes[:]
        rng.shuffle(declared)
        order = pipeline_order(declared, parents)
        position = {node: k for k, node in enumerate(order)}
        assert sorted(order) == nodes
        assert all(position[p] < position[i] for i in nodes for p in parents[i])


def test_unknown_parents_and_self_edges_are_ignored() -> None:
    assert pipeline_order(["a", "b"], {"a": ["external", "a"], "b": ["a"]}) == ["a", "b"]


def test_cycles_and_duplicates_are_errors() -> None:
    with pytest.raises(ValueError, match="cycle among \\['a', 'b'\\]"):
        pipeline_order(["a", "b", "c"], {"a": ["b"], "b": ["a"]})
    with pytest.raises(ValueError, match="declared twice"):
        pipeline_order(["a", "a"], {})
