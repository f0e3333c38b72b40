"""`treediff grow`: grow the CNN-TreeVAE phase by phase, then score its leaves."""
from __future__ import annotations

from pathlib import Path

import torch
import yaml

from treediff.data.tensors import to_model_range
from treediff.vae.evaluate import evaluate_tree
from treediff.vae.trainer import GrowthRun

from .data import check_shape, load_split
from .metrics import update_metrics
from .schema import JobConfig


def run(cfg: JobConfig, plain: dict) -> dict:
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    train, test = load_split(cfg.data, "train"), load_split(cfg.data, "test")
    for split in (train, test):
        check_shape(split, cfg.model.in_channels, cfg.model.image_size)
    run_dir = Path(cfg.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(yaml.safe_dump(plain, sort_keys=False))
    print(f"[grow] {len(train)} training / {len(test)} test images of {cfg.data.name}; run dir {run_dir}", flush=True)
    model = GrowthRun(cfg.model, cfg.growth, cfg.optim, to_model_range(train.images), run_dir, plain).run()
    print(f"[grow] final tree ({len(model.tree.leaves)} leaves):", flush=True)
    report = evaluate_tree(model, to_model_range(test.images), test.labels)
    print(model.tree.render({int(k): v for k, v in report["leaf_sizes"].items()}), flush=True)
    update_metrics(run_dir, ["tree"], report)  # keeps the other stages' entries
    if "nmi" in report:
        print(f"[grow] test split: NMI {report['nmi']:.3f}  ACC {report['acc']:.3f}  ARI {report['ari']:.3f}  "
              f"leaf purity {report['leaf_purity']:.3f}  dendrogram purity {report['dendrogram_purity']:.3f}",
              flush=True)
    print(f"[grow] metrics written to {run_dir / 'metrics.json'}", flush=True)
    return report
