"""`<run_dir>/report.html`: one self-contained page per run (images inline as data URIs, no
network), built from the run directory alone: metrics.json, eval/report.json, the per-leaf
examples (examples.py), the phase checkpoints' meta.json and growth_log.jsonl, the TensorBoard
event files (loss curves) and config.yaml. What a run has not produced yet is left out.
"""
from __future__ import annotations

import base64
import csv
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
from jinja2 import Environment, PackageLoader, select_autoescape

from ..tree import Tree
from . import examples, figures

REPORT = "report.html"
SWEEP_PAGE = "sweep.html"


def _env() -> Environment:
    env = Environment(loader=PackageLoader("treediff.report", "templates"), autoescape=select_autoescape(["html", "j2"]),
                      trim_blocks=True, lstrip_blocks=True)
    env.filters["f3"] = lambda v: "" if v is None else (f"{v:.3f}" if isinstance(v, float) else str(v))
    env.filters["f2"] = lambda v: "" if v is None else (f"{v:.2f}" if isinstance(v, float) else str(v))
    return env


def data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text()) if path.is_file() else {}
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not valid JSON ({e})") from e


def _final_phase(run_dir: Path) -> Path | None:
    phases = sorted(p for p in (run_dir / "tree").glob("phase-*") if (p / "meta.json").is_file() and (p / "tree.json").is_file())
    return phases[-1] if phases else None


def growth(run_dir: Path) -> dict[str, Any]:
    """The growth's phases (name, kind, epochs, seconds in steps, overhead before them) and decisions."""
    phases, previous_end, first = [], None, None
    for p in sorted((run_dir / "tree").glob("phase-*")):
        meta = _json(p / "meta.json")
        if not meta:
            continue
        kind = p.name.split("-")[2]
        steps = float(meta.get("step_seconds") or 0.0)
        end = meta.get("trained_at")
        row = {"name": p.name, "kind": kind, "epochs": meta.get("epochs"), "subset": meta.get("subset"),
               "steps_s": steps, "overhead_s": 0.0, "start": 0.0,
               "reason": (meta.get("decision") or {}).get("reason", "")}
        if end:
            start = end - steps
            first = start if first is None else first
            if previous_end is not None:
                row["overhead_s"] = max(0.0, start - previous_end)
            row["start"] = start - first
            previous_end = end
        phases.append(row)
    log = run_dir / "tree" / "growth_log.jsonl"
    decisions = [json.loads(line) for line in log.read_text().splitlines() if line.strip()] if log.is_file() else []
    return {"phases": phases, "decisions": decisions,
            "timeline": data_uri(figures.timeline(phases)) if any(p["steps_s"] for p in phases) else None}


