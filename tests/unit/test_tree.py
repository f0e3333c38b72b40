"""Tree topology: heap ids, paths, splits, pruning, JSON round-trip."""
import pytest

from treediff.tree import Tree, depth, left, parent, right


def test_heap_ids_and_depth():
    assert (left(0), right(0), left(2), right(2)) == (1, 2, 5, 6)
    assert [parent(i) for i in (1, 2, 5, 6)] == [0, 0, 2, 2]
    assert [depth(i) for i in (0, 1, 2, 3, 6, 7, 14, 15)] == [0, 1, 1, 2, 2, 3, 3, 4]
    with pytest.raises(ValueError):
        parent(0)


def test_initial_tree_and_split_keep_ids_stable():
    t = Tree.initial(1)
    assert t.bfs() == [0, 1, 2] and t.leaves == [1, 2] and t.routers == [0]
    assert t.split(2) == (5, 6)
    assert t.leaves == [1, 5, 6] and t.routers == [0, 2]
    assert t.split(5) == (11, 12)
    assert t.path(12) == [0, 2, 5, 12]
    assert t.depth == 3
    with pytest.raises(ValueError, match="not a leaf"):
        t.split(2)
    with pytest.raises(ValueError, match="not in the tree"):
        t.split(3)


def test_prune_makes_pass_through_and_removes_empty_ancestors():
    t = Tree.initial(1)
    t.split(2)
    t.split(5)  # leaves 1, 6, 11, 12
    assert t.prune(11) == [11]
    assert t.children(5) == [12] and not t.is_router(5) and not t.is_leaf(5)
    assert t.prune(12) == [12, 5]  # 5 is left childless and goes too
    assert t.leaves == [1, 6] and t.children(2) == [6]
    with pytest.raises(ValueError, match="root"):
        t.prune(0)


def test_json_round_trip(tmp_path):
    t = Tree.initial(2)
    t.split(4)
    t.prune(3)
    again = Tree.from_json(t.to_json())
    assert again.bfs() == t.bfs() and again.leaves == t.leaves
    t.save(tmp_path / "tree.json")
    assert Tree.load(tmp_path / "tree.json").bfs() == t.bfs()
    with pytest.raises(FileNotFoundError, match="missing.json"):
        Tree.load(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ValueError, match="bad.json"):
        Tree.load(tmp_path / "bad.json")


def test_rejects_orphans():
    with pytest.raises(ValueError, match="without a parent"):
        Tree({0, 1, 5})
