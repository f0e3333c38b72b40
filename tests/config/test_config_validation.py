"""`treediff check` and the schemas: each bad value stops with a message that names its field."""
import subprocess
import sys

import pytest

from jobs.cli import JobError, run_job


@pytest.mark.parametrize("overrides, field", [
    # negative epochs
    (["optim.epochs_subtree=-1"], "optim.epochs_subtree"),
    (["experiment=cifar10", "optim.epochs_initial=-5"], "optim.epochs_initial"),
    # the latent grid does not fit the encoder: cnn2 halves 32 down to R, so 32 / R must be a power of 2
    (["experiment=cifar10", "model.representation_dim=3"], "model.representation_dim"),
    (["experiment=mnist", "model.representation_dim=28"], "model.representation_dim"),
    # the model does not fit the data set's images (known from data.name, nothing is read)
    (["experiment=cifar10", "model=tree_mnist"], "model.image_size"),
    (["experiment=celeba", "model.in_channels=1"], "model.contrastive_augment"),  # colour jitter on grey images
    (["experiment=celeba", "model.in_channels=1", "model.contrastive=false"], "model.image_size"),
    (["data=folder", "data.root=/data/mine", "model=tree_mnist"], "model.image_size"),  # 64x64x3 by data.image_size
    (["data.image_size=-1"], "data.image_size"),
    (["data.channels=2"], "data.channels"),
    # ZeRO stage outside 0-2 (3 would partition the weights the EMA and export read whole)
    (["trainer.zero_stage=4"], "trainer.zero_stage"),
    (["cluster=slurm_4node_8gpu", "trainer.zero_stage=3"], "trainer.zero_stage"),
    # a file rendezvous is gloo: refused on GPUs
    (["cluster=slurm_4node_8gpu", "trainer.rendezvous=file"], "trainer.rendezvous"),
    (["cluster=slurm_4node_8gpu", "trainer.zero_stage=-1"], "trainer.zero_stage"),
    # DDIM steps above the training steps
    (["experiment=cifar10", "diffusion.T=50"], "sampler.steps"),
    (["sampler.steps=1001"], "sampler.steps"),
    (["sweep.steps=[10,2000]"], "sweep.steps"),
    # unknown keys and values, anywhere in the tree
    (["+optim.epochs=3"], "optim.epochs"),
    (["experiment=fashion_mnist", "+model.latent_dim=8"], "model.latent_dim"),
    (["data.name=imagenet"], "data.name"),
    (["experiment=bogus"], "experiment"),
    (["experiment=mnist", "growth.max_depth=7"], "growth.max_depth"),
    (["experiment=celeba_quick", "diffusion.attention_resolutions=[5]"], "diffusion.attention_resolutions"),
    (["slurm.nodes=0"], "slurm.nodes"),
])
def test_check_names_the_bad_field(overrides, field):
    with pytest.raises(JobError, match=field.replace(".", r"\.")):
        run_job("check", overrides)


def test_check_prints_the_plan_and_exits_non_zero_naming_the_field(tmp_path):
    ok = subprocess.run([sys.executable, "-m", "jobs.cli", "check", "experiment=digits_quick", "threads=1"],
                        capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert ok.returncode == 0, ok.stderr
    out = ok.stdout
    assert "tree total" in out and "path encoder" in out and "U-Net" in out and "depth 2" in out
    assert "1 initial" in out and "2 subtree" in out and "final tree of 4 leaves" in out
    assert "resolved config:" in out and "run_dir: runs/digits_quick" in out and out.endswith("treediff check: OK\n")
    assert not list(tmp_path.iterdir())  # nothing written: no run directory, no shards, no Ray
    bad = subprocess.run([sys.executable, "-m", "jobs.cli", "check", "experiment=cifar10", "trainer.zero_stage=5"],
                         capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert bad.returncode == 2 and "treediff check: error:" in bad.stderr and "trainer.zero_stage" in bad.stderr
    assert "Traceback" not in bad.stderr
