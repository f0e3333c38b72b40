"""`treediff grow`: grow the CNN-TreeVAE phase by phase, then score its leaves.

runtime=ray (the default): one Ray Train + DeepSpeed worker group grows the whole tree, phase by
phase, fed from the data set's shards; runtime=inprocess: one plain process on images in memory.
"""
from __future__ import annotations

from functools import partial
from pathlib import Path

import numpy as np
import torch
import yaml

from cluster.tensorboard import growth_logger, growth_logger_at
from treediff.data.tensors import to_model_range
from treediff.vae.evaluate import evaluate_tree
from treediff.vae.trainer import GrowthRun

from .data import check_shape, load_split
from .metrics import update_metrics
from .runtime import ensure_shards, is_local, session
from .schema import JobConfig


def run(cfg: JobConfig, plain: dict) -> dict:
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    test = load_split(cfg.data, "test")
    check_shape(test, cfg.model.in_channels, cfg.model.image_size)
    run_dir = Path(cfg.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(yaml.safe_dump(plain, sort_keys=False))
    tb = _tensorboard(cfg, run_dir, plain)
    if cfg.cluster.runtime == "ray":
        shards = ensure_shards(cfg, plain, "grow")
        print(f"[grow] {shards.count('train')} training / {len(test)} test images of {cfg.data.name} "
              f"(shards {shards.root}); {cfg.trainer.num_workers} Ray Train workers; run dir {run_dir}", flush=True)
        from cluster.growth import grow_on_ray
        with session(cfg):
            # rank 0 of the growth's worker group logs the decisions and the tree to the driver's TensorBoard
            model = grow_on_ray(cfg.model, cfg.growth, cfg.optim, cfg.trainer, shards.root, run_dir, plain,
                                local=is_local(cfg), make_log=partial(growth_logger_at, str((run_dir / "tb" / "driver").resolve())))
    else:
        train = load_split(cfg.data, "train")
        check_shape(train, cfg.model.in_channels, cfg.model.image_size)
        print(f"[grow] {len(train)} training / {len(test)} test images of {cfg.data.name}; in one process; "
              f"run dir {run_dir}", flush=True)
        model = GrowthRun(cfg.model, cfg.growth, cfg.optim, to_model_range(train.images), run_dir, plain,
                          log=growth_logger(tb)).run()
    x_test = to_model_range(test.images)
    report = evaluate_tree(model, x_test, test.labels)
    report |= leaf_examples(model, test, x_test, run_dir)
    if test.labels is not None:
        report["baselines"] = baselines(cfg, test)
    sizes = {int(k): v for k, v in report["leaf_sizes"].items()}
    print(f"[grow] final tree ({len(model.tree.leaves)} leaves, [test images per leaf]):", flush=True)
    print(model.tree.render(sizes), flush=True)
    update_metrics(run_dir, ["tree"], report)  # keeps the other stages' entries
    if "nmi" in report:
        print(f"[grow] test split: NMI {report['nmi']:.3f}  ACC {report['acc']:.3f}  ARI {report['ari']:.3f}  "
              f"leaf purity {report['leaf_purity']:.3f}  dendrogram purity {report['dendrogram_purity']:.3f}",
              flush=True)
    _log_final_tree(tb, model, x_test, sizes, report)
    print(f"[grow] metrics written to {run_dir / 'metrics.json'}; TensorBoard: "
          f"tensorboard --logdir {run_dir / 'tb'} --host 127.0.0.1", flush=True)
    return report


SMALL = 25_000 * 32 * 32  # baselines are computed beside the tree when train + test pixels stay under this


def baselines(cfg: JobConfig, test) -> list[dict]:
    """k-means(k) fit on the training pixels and (up to 5,000 images) Ward(k), k the number of
    classes, scored on the same test split as the tree: the classical clusterings it has to beat
    (small data sets only)."""
    from treediff.metrics.baselines import kmeans_baseline, ward_baseline

    pixels = int(np.prod(test.images.shape[1:]))
    if cfg.data.name not in ("digits", "mnist", "fashion_mnist", "photo_patches") or pixels * len(test) > SMALL:
        return []
    train = load_split(cfg.data, "train")
    if (len(train) + len(test)) * pixels > SMALL:
        return []
    k = len(np.unique(test.labels))
    rows = [kmeans_baseline(train.images, test.images, test.labels, k=k)]
    if len(train) + len(test) <= 5000:
        rows.append(ward_baseline(train.images, test.images, test.labels, k=k))
    print("[grow] baselines on the raw pixels: " + "; ".join(f"{b['method']} NMI {b['nmi']:.3f} ACC {b['acc']:.3f}"
                                                            for b in rows), flush=True)
    return rows


@torch.no_grad()
def leaf_examples(model, test, x_test: torch.Tensor, run_dir: Path, k: int = 8) -> dict:
    """For the report page: up to k real test images per leaf and k of the TreeVAE's prior
    samples of it (tree/leaf_examples.npz); returns the class names and each leaf's histogram of
    the true classes of its test images (for metrics.json)."""
    from treediff.metrics.features import to_uint8_rgb
    from treediff.report import examples
    from treediff.vae.trainer import leaf_assignments

    leaf_of = leaf_assignments(model, x_test)
    real = {leaf: to_uint8_rgb(x_test[np.flatnonzero(leaf_of == leaf)[:k]]).numpy() for leaf in model.tree.leaves}
    gen = model.generate(k, generator=torch.Generator().manual_seed(0))
    examples.save(run_dir / examples.TREE_EXAMPLES, {"real": real, "treevae": {
        leaf: to_uint8_rgb(gen.images[leaf]).numpy() for leaf in model.tree.leaves}})
    out: dict = {"classes": [str(c) for c in (test.classes or [])]}
    if test.labels is not None:
        n_classes = max(len(out["classes"]), int(np.max(test.labels)) + 1)
        out["leaf_histograms"] = {str(leaf): np.bincount(np.asarray(test.labels)[leaf_of == leaf], minlength=n_classes).tolist()
                                  for leaf in model.tree.leaves}
    return out


def _tensorboard(cfg: JobConfig, run_dir: Path, plain: dict):
    from cluster.tensorboard import TBLogger
    tb = TBLogger(run_dir / "tb" / "driver")
    tb.text("config", "```\n" + yaml.safe_dump(plain, sort_keys=False) + "\n```")
    return tb


@torch.no_grad()
def _log_final_tree(tb, model, x_test: torch.Tensor, sizes: dict[int, int], report: dict) -> None:
    """The final tree with leaf sizes, reconstructions and prior samples per leaf, metrics."""
    from treediff.report.figures import tree_figure

    tb.figure("tree/final", tree_figure(model.tree, sizes), 0)
    x_hat, leaf_of = model.reconstruct(x_test[:512])
    for leaf in model.tree.leaves:
        rows = (leaf_of == leaf).nonzero(as_tuple=True)[0][:8]
        if len(rows):
            tb.images(f"reconstructions/leaf_{leaf}", torch.cat([x_test[:512][rows], x_hat[rows]]), 0, nrow=len(rows))
    gen = model.generate(8, generator=torch.Generator().manual_seed(0))
    for leaf in model.tree.leaves:
        tb.images(f"samples/leaf_{leaf}", gen.images[leaf], 0)
    tb.scalars({k: v for k, v in report.items() if isinstance(v, float)}, 0, prefix="metrics/")
    tb.close()
