"""The single-process diffusion trainer: checkpoint layout, resume, NaN input, tree checks.

A tiny tree (4x2x2 latents on 8x8 images) is saved as a tree checkpoint; tiny U-Nets train on
it for a handful of steps.
"""
import shutil

import pytest
import torch

from treediff.checkpoint import save_checkpoint
from treediff.diffusion.config import DiffusionConfig, SamplerConfig
from treediff.diffusion.grids import sample_per_leaf, save_leaf_grid
from treediff.diffusion.trainer import (EMA_FILE, is_complete, load_denoiser, progress_dir, read_meta,
                                        train_diffusion)
from treediff.vae import TreeVAE, TreeVAEConfig

TINY_TREE = TreeVAEConfig(latent_channels=4, bottom_up_channels=8, max_depth=3)


def tiny_diffusion(**kw) -> DiffusionConfig:
    base = dict(T=50, model_channels=8, channel_mult=[1, 2], num_res_blocks=1, attention_resolutions=[4],
                num_heads=2, dropout=0.0, lr=1e-3, warmup_steps=2, batch_size=16, steps=8, log_every=2,
                ema_decay=0.9, cond_drop_prob=0.2)
    base.update(kw)
    return DiffusionConfig(**base)


SAMPLER = SamplerConfig(steps=5, samples_per_leaf=2)


@pytest.fixture
def tree_ckpt(tmp_path):
    torch.manual_seed(0)
    model = TreeVAE(TINY_TREE)
    model.split(2)  # leaves 1, 5, 6: a path of length 3 and one of length 2
    return save_checkpoint(tmp_path / "tree" / "phase-003-finetune", model.state_dict(), model.tree,
                           {"model": vars(TINY_TREE)}, {})


@pytest.fixture
def images():
    return torch.rand(48, 1, 8, 8, generator=torch.Generator().manual_seed(1)) * 2 - 1


@pytest.mark.parametrize("mode", ["path", "recon", "recon_path", "none"])
def test_trains_writes_a_complete_checkpoint_and_samples_every_leaf(tmp_path, tree_ckpt, images, mode):
    cfg = tiny_diffusion(conditioning=mode, leaf_embedding=(mode == "none"))
    out = train_diffusion(tree_ckpt, cfg, SAMPLER, images, tmp_path / "diff" / mode, log=lambda *a: None)
    assert is_complete(out)
    meta = read_meta(out)
    assert meta["steps"] == 8 and meta["tree_checkpoint"] == str(tree_ckpt.resolve())
    assert len(meta["loss_history"]) == 4 and all(v > 0 for v in meta["loss_history"])
    denoiser, tree_model = load_denoiser(out)
    assert tree_model.tree.leaves == [1, 5, 6]
    assert (denoiser.path_encoder is not None) == cfg.uses_path
    assert (denoiser.unet_cfg.extra_in_channels == 1) == cfg.uses_recon
    # sampling uses the EMA weights, not the raw ones
    raw = torch.load(out / "model.pt", weights_only=True)
    ema = torch.load(out / EMA_FILE, weights_only=True)
    name = next(k for k, v in raw.items() if v.is_floating_point() and not torch.equal(v, ema["shadow"][k]))
    assert torch.equal(denoiser.state_dict()[name], ema["shadow"][name])
    samples = sample_per_leaf(denoiser, tree_model, SAMPLER, torch.Generator().manual_seed(0))
    assert sorted(samples) == [1, 5, 6]
    assert all(s.shape == (2, 1, 8, 8) and s.abs().max() <= 1 for s in samples.values())
    png = save_leaf_grid(samples, tmp_path / "grid.png")
    assert png.stat().st_size > 100


