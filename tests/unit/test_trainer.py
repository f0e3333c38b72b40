"""The phase schedule on tiny data: which phases run, in which order, and what they save."""
import json

import torch

from treediff.checkpoint import load_checkpoint
from treediff.vae import GrowthConfig, OptimConfig, TreeVAEConfig
from treediff.vae.trainer import GrowthRun

TINY = TreeVAEConfig(latent_channels=4, bottom_up_channels=8, max_depth=3)
OPTIM = OptimConfig(batch_size=32, epochs_initial=1, epochs_subtree=1, epochs_intermediate=1, epochs_finetune=1)


def phase_names(run_dir):
    return sorted(p.name for p in (run_dir / "tree").iterdir() if p.name.startswith("phase-"))


def test_schedule_with_periodic_fulltrain(tmp_path):
    x = torch.rand(96, 1, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1
    growth = GrowthConfig(max_depth=3, min_samples=1, num_clusters_tree=4, intermediate_fulltrain_every=1,
                          prune=False)
    model = GrowthRun(TINY, growth, OPTIM, x, tmp_path, {"model": vars(TINY)}).run()
    kinds = [n.split("-")[2] for n in phase_names(tmp_path)]
    assert kinds[0] == "initial" and kinds[-2:] == ["prune", "finetune"]
    body = kinds[1:-2]
    assert body[0] == "subtree" and "fulltrain" in body
    # a full retraining follows every split except the last one before stopping
    assert all(body[i + 1] == "fulltrain" for i, k in enumerate(body[:-1]) if k == "subtree")
    log = [json.loads(l) for l in (tmp_path / "tree" / "growth_log.jsonl").read_text().splitlines()]
    assert log[-1]["kind"] == "stop" and all(set(r["counts"]) for r in log if r["kind"] == "split")
    final = load_checkpoint(tmp_path / "tree" / phase_names(tmp_path)[-1])
    assert final.tree.leaves == model.tree.leaves and final.meta["state"]["growth_done"]
    # frozen-phase bookkeeping: training mode and trainable flags are restored after the run
    assert not model.training and all(p.requires_grad for p in model.parameters())


def test_a_superseded_run_writes_nothing_more(tmp_path):
    # an executor's fence (cluster.growth: a newer driver's token in the owner file) stops the
    # writer before its next checkpoint or log line: an orphaned worker group never writes beside its successor
    import pytest
    from treediff.vae.trainer import InProcessExecutor

    class Fenced(InProcessExecutor):
        writes = 0

        def fence(self):
            Fenced.writes += 1
            if Fenced.writes > 1:
                raise RuntimeError("superseded")

    x = torch.rand(96, 1, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1
    executor = Fenced(x, OPTIM, lambda *a: None)
    with pytest.raises(RuntimeError, match="superseded"):
        GrowthRun(TINY, GrowthConfig(max_depth=3, min_samples=1, num_clusters_tree=4), OPTIM, None, tmp_path,
                  {"model": vars(TINY)}, executor=executor).run()
    assert phase_names(tmp_path) == ["phase-000-initial"]
    assert not (tmp_path / "tree" / "growth_log.jsonl").exists()
