"""Phase budgets: epochs raised to a floor in optimiser steps, the fine-tune's KL schedule, the
partial last batch dropped."""
import math

import numpy as np
import pytest
import torch

from treediff.vae import OptimConfig, TreeVAE, TreeVAEConfig
from treediff.stages.tree import TreePhaseStage
from treediff.vae.budget import at_global_batch, phase_epochs, phase_kl_decay, phase_lr_factor, steps_per_epoch
from treediff.vae.config import GrowthConfig
from treediff.vae.losses import kl_weight
from treediff.vae.trainer import GrowthRun, train_epochs

from test_growth import BalancedExecutor


def test_a_floor_in_steps_raises_the_epochs_of_small_phases_only():
    o = OptimConfig(batch_size=64, epochs_subtree=20, min_steps_subtree=600)
    assert steps_per_epoch(100, 64) == 1 and steps_per_epoch(1437, 64) == 22 and steps_per_epoch(10, 64) == 1
    assert phase_epochs(o, "subtree", 100) == 600  # one step per epoch: 600 epochs
    assert phase_epochs(o, "subtree", 1437) == 28  # ceil(600 / 22)
    assert phase_epochs(o, "subtree", 64 * 40) == 20  # 40 steps x 20 epochs is above the floor
    assert phase_epochs(OptimConfig(epochs_subtree=20), "subtree", 100) == 20  # no floor
    assert phase_epochs(OptimConfig(epochs_subtree=0, min_steps_subtree=600), "subtree", 100) == 0  # off stays off
    with pytest.raises(ValueError, match="phase kind"):
        phase_epochs(o, "prune", 100)
    with pytest.raises(ValueError, match="optim.min_steps_finetune"):
        OptimConfig(min_steps_finetune=-1)
    with pytest.raises(ValueError, match="optim.kl_finetune"):
        OptimConfig(kl_finetune="fast")


def test_a_scaled_global_batch_keeps_each_phase_s_images():
    """trainer.batch_scaling=linear on 2 workers: batch 128, lr x 2, and the floors halved, so a
    phase floored at 400 steps of 64 images still sees ~25,600 images (not twice as many)."""
    o = OptimConfig(batch_size=64, lr=1e-3, epochs_subtree=20, min_steps_subtree=400, min_steps_finetune=3001)
    s = at_global_batch(o, 128, 2.0)
    assert (s.batch_size, s.lr, s.min_steps_subtree, s.min_steps_finetune, s.min_steps_initial) == (128, 2e-3, 200, 1501, 0)
    assert phase_epochs(s, "subtree", 700) == phase_epochs(o, "subtree", 700) == 40  # 200 / 5 steps, 400 / 10
    assert (s.epochs_subtree, s.kl_decay, s.seed) == (o.epochs_subtree, o.kl_decay, o.seed)  # epochs, KL: per epoch
    assert at_global_batch(o, 64, 1.0) == o  # trainer.batch_scaling=fixed: unchanged


@pytest.mark.parametrize("epochs", [2, 20, 200])
def test_the_reference_finetune_schedule_reaches_alpha_one(epochs):
    o = OptimConfig(kl_start=0.0, kl_decay=0.005, kl_finetune="reach_one")
    decay = phase_kl_decay(o, "finetune", epochs)
    assert decay == max(0.01, 1 / max(1, epochs - 1))
    assert kl_weight(epochs - 1, o.kl_start, decay) == pytest.approx(1.0)
    assert phase_kl_decay(o, "subtree", epochs) == 0.005  # the other phases keep optim.kl_decay
    assert phase_kl_decay(OptimConfig(kl_decay=0.005), "finetune", epochs) == 0.005  # "phase"


