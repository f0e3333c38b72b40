"""What the models produce, against baselines measured in the same run on the same splits.

Clustering (default): the embedded default's tree (`treediff grow`, one process, one thread per
run, `--jobs` runs at a time) over several seeds, scored on the test split (NMI, ACC, ARI, leaf
count), beside k-means(k) fit on the training pixels and Ward(k) on the pixels, k the number of classes (treediff/metrics/baselines.py).
Each NMI comes with its bootstrap standard error ("se": how far it would move on another test split
of the same size; ~0.02 on the digits' 360 test images, ~0.004 on Fashion-MNIST's 10,000).

    python bench/quality.py                          # seeds 1-5 of the embedded default (14-27 min on 2 cores)
    python bench/quality.py --seeds 1 2 3 --variant base= --variant ft="optim.kl_finetune=reach_one"
                                                     # variants side by side, same seeds (a search)
    python bench/quality.py --fmnist                 # + Fashion-MNIST (Debian's idx files, 20k train, ~27 min)
    python bench/quality.py --generation             # + one in-process pipeline: purity vs ceiling, FID vs floor
    python bench/quality.py --seeds --fmnist         # Fashion-MNIST alone (no digits seeds)
    python bench/quality.py --ray --seeds 42 1 2 3 4 5
                                                     # the main command's path instead: `treediff grow
                                                     # cluster=local` (2 Ray Train workers) on shards
                                                     # prepared once, one run at a time (4-6 min a run)
    python bench/quality.py --base "experiment=cifar10_quick data=photo_patches" --seeds 1 2 3 \
        --variant term= --variant no-term=model.contrastive=false
                                                     # the colour quick preset on real colour crops, with
                                                     # and without the contrastive term (~2 min a run)

Each variant's runs go to <--out>/<variant>/seed-<S> (kept: their metrics.json and logs) and one
line per run is appended to <--out>/runs.jsonl, so a search can be read back afterwards.
Targets (issue 14): median NMI over seeds 1-5 >= 0.80, every seed above k-means; on Ray (--ray),
the default seed (42) >= 0.80.
"""
from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from statistics import median

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def treediff(args: list[str], log: Path) -> int:
    """`treediff <args>` from the checkout, its output in `log`; returns its exit code."""
    with open(log, "w") as out:
        return subprocess.run([sys.executable, "-m", "jobs.cli", *args], cwd=ROOT, stdout=out,
                              stderr=subprocess.STDOUT).returncode


def tail(log: Path) -> str:
    """The end of a failed run's log, to show beside its exit code."""
    return log.read_text()[-2000:]


def scores(result: dict) -> str:
    """A run's test figures as every printed line shows them."""
    return f"NMI {result['nmi']:.3f} (se {result['nmi_se']:.3f})  ACC {result['acc']:.3f}  ARI {result['ari']:.3f}"


def grow(run_dir: Path, overrides: list[str], runtime: list[str]) -> dict:
    """One `treediff grow` (runtime: in one process, or on Ray, as overrides); returns its test
    metrics and wall time."""
    run_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    code = treediff(["grow", *runtime, f"run_dir={run_dir}", *overrides], run_dir / "grow.log")
    wall = time.perf_counter() - t0
    if code:
        return {"error": f"exit {code}", "log_tail": tail(run_dir / "grow.log"), "wall_s": wall}
    from treediff.metrics.clustering import histogram_pairs, nmi_standard_error

    tree = json.loads((run_dir / "metrics.json").read_text())["tree"]
    return {"nmi": tree["nmi"], "nmi_se": nmi_standard_error(*histogram_pairs(tree["leaf_histograms"])),
            "acc": tree["acc"], "ari": tree["ari"], "leaves": len(tree["leaf_sizes"]),
            "leaf_purity": tree.get("leaf_purity"), "wall_s": wall}


def baselines(data_overrides: list[str], limit_train: int | None = None) -> list[dict]:
    from jobs.cli import compose
    from jobs.data import load_split
    from treediff.metrics.baselines import kmeans_baseline, ward_baseline

    import numpy as np

    cfg = compose(data_overrides)[0]
    train, test = load_split(cfg.data, "train"), load_split(cfg.data, "test")
    x_train = train.images[:limit_train] if limit_train else train.images
    k = len(np.unique(test.labels))  # as many clusters as classes
    rows = [kmeans_baseline(x_train, test.images, test.labels, k=k)]
    if len(x_train) + len(test.images) <= 25_000:
        rows.append(ward_baseline(x_train, test.images, test.labels, k=k))
    return rows