def test_a_complete_checkpoint_is_not_retrained(tmp_path, tree_ckpt, images):
    cfg = tiny_diffusion()
    out = train_diffusion(tree_ckpt, cfg, SAMPLER, images, tmp_path / "d", log=lambda *a: None)
    before = (out / "model.pt").read_bytes(), (out / "model.pt").stat().st_mtime_ns
    events = []
    train_diffusion(tree_ckpt, cfg, SAMPLER, images, out, log=lambda e, d: events.append(e))
    assert events == ["skip"]
    assert ((out / "model.pt").read_bytes(), (out / "model.pt").stat().st_mtime_ns) == before


def test_interrupted_run_resumes_to_the_same_weights(tmp_path, tree_ckpt, images):
    cfg = tiny_diffusion(checkpoint_every=2)
    whole = train_diffusion(tree_ckpt, cfg, SAMPLER, images, tmp_path / "whole", log=lambda *a: None)

    def stop_at_6(event, data):
        if event == "log" and data["step"] == 6:
            raise KeyboardInterrupt  # the progress checkpoint of step 4 is on disk by now

    target = tmp_path / "resumed"
    with pytest.raises(KeyboardInterrupt):
        train_diffusion(tree_ckpt, cfg, SAMPLER, images, target, log=stop_at_6)
    assert not target.exists() and read_meta(progress_dir(target))["steps"] == 4
    events = []
    train_diffusion(tree_ckpt, cfg, SAMPLER, images, target, log=lambda e, d: events.append((e, d.get("step"))))
    assert ("resume", 4) in events and not progress_dir(target).exists()
    a, b = torch.load(whole / "model.pt", weights_only=True), torch.load(target / "model.pt", weights_only=True)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert read_meta(whole)["loss_history"] == read_meta(target)["loss_history"]


def test_nan_images_stop_with_the_step_named_and_nothing_written(tmp_path, tree_ckpt, images):
    bad = images.clone()
    bad[:] = float("nan")
    with pytest.raises(FloatingPointError, match=r"step 0.*not finite.*no checkpoint written"):
        train_diffusion(tree_ckpt, tiny_diffusion(), SAMPLER, bad, tmp_path / "nan", log=lambda *a: None)
    assert not (tmp_path / "nan").exists()


def test_missing_or_different_tree_checkpoint_is_refused(tmp_path, tree_ckpt, images):
    out = train_diffusion(tree_ckpt, tiny_diffusion(), SAMPLER, images, tmp_path / "d", log=lambda *a: None)
    # the tree's weights changed after the denoiser was trained on them
    state = torch.load(tree_ckpt / "model.pt", weights_only=True)
    key = next(k for k, v in state.items() if v.is_floating_point())
    state[key] = state[key] + 1.0
    torch.save(state, tree_ckpt / "model.pt")
    with pytest.raises(ValueError, match=r"does not match.*weights sha256"):
        load_denoiser(out)
    with pytest.raises(ValueError, match="does not match"):  # nor is it silently retrained or reused
        train_diffusion(tree_ckpt, tiny_diffusion(), SAMPLER, images, out, log=lambda *a: None)
    # the tree checkpoint is gone
    shutil.rmtree(tree_ckpt)
    with pytest.raises(FileNotFoundError, match=f"tree checkpoint {tree_ckpt.resolve()}"):
        load_denoiser(out)
    # the diffusion checkpoint itself is missing a part
    (out / EMA_FILE).unlink()
    with pytest.raises(FileNotFoundError, match="ema.pt"):
        load_denoiser(out)


def test_tree_topology_mismatch_is_refused(tmp_path, tree_ckpt, images):
    out = train_diffusion(tree_ckpt, tiny_diffusion(), SAMPLER, images, tmp_path / "d", log=lambda *a: None)
    model = TreeVAE(TINY_TREE)  # a different tree (leaves 1, 2) written over the original
    shutil.rmtree(tree_ckpt)
    save_checkpoint(tree_ckpt, model.state_dict(), model.tree, {"model": vars(TINY_TREE)}, {})
    with pytest.raises(ValueError, match="topology"):
        load_denoiser(out)
