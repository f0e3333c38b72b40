"""`treediff sweep`: checkpoints x sampler settings (DDIM steps, eta, guidance weight) x seeds.

Every cell is a generation FID (sweep.num_samples samples routed from the tree's prior, against
the cached test statistics) and the mean leaf purity of those samples. All cells' chunks go to
the same farm; a cell is written to run_dir/sweeps/<name>/cells/<cell>.json the moment its last
chunk lands, so an interrupted sweep re-run computes only the missing cells. The table of all
cells is written as results.csv and results.md, and each cell as a row of TensorBoard's HParams.
"""
from __future__ import annotations

import csv
import itertools
import json
import os
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import torch

from treediff.eval.chunks import merge_results

from . import evaluate as ev
from .data import check_shape, load_split
from .runtime import ensure_shards, session
from .schema import JobConfig

COLUMNS = ["cell", "checkpoint", "steps", "eta", "w", "seed", "n", "fid", "fid_treevae", "mean_purity", "label"]


def cells(cfg: JobConfig, names: list[str]) -> list[dict[str, Any]]:
    s = cfg.sweep
    out = []
    for name, steps, eta, w, seed in itertools.product(names, s.steps, s.eta, s.w, s.seeds):
        cell = f"{name}-steps{steps}-eta{eta:g}-w{w:g}-seed{seed}"
        out.append({"cell": cell, "checkpoint": name, "steps": steps, "eta": eta, "w": w, "seed": seed})
    return out


def _write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(f".tmp-{path.name}-{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=2))
    tmp.replace(path)


def run(cfg: JobConfig, plain: dict) -> list[dict[str, Any]]:
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    with session(cfg):
        return _run(cfg, plain)


def _run(cfg: JobConfig, plain: dict) -> list[dict[str, Any]]:
    from cluster.tensorboard import TBLogger

    run_dir, s = Path(cfg.run_dir), cfg.sweep
    found = ev.checkpoints(cfg, s.checkpoints)
    grid = cells(cfg, list(found))
    samplers = {}
    for c in grid:  # every setting is checked before any work
        sampler = replace(cfg.sampler, steps=c["steps"], eta=c["eta"], w=c["w"])
        sampler.check_against(cfg.diffusion)
        samplers[c["cell"]] = asdict(sampler)
    out_dir = run_dir / "sweeps" / s.name
    cell_dir = out_dir / "cells"
    cell_dir.mkdir(parents=True, exist_ok=True)
    done = {c["cell"] for c in grid if (cell_dir / f"{c['cell']}.json").is_file()}
    todo = [c for c in grid if c["cell"] not in done]
    print(f"[sweep] {s.name}: {len(grid)} cells ({len(done)} already done, {len(todo)} to compute); "
          f"{cfg.eval.workers} farm workers", flush=True)
    if todo:
        test = load_split(cfg.data, "test")
        check_shape(test, cfg.model.in_channels, cfg.model.image_size)
        if cfg.cluster.runtime == "ray":
            ensure_shards(cfg, plain, "sweep")
        farm = ev.Farm(cfg)
        spec = ev.extractor_spec(cfg)
        ref = ev.reference_stats(cfg, farm, test.images, spec)
        classifier = ev.train_classifier(cfg, plain, test) if cfg.eval.classifier else None
        n_classes = ev.n_classes_of(test)
        label = ev.fid_label(cfg.eval.extractor, s.num_samples, cfg.data.name, len(test))
        chunks = []
        for c in todo:
            planned = ev.plan(cfg, c["checkpoint"], found[c["checkpoint"]], samplers[c["cell"]], spec, c["seed"],
                              ["generation"], s.num_samples, None, classifier, n_classes, farm.device)
            chunks += [replace(ch, key=c["cell"]) for ch in planned]
        remaining = {c["cell"]: sum(ch.key == c["cell"] for ch in chunks) for c in todo}
        landed: dict[str, list] = {c["cell"]: [] for c in todo}
        by_cell = {c["cell"]: c for c in todo}
        tb = TBLogger(run_dir / "tb" / "sweep" / s.name)

        def on_result(i: int, result) -> None:
            key = result.key
            landed[key].append((i, result))
            remaining[key] -= 1
            if remaining[key]:
                return
            merged = merge_results([r for _, r in sorted(landed.pop(key), key=lambda t: t[0])])
            row = dict(by_cell[key], n=merged.n, label=label,
                       fid=ev.frechet_distance(merged.stats["samples"], ref),
                       fid_treevae=ev.frechet_distance(merged.stats["treevae"], ref),
                       mean_purity=ev.purity_report(merged.class_counts)["mean_purity"] if merged.class_counts else None,
                       wall_s=merged.wall_s, sampler=samplers[key])
            _write_json(cell_dir / f"{key}.json", row)
            metrics = {"sweep/fid": row["fid"], "sweep/fid_treevae": row["fid_treevae"]}
            if row["mean_purity"] is not None:
                metrics["sweep/mean_purity"] = row["mean_purity"]
            tb.hparams({k: row[k] for k in ("checkpoint", "steps", "eta", "w", "seed")}, metrics, run_name=key)
            print(f"[sweep] {key}: FID {row['fid']:.2f} (TreeVAE {row['fid_treevae']:.2f})"
                  + (f", purity {row['mean_purity']:.3f}" if row["mean_purity"] is not None else ""), flush=True)

        try:
            ev.Farm(cfg).run(chunks, f"sweep {s.name}", on_result=on_result)
        finally:
            tb.close()
    rows = [json.loads((cell_dir / f"{c['cell']}.json").read_text()) for c in grid]
    _write_table(out_dir, rows)
    from treediff.report.page import build_sweep
    print(f"[sweep] results: {build_sweep(out_dir)} ({out_dir / 'results.md'})", flush=True)
    return rows


def _fmt(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else ("" if v is None else str(v))


def _write_table(out_dir: Path, rows: list[dict[str, Any]]) -> None:
    with open(out_dir / "results.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(_fmt(r.get(k)) for k in COLUMNS) + " |" for r in rows]
    (out_dir / "results.md").write_text("\n".join(lines) + "\n")
