"""`treediff evaluate`: FID farmed over workers, leaf purity, clustering metrics -> a report.

For every trained diffusion checkpoint (eval.checkpoints, default all under run_dir/diffusion)
and every mode in eval.modes:
  generation  eval.num_samples samples routed from the tree's prior: FID of the diffusion
              samples and of the TreeVAE's own decodings of the same draws
  leaf        eval.samples_per_leaf samples per leaf: FID per leaf and the purity of each leaf
              (the classifier's predicted classes of its generations)
  recon       the first eval.num_recon test images reconstructed through their posterior path
All FIDs are against the test split, whose statistics are computed once per data digest and
extractor and cached in eval.cache_dir. Results: run_dir/eval/report.json and report.md, the
purity figures (PNG and TensorBoard), and "eval" in metrics.json.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from treediff.checkpoint import TREE, WEIGHTS
from treediff.data.tensors import to_model_range
from treediff.diffusion.trainer import is_complete
from treediff.eval.chunks import Chunk, merge_results, split_indices
from treediff.metrics.features import Extractor, inception_weights
from treediff.metrics.fid import FeatureStats, frechet_distance
from treediff.metrics.purity import purity_report  # noqa: F401 (the sweep uses it from here)
from treediff.tree import Tree

from .data import check_shape, load_split
from .metrics import update_metrics
from .runtime import ensure_shards, is_local, session
from .schema import JobConfig

LEAF_INDEX_BASE = 1_000_000  # leaf mode: leaf l's samples are indices (l + 1) * base + i


def checkpoints(cfg: JobConfig, names: list[str]) -> dict[str, Path]:
    """name -> diffusion checkpoint directory; every named one must be complete."""
    root = Path(cfg.run_dir) / "diffusion"
    if names:
        found = {n: root / n for n in names}
        missing = [str(p) for p in found.values() if not is_complete(p)]
        if missing:
            raise FileNotFoundError(f"no trained diffusion checkpoint at {', '.join(missing)} "
                                    f"(train it with `treediff diffuse run_dir={cfg.run_dir} diffusion.conditioning=...`)")
        return found
    found = {p.name: p for p in sorted(root.glob("*")) if is_complete(p)} if root.is_dir() else {}
    if not found:
        raise FileNotFoundError(f"no trained diffusion checkpoint under {root} (run `treediff diffuse` or "
                                f"`treediff pipeline` first)")
    return found


def extractor_spec(cfg: JobConfig) -> dict[str, Any]:
    weights = inception_weights(cfg.eval.inception_weights) if cfg.eval.extractor == "inception" else None
    return {"name": cfg.eval.extractor, "weights": weights, "batch_size": cfg.eval.batch_size}


def fid_label(extractor: str, n: int, data: str, n_ref: int) -> str:
    kind = "FID" if extractor == "inception" else "pixel-FD (not Inception FID)"
    return f"{kind}-{n} vs {data} test ({n_ref} images)"


def data_digest(cfg: JobConfig, test_images: np.ndarray) -> str:
    """The shard manifest's digest when the shards exist, else a hash of the test images."""
    from treediff.data.shards import MANIFEST, ShardSet
    if (Path(cfg.shards.path) / MANIFEST).is_file():
        return ShardSet.open(cfg.shards.path).digest()
    h = hashlib.sha256(test_images.tobytes())
    h.update(str(test_images.shape).encode())
    return h.hexdigest()


class Farm:
    """The job's view of cluster.farm: workers, runtime and device from the config."""

    def __init__(self, cfg: JobConfig):
        self.cfg = cfg
        self.device = "cuda" if cfg.eval.use_gpu else "cpu"

    def run(self, chunks: list[Chunk], desc: str, on_result=None):
        from cluster.farm import run_farm
        e = self.cfg.eval
        return run_farm(chunks, e.workers, self.cfg.cluster.runtime, e.cpus_per_worker, e.use_gpu, desc, on_result)