def fmnist(out: Path, limit: int, threads: int) -> None:
    """Fashion-MNIST (real idx files) on `limit` training images, scored on the full test split,
    beside k-means(10) fit on the same training images."""
    overrides = ["experiment=fashion_mnist_20k", f"data.limit_train={limit}"]
    print(f"\nFashion-MNIST: `treediff grow {' '.join(overrides)}` in one process ({threads} threads)", flush=True)
    base = baselines(overrides, limit_train=limit)
    result = grow(out / "fmnist", overrides, in_process(threads))
    with open(out / "runs.jsonl", "a") as f:
        f.write(json.dumps({"variant": "fmnist", "overrides": overrides, **result}) + "\n")
    if "nmi" not in result:
        print(f"  failed: {result['error']}\n{result['log_tail']}")
        return
    print(f"  {'tree':30s} {scores(result)}  "
          f"leaves {result['leaves']}  {result['wall_s'] / 60:.1f} min  (targets: NMI and ACC >= 0.60 in < 60 min)")
    for b in base:
        print(f"  {b['method']:30s} NMI {b['nmi']:.3f}  ACC {b['acc']:.3f}  ARI {b['ari']:.3f}")


def generation(out: Path, overrides: list[str], threads: int) -> None:
    """One in-process `treediff pipeline` of the embedded default: each checkpoint's routed
    generations' purity beside the tree's ceiling (real test images grouped by their leaf), and
    its FID beside the floor (held-out real images at the same N, same reference)."""
    run_dir = out / "generation"
    print(f"\ngeneration: `treediff pipeline cluster=inprocess {' '.join(overrides)}` ({threads} threads)", flush=True)
    t0 = time.perf_counter()
    code = treediff(["pipeline", *in_process(threads), f"run_dir={run_dir}", *overrides], out / "generation.log")
    if code:
        print(f"  failed (exit {code}):\n{tail(out / 'generation.log')}")
        return
    ev = json.loads((run_dir / "eval" / "report.json").read_text())
    ceiling, floor = ev.get("ceiling", {}), ev.get("fid_floor", {})
    print(f"  tree: NMI {ev['tree']['nmi']:.3f}; ceiling (the tree's purity on the real test images) "
          f"{ceiling.get('mean_purity', float('nan')):.3f}; {(time.perf_counter() - t0) / 60:.1f} min")
    print(f"  {'checkpoint':12s} {'purity':>7s} {'ceiling':>8s} {'ratio':>6s} {'TreeVAE':>8s} {'FID':>7s} {'floor':>7s}  (FID label)")
    for name, r in ev["checkpoints"].items():
        g = r.get("generation", {})
        purity, c = g.get("mean_purity"), ceiling.get("mean_purity")
        ratio = purity / c if purity is not None and c else float("nan")
        print(f"  {name:12s} {purity or float('nan'):7.3f} {c or float('nan'):8.3f} {ratio:6.2f} "
              f"{g.get('mean_purity_treevae') or float('nan'):8.3f} {g.get('fid', float('nan')):7.2f} "
              f"{floor.get('fid', float('nan')):7.2f}  ({g.get('label', '')})")
    print("  targets: routed purity >= 0.85 x the ceiling, ceiling >= 0.80")


def in_process(threads: int) -> list[str]:
    return ["cluster=inprocess", f"threads={threads}"]


def on_ray(out: Path, overrides: list[str]) -> list[str]:
    """The main command's runtime (a local Ray cluster, 2 Ray Train workers) on shards that
    `treediff prepare` writes once under <out>/shards from --base's data (kept for a re-run into the
    same --out: every variant reads them, so a variant never changes the data)."""
    from treediff.data.shards import MANIFEST

    shards = out / "shards"
    if not (shards / MANIFEST).is_file():
        code = treediff(["prepare", f"run_dir={out / 'prepare'}", f"shards.path={shards}", *overrides], out / "prepare.log")
        if code:
            sys.exit(f"treediff prepare failed (exit {code}):\n{tail(out / 'prepare.log')}")
    return ["cluster=local", f"shards.path={shards}"]