def loss_curves(run_dir: Path) -> list[dict[str, str]]:
    """One figure per stage from the TensorBoard scalars: the tree's loss per phase, the
    diffusion loss per mode, the evaluation's classifier if it logged one."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    series: dict[str, dict[str, list[tuple[int, float]]]] = {}
    for logdir in sorted(p for p in (run_dir / "tb").glob("*") if p.is_dir()):
        acc = EventAccumulator(str(logdir), size_guidance={"scalars": 0, "images": 1, "tensors": 1, "histograms": 1})
        acc.Reload()
        for tag in acc.Tags().get("scalars", []):
            parts = tag.split("/")
            if parts[-1] != "loss" or len(parts) < 3:
                continue
            stage, name = parts[0], "/".join(parts[1:-1])
            points = [(e.step, e.value) for e in acc.Scalars(tag)]
            series.setdefault(stage, {}).setdefault(name, []).extend(points)
    return [{"stage": stage, "figure": data_uri(figures.curves(s, f"{stage}: loss"))} for stage, s in sorted(series.items())]


def leaf_rows(run_dir: Path, tree_metrics: dict[str, Any], ev: dict[str, Any], classes: list[str]) -> list[dict[str, Any]]:
    """Per leaf: its size, real test images, TreeVAE decodings and each checkpoint's diffusion
    samples as strips, each above its class histogram."""
    tree_ex = examples.load(run_dir / examples.TREE_EXAMPLES)
    eval_ex = examples.load(run_dir / examples.EVAL_EXAMPLES)
    sizes = {int(k): v for k, v in (tree_metrics.get("leaf_sizes") or {}).items()}
    ceiling = {int(k): v for k, v in ((ev.get("ceiling") or {}).get("leaves") or {}).items()}
    hist_real = {int(k): v for k, v in (tree_metrics.get("leaf_histograms") or {}).items()}
    rows = []
    for leaf in tree_metrics.get("leaves", []):
        columns = []
        if leaf in tree_ex.get("real", {}):
            purity = ceiling.get(leaf, {}).get("purity")
            title = "real test images" + (f": purity {purity:.2f}" if purity is not None else "")
            columns.append({"title": title, "strip": data_uri(figures.strip(tree_ex["real"][leaf])),
                            "hist": data_uri(figures.histogram(hist_real[leaf], classes, "true classes")) if leaf in hist_real else None})
        for name, r in (ev.get("checkpoints") or {}).items():
            info = ((r.get("leaf") or {}).get("purity") or {}).get("leaves", {}).get(str(leaf))
            if leaf in eval_ex.get(f"{name}/treevae", {}) and name == next(iter(ev["checkpoints"])):
                counts = ((r.get("leaf") or {}).get("class_counts_treevae") or {}).get(str(leaf))
                columns.append({"title": "TreeVAE decodings", "strip": data_uri(figures.strip(eval_ex[f"{name}/treevae"][leaf])),
                                "hist": data_uri(figures.histogram(counts, classes, "classifier")) if counts else None})
            if leaf in eval_ex.get(f"{name}/samples", {}):
                title = f"diffusion ({name})" + (f": purity {info['purity']:.2f}" if info else "")
                columns.append({"title": title, "strip": data_uri(figures.strip(eval_ex[f"{name}/samples"][leaf])),
                                "hist": data_uri(figures.histogram(info["histogram"], classes, "classifier")) if info else None})
        if not any(c["title"] == "TreeVAE decodings" for c in columns) and leaf in tree_ex.get("treevae", {}):
            columns.append({"title": "TreeVAE prior samples", "strip": data_uri(figures.strip(tree_ex["treevae"][leaf])),
                            "hist": None})
        rows.append({"leaf": leaf, "size": sizes.get(leaf), "columns": columns})
    return rows


def _links(run_dir: Path) -> list[dict[str, str]]:
    out = []
    for p in [*sorted((run_dir / "tree").glob("phase-*"))[-1:], *sorted((run_dir / "diffusion").glob("*"))]:
        if p.is_dir():
            out.append({"what": "tree checkpoint" if p.parent.name == "tree" else f"diffusion checkpoint ({p.name})",
                        "href": str(p.relative_to(run_dir))})
    for p in sorted((run_dir / "sweeps").glob("*/" + SWEEP_PAGE)):
        out.append({"what": f"sweep {p.parent.name}", "href": str(p.relative_to(run_dir))})
    for name in ("eval/report.md", "eval/report.json", "metrics.json", "config.yaml"):
        if (run_dir / name).is_file():
            out.append({"what": name, "href": name})
    return out


def build(run_dir: str | Path) -> Path:
    """Write `<run_dir>/report.html` from what the run directory holds; returns its path."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"run directory {run_dir} not found")
    metrics = _json(run_dir / "metrics.json")
    tree_metrics = metrics.get("tree") or {}
    final = _final_phase(run_dir)
    if not tree_metrics and final is None:
        raise FileNotFoundError(f"{run_dir} holds no grown tree (no metrics.json tree entry, no tree/phase-*): "
                                f"run `treediff grow run_dir={run_dir}` first")
    ev = _json(run_dir / "eval" / "report.json")
    classes = list(tree_metrics.get("classes") or [])
    tree_png = None
    if final is not None:
        tree = Tree.load(final / "tree.json")
        sizes = {int(k): v for k, v in (tree_metrics.get("leaf_sizes") or {}).items()}
        tree_png = data_uri(figures.png(figures.tree_figure(tree, sizes or None)))
    confusion = (ev.get("confusion") or {}).get("figure")
    confusion_png = data_uri(Path(confusion).read_bytes()) if confusion and Path(confusion).is_file() else None
    if confusion_png is None and (run_dir / "eval" / "confusion.png").is_file():
        confusion_png = data_uri((run_dir / "eval" / "confusion.png").read_bytes())
    page = _env().get_template("report.html.j2").render(
        run_dir=str(run_dir.resolve()), built=time.strftime("%Y-%m-%d %H:%M:%S"), tree=tree_metrics, tree_png=tree_png,
        baselines=tree_metrics.get("baselines") or [], ev=ev, diffusion=metrics.get("diffusion") or {},
        leaves=leaf_rows(run_dir, tree_metrics, ev, classes), growth=growth(run_dir), losses=loss_curves(run_dir),
        confusion_png=confusion_png, config=(run_dir / "config.yaml").read_text() if (run_dir / "config.yaml").is_file() else "",
        links=_links(run_dir), tb_command=f"treediff monitor run_dir={run_dir}   # or: tensorboard --logdir {run_dir / 'tb'} --host 127.0.0.1")
    out = run_dir / REPORT
    tmp = out.with_name(f".tmp-{out.name}")
    tmp.write_text(page)
    tmp.replace(out)
    return out


def build_sweep(sweep_dir: str | Path) -> Path:
    """`<sweep_dir>/sweep.html`: the sweep's cells (results.csv) as a sortable table."""
    sweep_dir = Path(sweep_dir)
    table = sweep_dir / "results.csv"
    if not table.is_file():
        raise FileNotFoundError(f"no sweep results at {table}")
    with open(table, newline="") as f:
        rows = list(csv.DictReader(f))
    columns = list(rows[0]) if rows else []
    numeric = {c for c in columns if rows and all(_is_number(r[c]) for r in rows if r[c] != "")}
    page = _env().get_template("sweep.html.j2").render(name=sweep_dir.name, rows=rows, columns=columns, numeric=numeric,
                                                        built=time.strftime("%Y-%m-%d %H:%M:%S"))
    out = sweep_dir / SWEEP_PAGE
    out.write_text(page)
    return out


def _is_number(v: str) -> bool:
    try:
        float(v)
        return True
    except ValueError:
        return False


__all__ = ["REPORT", "SWEEP_PAGE", "build", "build_sweep", "data_uri", "growth", "leaf_rows", "loss_curves"]