def reference_stats(cfg: JobConfig, farm: Farm, test_images: np.ndarray, spec: dict[str, Any]) -> FeatureStats:
    digest = data_digest(cfg, test_images)
    # normalised: "shards/digits/../fid_stats" must not create shards/digits (an empty directory
    # there would be refused later as "not a shard set" by the Ray runtime's prepare)
    path = Path(os.path.normpath(cfg.eval.cache_dir)) / f"{cfg.data.name}-test{len(test_images)}-{cfg.eval.extractor}-{digest[:16]}.npz"
    if path.is_file():
        print(f"[evaluate] reference statistics from the cache {path}", flush=True)
        return FeatureStats.load(path)
    chunks = [Chunk("reference", "reference", idx, spec, images=test_images[idx], device=farm.device)
              for idx in split_indices(len(test_images), cfg.eval.chunk_size)]
    stats = merge_results(farm.run(chunks, "reference")).stats["samples"]
    stats.save(path)
    print(f"[evaluate] reference statistics of {len(test_images)} test images cached at {path}", flush=True)
    return stats


def n_classes_of(test) -> int:
    """Classes of a labelled split (0 when it has no labels)."""
    if test.labels is None:
        return 0
    return len(test.classes) if test.classes else int(test.labels.max()) + 1


def train_classifier(cfg: JobConfig, plain: dict, test) -> Path | None:
    """The purity classifier (run_dir/classifier), trained once; None when the data has no labels."""
    from treediff.eval.classifier import (ClassifierStage, classifier_info, load_classifier, predict,
                                          save_classifier)
    path = Path(cfg.run_dir) / "classifier"
    if test.labels is None:
        print("[evaluate] the data set has no labels: no purity classifier, no purity", flush=True)
        return None
    n_classes = n_classes_of(test)
    if (path / "config.json").is_file():
        info = classifier_info(path)
        print(f"[evaluate] purity classifier {path} (test accuracy {info['test_acc']:.3f})", flush=True)
        return path
    stage = ClassifierStage(cfg.model.in_channels, n_classes, epochs=cfg.eval.classifier_epochs,
                            lr=cfg.eval.classifier_lr)
    start = time.perf_counter()
    if cfg.cluster.runtime == "ray":
        from cluster.loop import StageData, fit_stage
        shards = ensure_shards(cfg, plain, "evaluate")
        stale = Path(cfg.trainer.storage_path) / "classifier"
        if stale.exists():  # a run that died before saving: Ray Train would resume it; start afresh
            shutil.rmtree(stale)
        data = StageData(shards.root, global_batch=cfg.eval.classifier_batch, seed=cfg.eval.seed)
        export, _ = fit_stage(stage, data, cfg.trainer, name="classifier", local=is_local(cfg),
                              batch_key="eval.classifier_batch",
                              tb_dir=str(Path(cfg.run_dir) / "tb" / "classifier"))
        model = stage.build()
        stage.load_export(model, export)
    else:
        from treediff.stages.base import run_plain
        train = load_split(cfg.data, "train")
        x, y = to_model_range(train.images), torch.as_tensor(train.labels).long()
        b = cfg.eval.classifier_batch
        steps = max(1, len(x) // b)

        def batches(epoch: int):
            order = torch.randperm(len(x), generator=torch.Generator().manual_seed(cfg.eval.seed * 1000 + epoch))
            for i in range(steps):
                idx = order[i * b:(i + 1) * b]
                yield x[idx], y[idx], None
        model, _ = run_plain(stage, batches, steps, seed=cfg.eval.seed)
    acc = float((predict(model, to_model_range(test.images)).numpy() == test.labels).mean())
    save_classifier(path, model, {"test_acc": acc, "n_classes": n_classes, "classes": list(test.classes or []),
                                  "epochs": cfg.eval.classifier_epochs, "wall_s": time.perf_counter() - start})
    load_classifier(path)  # check it reads back
    print(f"[evaluate] purity classifier trained: test accuracy {acc:.3f} ({path})", flush=True)
    return path


def plan(cfg: JobConfig, name: str, ckpt: Path, sampler: dict[str, Any], spec: dict[str, Any], seed: int,
         modes: list[str], num_samples: int, test_images: np.ndarray | None, classifier: Path | None,
         n_classes: int, device: str, guidance: list[float] | None = None) -> list[Chunk]:
    """The chunks of one checkpoint's evaluation (keys: "<name>/<mode>", "<name>/leaf/<leaf>" and,
    for each guidance weight of `guidance` other than the sampler's, "<name>/guidance/<w>")."""
    e = cfg.eval
    common = {"extractor": spec, "seed": seed, "checkpoint": str(ckpt), "sampler": sampler,
              "classifier": str(classifier) if classifier else None, "n_classes": n_classes, "device": device}
    chunks = []
    if "generation" in modes:
        chunks += [Chunk(f"{name}/generation", "generation", idx, **common)
                   for idx in split_indices(num_samples, e.chunk_size)]
        for w in guidance or []:  # the same draws at other guidance weights (w = sampler.w is the generation itself)
            if w != sampler["w"]:
                chunks += [Chunk(f"{name}/guidance/{w:g}", "generation", idx, **(common | {"sampler": sampler | {"w": w}}))
                           for idx in split_indices(num_samples, e.chunk_size)]
    if "leaf" in modes:
        draw = {"min_prob": e.leaf_min_prob if e.leaf_draw == "highprob" else None, "draws": e.leaf_draws}
        for leaf in Tree.load(ckpt / TREE).leaves:
            chunks += [Chunk(f"{name}/leaf/{leaf}", "leaf", idx, leaf=leaf, features=e.leaf_fid, **draw, **common)
                       for idx in split_indices(e.samples_per_leaf, e.chunk_size, start=(leaf + 1) * LEAF_INDEX_BASE)]
    if "recon" in modes:
        chunks += [Chunk(f"{name}/recon", "recon", idx, images=test_images[idx], **common)
                   for idx in split_indices(len(test_images), e.chunk_size)]
    return chunks


def group(results) -> dict[str, Any]:
    by_key: dict[str, list] = {}
    for r in results:
        by_key.setdefault(r.key, []).append(r)
    return {k: merge_results(v) for k, v in by_key.items()}


def summarize(name: str, merged: dict[str, Any], ref: FeatureStats, label: dict[str, str],
              sampler_w: float = 1.0, guidance: list[float] | None = None) -> dict[str, Any]:
    """FIDs and purity of one checkpoint from its merged chunk results."""
    out: dict[str, Any] = {}
    gen = merged.get(f"{name}/generation")
    if gen is not None:
        out["generation"] = {"n": gen.n, "label": label["generation"], "fid": frechet_distance(gen.stats["samples"], ref),
                             "fid_treevae": frechet_distance(gen.stats["treevae"], ref), "wall_s": gen.wall_s}
        if gen.class_counts:  # routed from the prior: size-weighted over the leaves the draws reached
            out["generation"]["purity"] = purity_report(gen.class_counts)
            out["generation"]["mean_purity"] = out["generation"]["purity"]["mean_purity"]
            out["generation"]["mean_purity_treevae"] = purity_report(gen.class_counts_treevae)["mean_purity"]
        sweep = {}
        for w in guidance or []:
            m = gen if w == sampler_w else merged.get(f"{name}/guidance/{w:g}")
            if m is not None:
                sweep[f"{w:g}"] = {"fid": frechet_distance(m.stats["samples"], ref),
                                   "mean_purity": purity_report(m.class_counts)["mean_purity"] if m.class_counts else None}
        if sweep:
            out["guidance"] = {"n": gen.n, "label": label["generation"], "w": sweep}
    rec = merged.get(f"{name}/recon")
    if rec is not None:
        out["recon"] = {"n": rec.n, "label": label["recon"], "fid": frechet_distance(rec.stats["samples"], ref),
                        "fid_treevae": frechet_distance(rec.stats["treevae"], ref), "wall_s": rec.wall_s}
    leaves = {int(k.rsplit("/", 1)[1]): m for k, m in merged.items() if k.startswith(f"{name}/leaf/")}
    if leaves:
        entry: dict[str, Any] = {"samples_per_leaf": next(iter(leaves.values())).n, "label": label["leaf"],
                                 "fid": {l: frechet_distance(m.stats["samples"], ref) for l, m in sorted(leaves.items())
                                         if "samples" in m.stats}}
        counts = {l: m.class_counts[l] for l, m in leaves.items() if l in m.class_counts}
        if counts:
            entry["purity"] = purity_report(counts)
            counts_treevae = {l: m.class_counts_treevae[l] for l, m in leaves.items() if l in m.class_counts_treevae}
            entry["purity_treevae"] = purity_report(counts_treevae)["mean_purity"]
            entry["class_counts_treevae"] = {l: c.tolist() for l, c in sorted(counts_treevae.items())}
        probs = [p for m in leaves.values() for p in m.leaf_probs]
        if probs:  # high-probability draws: how probable the kept draws' leaves were
            entry["draws"] = {"mean_leaf_prob": float(np.mean(probs)), "min_leaf_prob": float(np.min(probs))}
        out["leaf"] = entry
    return out


def floor_chunks(cfg: JobConfig, spec: dict[str, Any], device: str) -> list[Chunk]:
    """FID's floor: eval.num_samples real training images (never in the test reference), chosen by
    eval.seed, as "reference" chunks keyed "floor"."""
    train = load_split(cfg.data, "train")
    n = min(cfg.eval.num_samples, len(train))
    rows = np.sort(np.random.default_rng(cfg.eval.seed).choice(len(train), n, replace=False))
    return [Chunk("floor", "reference", idx, spec, images=train.images[rows[idx]], device=device)
            for idx in split_indices(n, cfg.eval.chunk_size)]


def diagnostics(cfg: JobConfig, test, classifier: Path, n_classes: int, ckpt: Path, out_dir: Path) -> dict[str, Any]:
    """The ceiling (the tree's purity on the real test images, by their leaf) and the purity
    classifier's confusion on them, with its figure."""
    from treediff.diffusion.trainer import load_denoiser
    from treediff.eval.classifier import load_classifier, predict
    from treediff.eval.diagnostics import confusion, confusion_figure, purity_ceiling
    from treediff.eval.plots import save_figure

    x_test = to_model_range(test.images)
    predicted = predict(load_classifier(classifier), x_test).numpy()
    _, tree_model = load_denoiser(ckpt)
    ceiling = purity_ceiling(tree_model, x_test, test.labels, n_classes, predicted)
    conf = confusion(test.labels, predicted, n_classes)
    conf["figure"] = str(save_figure(confusion_figure(conf, list(test.classes or [])), out_dir / "confusion.png"))
    print(f"[evaluate] ceiling: the tree's leaf purity on the {ceiling['n']} real test images {ceiling['mean_purity']:.3f} "
          f"(per-leaf mean {ceiling['per_leaf_mean']:.3f}; as the classifier sees them "
          f"{ceiling['classifier_mean_purity']:.3f}); classifier accuracy {conf['accuracy']:.3f}", flush=True)
    return {"ceiling": ceiling, "confusion": conf}


def caveats(report: dict[str, Any]) -> list[str]:
    """What a reader of the report's purities must know (treediff.eval.diagnostics.purity_caveats)."""
    from treediff.eval.diagnostics import purity_caveats

    accuracy = (report.get("confusion") or {}).get("accuracy", (report.get("classifier") or {}).get("test_acc"))
    routed = {name: r["generation"]["purity"] for name, r in report["checkpoints"].items()
              if "purity" in r.get("generation", {})}
    return purity_caveats(accuracy, routed)


def markdown(report: dict[str, Any]) -> str:
    lines = [f"# Evaluation of {report['run_dir']}", ""]
    tree = report.get("tree") or {}
    if "nmi" in tree:
        lines += [f"Tree ({len(tree.get('leaves', []))} leaves) on the test split: NMI {tree['nmi']:.3f}, "
                  f"ACC {tree['acc']:.3f}, ARI {tree['ari']:.3f}, leaf purity {tree['leaf_purity']:.3f}, "
                  f"dendrogram purity {tree['dendrogram_purity']:.3f}", ""]
    if report.get("classifier"):
        lines += [f"Purity classifier: test accuracy {report['classifier']['test_acc']:.3f}", ""]
    if report.get("caveats"):
        lines += ["Caveats:", *[f"- {line}" for line in report["caveats"]], ""]
    if report.get("ceiling"):
        c = report["ceiling"]
        lines += [f"Ceiling: the tree's leaf purity on the {c['n']} real test images {c['mean_purity']:.3f} "
                  f"(per-leaf mean {c['per_leaf_mean']:.3f}; with the classifier's labels {c['classifier_mean_purity']:.3f})", ""]
    if report.get("confusion"):
        lines += [f"Classifier confusion on the real test split: {report['confusion']['figure']}", ""]
    if report.get("fid_floor"):
        f = report["fid_floor"]
        lines += [f"FID floor ({f['label']}): {f['what']}: {f['fid']:.2f}", ""]
    lines += ["| checkpoint | metric | diffusion | TreeVAE |", "|---|---|---|---|"]
    for name, r in report["checkpoints"].items():
        for mode in ("generation", "recon"):
            if mode in r:
                lines.append(f"| {name} | {mode}: {r[mode]['label']} | {r[mode]['fid']:.2f} | {r[mode]['fid_treevae']:.2f} |")
        if "leaf" in r:
            purity = r["leaf"].get("purity", {}).get("leaves", {})
            for leaf in sorted(set(r["leaf"]["fid"]) | set(purity)):
                fid, p = r["leaf"]["fid"].get(leaf), purity.get(leaf)
                cells = ([f"{r['leaf']['label']} {fid:.2f}"] if fid is not None else []) + \
                        ([f"purity {p['purity']:.2f} (class {p['majority']}), entropy {p['entropy']:.2f}"] if p else [])
                lines.append(f"| {name} | leaf {leaf} ({r['leaf']['samples_per_leaf']} samples) | {'; '.join(cells)} | |")
            if "purity" in r["leaf"]:
                lines.append(f"| {name} | per-leaf purity (mean) | {r['leaf']['purity']['mean_purity']:.3f} "
                             f"| {r['leaf']['purity_treevae']:.3f} |")
            if "purity_vs_ceiling" in r["leaf"]:
                lines.append(f"| {name} | per-leaf purity / ceiling | {r['leaf']['purity_vs_ceiling']:.3f} | |")
        if "mean_purity" in r.get("generation", {}):
            g = r["generation"]
            lines.append(f"| {name} | routed purity (generation) | {g['mean_purity']:.3f} | {g['mean_purity_treevae']:.3f} |")
            if "purity_vs_ceiling" in g:
                lines.append(f"| {name} | routed purity / ceiling | {g['purity_vs_ceiling']:.3f} | |")
        for w, v in (r.get("guidance") or {}).get("w", {}).items():
            purity = f", purity {v['mean_purity']:.3f}" if v["mean_purity"] is not None else ""
            lines.append(f"| {name} | guidance w = {w}: {r['guidance']['label']}{purity} | {v['fid']:.2f} | |")
    return "\n".join(lines) + "\n"


def run(cfg: JobConfig, plain: dict) -> dict[str, Any]:
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    with session(cfg):
        return _run(cfg, plain)


def _run(cfg: JobConfig, plain: dict) -> dict[str, Any]:
    from cluster.tensorboard import TBLogger
    from treediff.eval.plots import purity_figure, save_figure

    run_dir, e = Path(cfg.run_dir), cfg.eval
    found = checkpoints(cfg, e.checkpoints)
    test = load_split(cfg.data, "test")
    check_shape(test, cfg.model.in_channels, cfg.model.image_size)
    if cfg.cluster.runtime == "ray":
        ensure_shards(cfg, plain, "evaluate")  # the classifier trains from them; their digest keys the cache
    n_recon = len(test) if e.num_recon == 0 else min(e.num_recon, len(test))
    farm = Farm(cfg)
    spec = extractor_spec(cfg)
    print(f"[evaluate] {', '.join(found)}: modes {e.modes}; extractor {e.extractor}; {e.workers} farm workers "
          f"({cfg.cluster.runtime})", flush=True)
    ref = reference_stats(cfg, farm, test.images, spec)
    classifier = train_classifier(cfg, plain, test) if e.classifier else None
    n_classes = n_classes_of(test)
    label = {"generation": fid_label(e.extractor, e.num_samples, cfg.data.name, len(test)),
             "recon": fid_label(e.extractor, n_recon, cfg.data.name, len(test)),
             "leaf": fid_label(e.extractor, e.samples_per_leaf, cfg.data.name, len(test))}
    chunks = []
    for name, ckpt in found.items():
        chunks += plan(cfg, name, ckpt, asdict(cfg.sampler), spec, e.seed, e.modes, e.num_samples,
                       test.images[:n_recon], classifier, n_classes, farm.device, guidance=e.guidance)
    if e.floor and "generation" in e.modes:
        chunks += floor_chunks(cfg, spec, farm.device)
    start = time.perf_counter()
    merged = group(farm.run(chunks, "evaluate"))
    wall = time.perf_counter() - start
    tree_metrics = {}
    metrics_path = run_dir / "metrics.json"
    if metrics_path.is_file():
        tree_metrics = json.loads(metrics_path.read_text()).get("tree", {})
    report: dict[str, Any] = {"run_dir": str(run_dir), "extractor": e.extractor, "reference": f"{cfg.data.name} test",
                              "n_reference": len(test), "sampler": asdict(cfg.sampler), "seed": e.seed,
                              "workers": e.workers, "farm_wall_s": wall, "tree": tree_metrics,
                              "classifier": json.loads((classifier / "config.json").read_text()) if classifier else None,
                              "checkpoints": {}}
    out_dir = run_dir / "eval"
    tb = TBLogger(run_dir / "tb" / "eval")
    if "floor" in merged:
        report["fid_floor"] = {"n": merged["floor"].n, "label": label["generation"],
                               "fid": frechet_distance(merged["floor"].stats["samples"], ref),
                               "what": f"{merged['floor'].n} held-out real images (training split) against the same reference"}
        print(f"[evaluate] FID floor: {report['fid_floor']['what']}: {report['fid_floor']['fid']:.2f}", flush=True)
    if classifier is not None:
        report |= diagnostics(cfg, test, classifier, n_classes, next(iter(found.values())), out_dir)
    for name in found:
        r = summarize(name, merged, ref, label, cfg.sampler.w, e.guidance)
        r["weights"] = weights_stamp(found[name])
        report["checkpoints"][name] = r
        ceiling = (report.get("ceiling") or {})
        if "mean_purity" in r.get("generation", {}) and ceiling:
            r["generation"]["purity_vs_ceiling"] = r["generation"]["mean_purity"] / ceiling["mean_purity"]
        if "purity" in r.get("leaf", {}) and ceiling:
            r["leaf"]["purity_vs_ceiling"] = r["leaf"]["purity"]["mean_purity"] / ceiling["per_leaf_mean"]
        for mode in ("generation", "recon"):
            if mode in r:
                tb.scalars({f"eval/{name}/{mode}/fid{r[mode]['n']}": r[mode]["fid"],
                            f"eval/{name}/{mode}/fid{r[mode]['n']}_treevae": r[mode]["fid_treevae"]}, 0)
                print(f"[evaluate] {name} {mode}: {r[mode]['label']}: diffusion {r[mode]['fid']:.2f}, "
                      f"TreeVAE {r[mode]['fid_treevae']:.2f}", flush=True)
        g = r.get("generation", {})
        if "mean_purity" in g:
            vs = f" = {g['purity_vs_ceiling']:.2f} x the ceiling" if "purity_vs_ceiling" in g else ""
            print(f"[evaluate] {name} routed purity {g['mean_purity']:.3f}{vs} (TreeVAE decodings "
                  f"{g['mean_purity_treevae']:.3f})", flush=True)
        for w, v in (r.get("guidance") or {}).get("w", {}).items():
            purity = f"purity {v['mean_purity']:.3f}, " if v["mean_purity"] is not None else ""
            print(f"[evaluate] {name} guidance w = {w}: {purity}FID {v['fid']:.2f}", flush=True)
        if "purity" in r.get("leaf", {}):
            pr = r["leaf"]["purity"]
            tb.scalars({f"eval/{name}/leaf/mean_purity": pr["mean_purity"]}, 0)
            preview = {l: merged[f"{name}/leaf/{l}"].preview[l] for l in pr["leaves"]}
            title = f"{name}: purity of {r['leaf']['samples_per_leaf']} generations per leaf"
            png = save_figure(purity_figure(preview, pr, list(test.classes or []), title), out_dir / f"purity_{name}.png")
            tb.figure(f"eval/{name}/purity", purity_figure(preview, pr, list(test.classes or []), title), 0)
            r["leaf"]["figure"] = str(png)
            print(f"[evaluate] {name} leaf purity: mean {pr['mean_purity']:.3f} "
                  + " ".join(f"{l}:{v['purity']:.2f}" for l, v in pr["leaves"].items()) + f" ({png})", flush=True)
    kept = keep_earlier(report, out_dir / "report.json", run_dir)
    report["caveats"] = caveats(report)
    for line in report["caveats"]:
        print(f"[evaluate] caveat: {line}", flush=True)
    tb.text("eval/report", markdown(report))
    tb.close()
    out_dir.mkdir(parents=True, exist_ok=True)
    save_examples(run_dir, found, merged, kept)
    (out_dir / "report.json").write_text(json.dumps(report, indent=2, default=str))
    (out_dir / "report.md").write_text(markdown(report))
    update_metrics(run_dir, ["eval"], {name: r for name, r in report["checkpoints"].items()})
    page = build_page(run_dir)
    print(f"[evaluate] report {page} ({out_dir / 'report.md'}; farm {wall:.1f} s)", flush=True)
    return report


# What makes two evaluations' figures comparable: the same features, reference, sampler and seeds.
SETTINGS = ("extractor", "reference", "n_reference", "sampler", "seed")


def weights_stamp(ckpt: Path) -> dict[str, int]:
    """Which weights a result is of (a retrained checkpoint gets a new stamp)."""
    st = (ckpt / WEIGHTS).stat()
    return {"bytes": st.st_size, "mtime_ns": st.st_mtime_ns}


def keep_earlier(report: dict[str, Any], previous: Path, run_dir: Path) -> list[str]:
    """Carry over the earlier report's results of the checkpoints this evaluation did not score
    (`eval.checkpoints=[path]` re-scores path and keeps recon's results), where they are still
    valid: the same settings (SETTINGS), the checkpoint still complete and its weights unchanged.
    The others are dropped, each with a line saying why. Returns the names kept."""
    if not previous.is_file():
        return []
    try:
        before = json.loads(previous.read_text())
    except json.JSONDecodeError:
        print(f"[evaluate] {previous} is not valid JSON: its earlier results are not carried over", flush=True)
        return []
    kept = []
    for name, r in (before.get("checkpoints") or {}).items():
        if name in report["checkpoints"]:
            continue
        ckpt = run_dir / "diffusion" / name
        changed = [k for k in SETTINGS if before.get(k) != report.get(k)]
        why = (f"its settings differ ({', '.join(changed)})" if changed
               else "its checkpoint is gone" if not is_complete(ckpt)
               else "it records no weights stamp (an older report)" if "weights" not in r
               else "its weights changed since" if r["weights"] != weights_stamp(ckpt) else None)
        if why:
            print(f"[evaluate] the earlier results of {name} are dropped: {why}; "
                  f"re-score it with eval.checkpoints=[{name}]", flush=True)
            continue
        report["checkpoints"][name] = r
        kept.append(name)
    if kept:
        print(f"[evaluate] kept the earlier results of {', '.join(kept)} (same settings, same weights)", flush=True)
    report["checkpoints"] = dict(sorted(report["checkpoints"].items()))
    return kept


def save_examples(run_dir: Path, found: dict[str, Path], merged: dict[str, Any], kept: list[str] = ()) -> None:
    """The report page's per-leaf images: each checkpoint's per-leaf samples and the TreeVAE
    decodings of the same draws (treediff/report/examples.py); those of the `kept` checkpoints
    (results carried over from the earlier evaluation) stay as they were."""
    from treediff.report import examples

    earlier = examples.load(run_dir / examples.EVAL_EXAMPLES)
    groups: dict[str, dict[int, Any]] = {g: v for g, v in earlier.items() if g.split("/")[0] in kept}
    for name in found:
        for key, m in merged.items():
            if key.startswith(f"{name}/leaf/"):
                groups.setdefault(f"{name}/samples", {}).update({l: v.numpy() for l, v in m.preview.items()})
                groups.setdefault(f"{name}/treevae", {}).update({l: v.numpy() for l, v in m.preview_treevae.items()})
    if groups:
        examples.save(run_dir / examples.EVAL_EXAMPLES, groups)


def build_page(run_dir: Path) -> Path:
    from treediff.report.page import build
    return build(run_dir)