def run_variants(variants: dict[str, list[str]], seeds: list[int], out: Path, jobs: int, runtime: list[str]) -> dict:
    cells = [(name, seed) for name in variants for seed in seeds]

    def one(cell):
        name, seed = cell
        result = grow(out / name / f"seed-{seed}", [*variants[name], f"optim.seed={seed}"], runtime)
        record = {"variant": name, "overrides": variants[name], "seed": seed, **result}
        with open(out / "runs.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")
        print(f"  {name:14s} seed {seed}: " + (f"{scores(result)}  leaves {result['leaves']}  {result['wall_s']:.0f} s" if "nmi" in result else result["error"]), flush=True)
        return record

    with ThreadPoolExecutor(jobs) as pool:
        records = list(pool.map(one, cells))
    return {name: [r for r in records if r["variant"] == name] for name in variants}


def table(results: dict, base: list[dict], seeds: list[int]) -> None:
    kmeans = next(b for b in base if b["method"].startswith("k-means"))
    print(f"\n{'variant':14s} " + " ".join(f"{'s' + str(s):>6s}" for s in seeds)
          + f" {'median':>7s} {'min':>6s} {'se med':>7s} {'ACC med':>8s} {'ARI med':>8s} {'beats k-means':>14s} {'wall/run':>9s}")
    for name, records in results.items():
        ok = [r for r in records if "nmi" in r]
        nmis = [r["nmi"] for r in ok]
        cells = " ".join(f"{r['nmi']:6.3f}" if "nmi" in r else f"{'fail':>6s}" for r in records)
        if not ok:
            print(f"{name:14s} {cells}")
            continue
        beats = sum(v > kmeans["nmi"] for v in nmis)
        print(f"{name:14s} {cells} {median(nmis):7.3f} {min(nmis):6.3f} {median(r['nmi_se'] for r in ok):7.3f} "
              f"{median(r['acc'] for r in ok):8.3f} "
              f"{median(r['ari'] for r in ok):8.3f} {beats:>9d}/{len(records):<4d} "
              f"{median(r['wall_s'] for r in ok):8.0f}s")
    for b in base:
        print(f"{b['method']:30s} NMI {b['nmi']:.3f}  ACC {b['acc']:.3f}  ARI {b['ari']:.3f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="*", default=[1, 2, 3, 4, 5], help="digits seeds (none: skip them)")
    ap.add_argument("--base", default="", help="overrides under every variant and the baselines (shell-quoted); "
                    "default: the embedded default")
    ap.add_argument("--variant", action="append", default=[], metavar="NAME=OVERRIDES",
                    help="a named set of overrides (shell-quoted); repeatable; default: the embedded default")
    ap.add_argument("--jobs", type=int, default=2, help="runs at a time (one thread each)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=Path("runs/bench-quality"))
    ap.add_argument("--ray", action="store_true", help="grow the digits seeds on a local Ray cluster (the main "
                    "command's path), one run at a time, on shards of --base's data prepared once under --out")
    ap.add_argument("--fmnist", action="store_true", help="also Fashion-MNIST (experiment=fashion_mnist_20k), alone")
    ap.add_argument("--fmnist-train", type=int, default=20_000, help="Fashion-MNIST training images")
    ap.add_argument("--fmnist-threads", type=int, default=2)
    ap.add_argument("--generation", action="store_true", help="also one in-process pipeline: purity and FID bounds")
    ap.add_argument("--generation-overrides", default="", help="overrides of that pipeline (shell-quoted)")
    args = ap.parse_args()
    variants = {}
    for spec in args.variant or ["default="]:
        name, _, overrides = spec.partition("=")
        variants[name] = shlex.split(args.base) + shlex.split(overrides)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.seeds:
        what = f"`{args.base}`" if args.base else "embedded default (digits)"
        where = "on Ray (cluster=local), 1 run" if args.ray else f"in one process, {args.jobs} runs"
        print(f"{what}, seeds {args.seeds}, {where} at a time; runs under {args.out}", flush=True)
        base = baselines(shlex.split(args.base))
        runtime = on_ray(args.out, shlex.split(args.base)) if args.ray else in_process(args.threads)
        results = run_variants(variants, args.seeds, args.out, 1 if args.ray else args.jobs, runtime)
        print(f"\ntest NMI per seed ({what})")
        table(results, base, args.seeds)
    if args.fmnist:
        fmnist(args.out, args.fmnist_train, args.fmnist_threads)
    if args.generation:
        generation(args.out, shlex.split(args.generation_overrides), max(args.threads, 2))


if __name__ == "__main__":
    main()
