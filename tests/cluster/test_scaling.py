"""The policy for global batch against worker count (cluster/scaling.py): no stage trains at a
handful of images per GPU, and a stage that cannot use every worker says so."""
import pytest

from cluster.config import TrainerConfig
from cluster.scaling import plan
from jobs.cli import compose


def test_fixed_keeps_the_global_batch_and_caps_the_workers():
    t = TrainerConfig(num_workers=32, use_gpu=True, min_micro_batch=16)
    p = plan(t, 64, "diffusion/path", "diffusion.batch_size")
    assert (p.workers, p.global_batch, p.lr_scale) == (4, 64, 1.0)
    assert "diffusion.batch_size=64" in p.note and "2 images per worker" in p.note and "28 left free" in p.note
    assert p.trainer(t).num_workers == 4
    full = plan(TrainerConfig(num_workers=2), 64, "tree", "optim.batch_size")
    assert (full.workers, full.global_batch, full.note) == (2, 64, None)
    odd = plan(TrainerConfig(num_workers=4), 250, "x", "b")  # 250 does not split over 4: 2 workers of 125
    assert (odd.workers, odd.global_batch) == (2, 250) and "125" in odd.note


def test_linear_scales_the_batch_and_the_learning_rate():
    p = plan(TrainerConfig(num_workers=8, batch_scaling="linear"), 64, "x", "b")
    assert (p.workers, p.global_batch, p.lr_scale, p.note) == (8, 512, 8.0, None)


@pytest.mark.parametrize("experiment", ["cifar10", "celeba", "cubicc", "mnist", "fashion_mnist"])
def test_no_preset_stage_trains_at_fewer_than_16_images_per_gpu_on_32_gpus(experiment):
    cfg, _ = compose([f"experiment={experiment}", "cluster=slurm_4node_8gpu"])
    assert cfg.trainer.num_workers == 32 and cfg.trainer.min_micro_batch >= 16
    for batch, key in ((cfg.optim.batch_size, "optim.batch_size"), (cfg.diffusion.batch_size, "diffusion.batch_size"),
                       (cfg.eval.classifier_batch, "eval.classifier_batch")):
        p = plan(cfg.trainer, batch, key, key)
        assert p.global_batch // p.workers >= 16 or p.workers == 1, (key, p)
        assert (p.workers < 32) == (p.note is not None)
