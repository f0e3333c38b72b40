"""Checkpoint directories: atomic writes, strict loading, clear errors; NaN stops a phase."""
import pytest
import torch

from treediff.checkpoint import load_checkpoint, save_checkpoint
from treediff.tree import Tree
from treediff.vae import GrowthConfig, OptimConfig, TreeVAE, TreeVAEConfig
from treediff.vae.trainer import GrowthRun, NonFiniteLoss, load_tree_model

TINY = TreeVAEConfig(latent_channels=4, bottom_up_channels=8, max_depth=3)


def save_tiny(path, model):
    return save_checkpoint(path, model.state_dict(), model.tree, {"model": vars(TINY)}, {"note": "x"})


def test_round_trip_and_refusal_to_overwrite(tmp_path):
    m = TreeVAE(TINY)
    m.split(2)
    save_tiny(tmp_path / "ck", m)
    again = load_tree_model(tmp_path / "ck")
    assert again.tree.bfs() == m.tree.bfs()
    for k, v in m.state_dict().items():
        assert torch.equal(v, again.state_dict()[k])
    with pytest.raises(FileExistsError, match="ck"):
        save_tiny(tmp_path / "ck", m)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp")]


def test_failed_write_leaves_nothing_complete_looking(tmp_path):
    m = TreeVAE(TINY)
    with pytest.raises(Exception):  # a lambda cannot be pickled: the write fails half-way
        save_checkpoint(tmp_path / "bad", m.state_dict(), m.tree, {"x": object()}, {"y": {1, 2}},
                        extra_files={"z.pt": lambda: 0})
    assert not (tmp_path / "bad").exists() and list(tmp_path.iterdir()) == []


def test_missing_parts_and_mismatched_tree_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        load_checkpoint(tmp_path / "nowhere")
    m = TreeVAE(TINY)
    path = save_tiny(tmp_path / "ck", m)
    Tree({0, 1, 2, 3, 4}).save(path / "tree.json")  # the weights no longer match the topology
    with pytest.raises(ValueError, match="does not match"):
        load_tree_model(path)
    (path / "tree.json").unlink()
    with pytest.raises(FileNotFoundError, match="tree.json"):
        load_checkpoint(path)


def test_nan_loss_stops_with_a_clear_error_and_keeps_the_last_phase(tmp_path):
    x = torch.rand(64, 1, 8, 8) * 2 - 1
    optim = OptimConfig(batch_size=32, epochs_initial=1, epochs_subtree=1, epochs_finetune=1)
    run = GrowthRun(TINY, GrowthConfig(max_depth=3, min_samples=1, num_clusters_tree=3), optim, x, tmp_path, {"model": vars(TINY)})
    run.run()
    done = sorted(p.name for p in (tmp_path / "tree").iterdir() if p.name.startswith("phase-"))
    bad = x.clone()
    bad[3] = float("nan")
    with pytest.raises(NonFiniteLoss, match="initial.*loss is nan"):
        GrowthRun(TINY, GrowthConfig(max_depth=3), optim, bad, tmp_path / "other", {}).run()
    assert sorted(p.name for p in (tmp_path / "tree").iterdir() if p.name.startswith("phase-")) == done
    assert not (tmp_path / "other" / "tree").exists() or not any(
        p.name.startswith("phase-") for p in (tmp_path / "other" / "tree").iterdir())