def test_growth_gives_each_phase_its_budget(tmp_path):
    optim = OptimConfig(batch_size=8, epochs_initial=3, epochs_subtree=2, epochs_finetune=4, min_steps_subtree=50,
                        min_steps_finetune=10, kl_finetune="reach_one")
    growth = GrowthConfig(num_clusters_tree=4, max_depth=3)
    ex = BalancedExecutor(n=96)
    GrowthRun(TreeVAEConfig(latent_channels=2, bottom_up_channels=4, max_depth=3), growth, optim, None, tmp_path, {},
              executor=ex).run()
    by_kind = {}
    for desc, epochs, decay, n in ex.trained:
        by_kind.setdefault(desc.split("@")[0], []).append((epochs, decay, n))
    assert by_kind["initial"] == [(3, optim.kl_decay, 96)]  # no floor for the initial phase
    for epochs, decay, n in by_kind["subtree"]:
        assert epochs == max(2, math.ceil(50 / steps_per_epoch(n, 8))) and decay == optim.kl_decay
    ((epochs, decay, n),) = by_kind["finetune"]
    assert epochs == 4 and decay == pytest.approx(1 / 3)  # 96 // 8 x 4 = 48 steps, above the floor


def test_the_learning_rate_steps_once_at_a_fraction_of_every_phase():
    """optim.lr_step_fraction: x0.1 from round(fraction x epochs) on, in a phase of any length;
    0 keeps StepLR's x0.1 every optim.lr_step_epochs."""
    o = OptimConfig(lr_step_fraction=2 / 3)
    assert [phase_lr_factor(o, 9)(e) for e in range(9)] == [1.0] * 6 + [0.1] * 3
    assert [phase_lr_factor(o, 150)(e) for e in (99, 100, 149)] == [1.0, 0.1, 0.1]  # the reference's 100 of 150
    assert [phase_lr_factor(o, 1)(e) for e in range(1)] == [1.0]  # a one-epoch phase keeps its rate
    assert [phase_lr_factor(OptimConfig(lr_step_epochs=3), 9)(e) for e in range(9)] == pytest.approx(
        [1.0] * 3 + [0.1] * 3 + [0.01] * 3)
    with pytest.raises(ValueError, match="optim.lr_step_fraction"):
        OptimConfig(lr_step_fraction=1.0)


def test_both_runtimes_step_the_learning_rate_where_the_phase_says():
    """The one-process trainer (per epoch) and the Ray stage (per optimiser step) follow the same
    factor: with lr_step_fraction=0.5 over 4 epochs, epochs 2-3 train at lr / 10."""
    torch.manual_seed(0)
    cfg = TreeVAEConfig(latent_channels=2, bottom_up_channels=4, max_depth=2)
    model = TreeVAE(cfg)
    o = OptimConfig(batch_size=32, lr=1e-2, lr_step_fraction=0.5)
    history = train_epochs(model, torch.rand(64, 1, 8, 8), subtree=None, epochs=4, optim=o,
                           generator=torch.Generator().manual_seed(0), desc="t", log=lambda e, d: None)
    # history's "lr" is the rate after each epoch's scheduler step, i.e. the next epoch's
    assert [h["lr"] for h in history] == pytest.approx([1e-2, 1e-3, 1e-3, 1e-3])
    stage = TreePhaseStage(cfg, model.tree.to_json(), model.state_dict(), None, o, epochs=4)
    factor = stage.lr_lambda(steps_per_epoch=2)
    assert [factor(step) for step in range(8)] == [1.0] * 4 + [0.1] * 4


def test_an_epoch_drops_its_partial_last_batch():
    torch.manual_seed(0)
    model = TreeVAE(TreeVAEConfig(latent_channels=2, bottom_up_channels=4, max_depth=2))
    sizes = []
    model.register_forward_pre_hook(lambda m, args, kwargs: sizes.append(len(args[0])), with_kwargs=True)
    x = torch.rand(70, 1, 8, 8)
    train_epochs(model, x, subtree=None, epochs=2, optim=OptimConfig(batch_size=32), generator=torch.Generator().manual_seed(0),
                 desc="t", log=lambda e, d: None)
    assert sizes == [32, 32, 32, 32]  # 2 epochs x 70 // 32 batches, never the 6 left over
    sizes.clear()
    train_epochs(model, x[:20], subtree=None, epochs=1, optim=OptimConfig(batch_size=32),
                 generator=torch.Generator().manual_seed(0), desc="t", log=lambda e, d: None)
    assert sizes == [20]  # fewer samples than a batch: one batch of all of them
