"""How many workers a stage trains on, and with what batch: the policy for global batch against
worker count (trainer.batch_scaling).

  fixed    (trainer=gpu) the stage's configured batch is the global batch of the reference's recipe
           (one GPU in the papers), split over the workers, so the optimisation is the
           reference's whatever the cluster. A stage never trains at fewer than
           trainer.min_micro_batch images per worker (BatchNorm statistics and per-step cost
           need a real batch): when the split would go below it, the stage takes only as many
           workers as its batch can feed, and says how many it leaves free.
  linear   (trainer=cpu) every worker takes the configured batch (global batch = batch x workers)
           and the learning rate grows with it (the linear scaling rule, Goyal et al. 2017; keep a
           warm-up). The stages count their budgets in images (diffusion.steps, the growth's step
           floors: treediff/vae/budget.at_global_batch), so k workers take 1/k of the steps. On
           1-core CPU workers it keeps each rank's BatchNorm on the whole configured batch.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

from .config import TrainerConfig


@dataclass(frozen=True)
class Plan:
    workers: int
    global_batch: int
    lr_scale: float
    note: str | None  # what the user should know (workers left free), or None

    def trainer(self, t: TrainerConfig) -> TrainerConfig:
        return t if t.num_workers == self.workers else replace(t, num_workers=self.workers)


def plan(t: TrainerConfig, batch: int, what: str, batch_key: str) -> Plan:
    """The workers and global batch of a stage whose configured batch is `batch` (`batch_key` names it)."""
    step = t.grad_accum
    if t.batch_scaling == "linear":
        return Plan(t.num_workers, batch * t.num_workers, float(t.num_workers), None)
    workers = t.num_workers
    while workers > 1 and (batch // (workers * step) < t.min_micro_batch or batch % (workers * step)):
        workers -= 1
    if batch % (workers * step):
        raise ValueError(f"{what}: {batch_key}={batch} is not divisible by trainer.grad_accum={step}")
    note = None
    if workers < t.num_workers:
        note = (f"{batch_key}={batch} over trainer.num_workers={t.num_workers} would give "
                f"{batch // (t.num_workers * step)} images per worker (trainer.min_micro_batch="
                f"{t.min_micro_batch}): training on {workers} workers of {batch // (workers * step)}, "
                f"{t.num_workers - workers} left free (raise {batch_key}, or trainer.batch_scaling=linear)")
    return Plan(workers, batch, 1.0, note)


__all__ = ["Plan", "plan"]
