"""The shortened embedded-default pipeline the e2e tests share (tests/e2e/conftest.py runs it once)."""
from growth_helpers import NO_FLOORS

GROW = ["cluster=inprocess", "optim.epochs_initial=6", "optim.epochs_subtree=3", "optim.epochs_finetune=2",
        "growth.num_clusters_tree=4", *NO_FLOORS]
DIFFUSE = ["diffusion.steps=40", "diffusion.warmup_steps=5", "diffusion.log_every=10", "sampler.steps=8",
           "sampler.samples_per_leaf=3", "eval=smoke", "eval.modes=[generation,leaf,recon]"]
