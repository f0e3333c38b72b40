"""Binary tree topology with heap-ordered node ids.

Node ids follow heap order: the root is 0 and the children of node i are 2i+1 (left) and
2i+2 (right). Ids therefore never change while the tree grows, so modules keyed by id,
node embeddings and checkpoints stay valid across growth phases.

A node has 0 children (a leaf), 2 children (an internal node with a router) or, after
pruning, 1 child (a pass-through node: it keeps its latent but routes everything on).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path


def left(i: int) -> int:
    return 2 * i + 1


def right(i: int) -> int:
    return 2 * i + 2


def parent(i: int) -> int:
    if i <= 0:
        raise ValueError(f"node {i} has no parent")
    return (i - 1) // 2


def depth(i: int) -> int:
    """Depth of node id i (root 0): floor(log2(i + 1))."""
    if i < 0:
        raise ValueError(f"node ids are non-negative, got {i}")
    return (i + 1).bit_length() - 1


@dataclass
class Tree:
    """The set of node ids of a binary tree, closed under `parent`."""

    nodes: set[int] = field(default_factory=lambda: {0})

    def __post_init__(self) -> None:
        self.nodes = set(int(n) for n in self.nodes)
        if 0 not in self.nodes:
            raise ValueError("a tree must contain the root (node 0)")
        orphans = sorted(n for n in self.nodes if n != 0 and parent(n) not in self.nodes)
        if orphans:
            raise ValueError(f"nodes without a parent in the tree: {orphans}")

    # ------------------------------------------------------------------ construction
    @classmethod
    def initial(cls, initial_depth: int = 1) -> "Tree":
        """A complete tree of the given depth (depth 1: root + 2 leaves)."""
        return cls(set(range(2 ** (initial_depth + 1) - 1)))

    def split(self, leaf: int) -> tuple[int, int]:
        """Give `leaf` two children; returns their ids."""
        if leaf not in self.nodes:
            raise ValueError(f"cannot split node {leaf}: not in the tree")
        if not self.is_leaf(leaf):
            raise ValueError(f"cannot split node {leaf}: it is not a leaf")
        self.nodes |= {left(leaf), right(leaf)}
        return left(leaf), right(leaf)

    def prune(self, leaf: int) -> list[int]:
        """Remove `leaf`, then every ancestor left without children (never the root).

        Returns the removed ids. A parent that keeps one child becomes a pass-through node.
        """
        if leaf == 0:
            raise ValueError("the root is never pruned")
        if leaf not in self.nodes or not self.is_leaf(leaf):
            raise ValueError(f"cannot prune node {leaf}: not a leaf of the tree")
        removed = [leaf]
        self.nodes.discard(leaf)
        node = parent(leaf)
        while node != 0 and not self.children(node):
            self.nodes.discard(node)
            removed.append(node)
            node = parent(node)
        return removed

    def copy(self) -> "Tree":
        return Tree(set(self.nodes))

    # ------------------------------------------------------------------ queries
    def __contains__(self, i: int) -> bool:
        return i in self.nodes

    def __len__(self) -> int:
        return len(self.nodes)

    def children(self, i: int) -> list[int]:
        return [c for c in (left(i), right(i)) if c in self.nodes]

    def is_leaf(self, i: int) -> bool:
        return not self.children(i)

    def is_router(self, i: int) -> bool:
        """Internal node with two children: it makes a left/right decision."""
        return len(self.children(i)) == 2

    @property
    def leaves(self) -> list[int]:
        return sorted(i for i in self.nodes if self.is_leaf(i))

    @property
    def routers(self) -> list[int]:
        return sorted(i for i in self.nodes if self.is_router(i))

    def bfs(self) -> list[int]:
        """Nodes ordered so that every parent precedes its children (sorted heap ids)."""
        return sorted(self.nodes)

    def path(self, leaf: int) -> list[int]:
        """Root-to-node path of ids, root first."""
        if leaf not in self.nodes:
            raise ValueError(f"node {leaf} is not in the tree")
        out = [leaf]
        while out[-1] != 0:
            out.append(parent(out[-1]))
        return out[::-1]

    @property
    def depth(self) -> int:
        return max(depth(i) for i in self.nodes)

    def children_map(self) -> dict[int, list[int]]:
        return {i: self.children(i) for i in self.bfs()}

    # ------------------------------------------------------------------ persistence
    def to_json(self) -> str:
        return json.dumps({"nodes": self.bfs(), "leaves": self.leaves})

    @classmethod
    def from_json(cls, text: str) -> "Tree":
        try:
            data = json.loads(text)
            nodes = data["nodes"]
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise ValueError(f"not a tree JSON document: {e}") from e
        return cls(set(int(n) for n in nodes))

    def save(self, path: str | Path) -> None:
        Path(path).write_text(self.to_json())

    @classmethod
    def load(cls, path: str | Path) -> "Tree":
        p = Path(path)
        if not p.exists():
            raise FileNotFoundError(f"tree file not found: {p}")
        try:
            return cls.from_json(p.read_text())
        except ValueError as e:
            raise ValueError(f"{p}: {e}") from e

    def __repr__(self) -> str:
        return f"Tree(nodes={self.bfs()}, leaves={self.leaves})"

    def render(self, sizes: dict[int, int] | None = None) -> str:
        """ASCII drawing of the tree; leaves annotated with sizes when given."""

        def tag(i: int) -> str:
            return f"{i} [{sizes.get(i, 0)}]" if sizes is not None and self.is_leaf(i) else str(i)

        lines = [tag(0)]

        def walk(i: int, prefix: str) -> None:
            kids = self.children(i)
            for k, c in enumerate(kids):
                last = k == len(kids) - 1
                lines.append(prefix + ("`-- " if last else "|-- ") + tag(c))
                walk(c, prefix + ("    " if last else "|   "))

        walk(0, "")
        return "\n".join(lines)
