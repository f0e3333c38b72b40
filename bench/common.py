"""What the benchmarks share: the embedded default's models and shards, and one stage timed two
ways on the same shards and batches, in a plain PyTorch loop and through Ray Train + DeepSpeed.

Both timings cover the same work per epoch (stream the shard set's batches, loss, backward,
optimiser step) and skip the first epoch (start-up, the first sha256 pass, allocator warm-up).
The Ray side reads the loop's own per-epoch `images_per_s` from the TensorBoard events rank 0
writes, so nothing extra is instrumented inside the workers.
"""
from __future__ import annotations

import sys
import tempfile
import time
from dataclasses import asdict, replace
from pathlib import Path
from statistics import median

import torch

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # `python bench/x.py` puts bench/, not the project, on sys.path
    sys.path.insert(0, str(ROOT))

from treediff.checkpoint import save_checkpoint  # noqa: E402
from treediff.data.shards import ShardSet, write_shard_set  # noqa: E402
from treediff.data.sources import open_source  # noqa: E402
from treediff.data.stream import StreamConfig, make_loader  # noqa: E402
from treediff.stages import DiffusionStage, TreePhaseStage  # noqa: E402
from treediff.stages.base import Stage, run_plain  # noqa: E402
from treediff.vae import TreeVAE  # noqa: E402


def timed(fn, repeat: int) -> float:
    """Seconds per call of `fn`, over `repeat` calls after one warm-up call (allocator, optimiser state)."""
    fn()
    t0 = time.perf_counter()
    for _ in range(repeat):
        fn()
    return (time.perf_counter() - t0) / repeat


def default_config(*overrides: str):
    """The embedded default's composed config (dataclasses)."""
    from jobs.cli import compose
    return compose(["cluster=local", *overrides])[0]


def digits_shards(tmp: str | Path) -> str:
    path = Path(tmp) / "digits"
    write_shard_set({s: open_source("digits", s) for s in ("train", "test")}, path, samples_per_shard=200,
                    progress=False)
    return str(path)


def grown_tree(model_cfg, leaves: int) -> TreeVAE:
    """A TreeVAE split breadth-first until it has `leaves` leaves (fresh weights, seed 0)."""
    torch.manual_seed(0)
    model = TreeVAE(model_cfg)  # the root and its two children
    while len(model.tree.leaves) < leaves:
        model.split(min(model.tree.leaves))
    return model


def step_seconds(model, subtree, x: torch.Tensor, steps: int) -> float:
    """Seconds per optimiser step (forward, loss, backward, Adam) of the subtree at `subtree`
    (None: the whole tree), everything else frozen."""
    params = model.set_trainable(subtree)
    model.train()
    opt = torch.optim.Adam(params, lr=1e-3)

    def step():
        loss = model(x, subtree=subtree).loss(1.0)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return timed(step, steps)


def tree_checkpoint(tmp: str | Path, model_cfg, leaves: int = 4) -> Path:
    model = grown_tree(model_cfg, leaves)
    return save_checkpoint(Path(tmp) / "tree", model.state_dict(), model.tree, {"model": asdict(model_cfg)}, {})


def denoiser_checkpoint(tmp: str | Path, cfg, leaves: int = 4) -> Path:
    """A path-conditioned denoiser of the embedded default's sizes after one training step
    (sampling and feature costs do not depend on the weights)."""
    from treediff.diffusion.trainer import train_diffusion

    tree = tree_checkpoint(tmp, cfg.model, leaves)
    x = torch.rand(64, cfg.model.in_channels, cfg.model.image_size, cfg.model.image_size) * 2 - 1
    return train_diffusion(tree, replace(cfg.diffusion, steps=1, log_every=1), cfg.sampler, x,
                           Path(tmp) / "diffusion" / "path", log=lambda *a: None)


def diffusion_stage(cfg, tree_ckpt: Path, epochs: int) -> DiffusionStage:
    return DiffusionStage(cfg.diffusion, str(tree_ckpt), epochs=epochs, name="diffusion")


def tree_stage(cfg, epochs: int, leaves: int = 4) -> TreePhaseStage:
    model = grown_tree(cfg.model, leaves)
    return TreePhaseStage(cfg.model, model.tree.to_json(), model.state_dict(), None, cfg.optim, epochs=epochs,
                          name="tree")


def plain_rate(stage: Stage, shards: str, batch: int, threads: int) -> float:
    """Median images/s of epochs 2.. of `stage` in a plain PyTorch loop in this process."""
    torch.set_num_threads(threads)
    shard_set = ShardSet.open(shards)
    steps_per_epoch = max(1, shard_set.count("train") // batch)
    rates: list[float] = []

    from cluster.config import TrainerConfig
    from cluster.loop import split_cache

    cache = split_cache(shard_set, "train", TrainerConfig())  # the data path the loop takes by default

    def batches(epoch: int):
        cfg = StreamConfig(batch_size=batch, mode="resampled", batches_per_epoch=steps_per_epoch, seed=0, epoch=epoch,
                           verify=epoch == 0)
        loader = cache.batches(cfg) if cache is not None else make_loader(shard_set, "train", cfg)
        t0, n = time.perf_counter(), 0
        for b in loader:
            yield b  # the step runs before the generator resumes: it is inside the timed span
            n += len(b[0])
        rates.append(n / (time.perf_counter() - t0))
    run_plain(stage, batches, steps_per_epoch)
    return median(rates[1:])


def ray_rate(stage: Stage, shards: str, batch: int, trainer) -> float:
    """Median images/s of epochs 2.. of `stage` on Ray Train + DeepSpeed (a Ray session must be up)."""
    from cluster.loop import StageData, fit_stage
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    with tempfile.TemporaryDirectory(prefix="tdb-") as tmp:
        trainer = replace(trainer, storage_path=f"{tmp}/ray", checkpoint_every=0, checkpoint_minutes=0)
        fit_stage(stage, StageData(shards, global_batch=batch), trainer, name=f"bench-{stage.name}", local=True,
                  tb_dir=f"{tmp}/tb")
        events = EventAccumulator(f"{tmp}/tb", size_guidance={"scalars": 0})
        events.Reload()
        rates = [s.value for s in events.Scalars(f"{stage.name}/images_per_s")]
    return median(rates[1:])


__all__ = ["timed", "default_config", "digits_shards", "grown_tree", "tree_checkpoint", "denoiser_checkpoint", "diffusion_stage", "tree_stage",
           "plain_rate", "ray_rate"]
