"""The report's tree figure: the layout never crosses two edges, whatever the heap ids."""
from treediff.report.figures import tree_layout
from treediff.tree import Tree


def _demo_shape() -> Tree:
    # The digits demo's tree: heap order and depth-first order of the leaves differ
    # (heap order puts 7 before 11 and 14, depth-first puts 17, 18 between them).
    tree = Tree.initial()
    for leaf in (2, 1, 5, 6, 3, 8, 13, 12):
        tree.split(leaf)
    return tree


def _leaves_under(tree: Tree, i: int) -> list[int]:
    kids = tree.children(i)
    return [i] if not kids else [leaf for c in kids for leaf in _leaves_under(tree, c)]


def test_layout_keeps_every_subtree_in_its_own_interval():
    tree = _demo_shape()
    x, depth = tree_layout(tree)
    assert sorted(x) == sorted(tree.bfs())
    for i in tree.routers:
        left, right = tree.children(i)
        # every leaf of the left subtree is left of every leaf of the right subtree: no crossing
        assert max(x[leaf] for leaf in _leaves_under(tree, left)) < min(x[leaf] for leaf in _leaves_under(tree, right))
        assert x[left] < x[i] < x[right]
        assert depth[left] == depth[i] + 1
    assert sorted(x[leaf] for leaf in tree.leaves) == [float(k) for k in range(len(tree.leaves))]
