"""Circles among computed fields: formulas and roll-ups reading each other never settle."""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Mapping
from typing import TypeVar

N = TypeVar("N", bound=Hashable)


def cycles(reads: Mapping[N, Iterable[N]]) -> list[list[N]]:
    """Each circle met walking `reads` (node → the nodes it reads; only keys are walked)
    depth first, in the order given: the nodes from the one read again around to it, that
    node repeated at the end (`a → b → a`)."""
    found: list[list[N]] = []
    state: dict[N, int] = {}  # 1: on the current path, 2: done

    def visit(node: N, trail: list[N]) -> None:
        state[node] = 1
        for nxt in reads[node]:
            if nxt not in reads:
                continue
            if state.get(nxt) == 1:
                found.append([*trail[trail.index(nxt):], nxt])
            elif nxt not in state:
                visit(nxt, [*trail, nxt])
        state[node] = 2

    for node in reads:
        if node not in state:
            visit(node, [node])
    return found
