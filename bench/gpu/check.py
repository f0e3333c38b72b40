"""The GPU check: the CIFAR-10 preset's U-Net step and its TreeVAE phase step, each in fp32 and
bf16, eager and torch.compile'd, in a plain PyTorch loop and in the project's loop
(cluster.loop.run_stage: DeepSpeed engine, autocast, device-side sums; one rank, no Ray: Ray
Train only places workers and takes checkpoints), on one GPU.

Prints, per cell: images/s, achieved TFLOP/s (torch.utils.flop_counter's count of one training
step, forward and backward, times steps/s) beside the device's bf16 dense peak, and the
project loop's overhead ratio (plain images/s over project images/s; 1.00 = no overhead).
The data are random uint8 images held in memory (the loop's SplitCache), so the figures are
the steps', not the loader's.

    python bench/gpu/check.py                     # on a GPU, ~5 min (compile included)
    python bench/gpu/check.py --device cpu --quick --no-compile --budget 60    # a smoke run on a CPU

On a lent GPU machine (which lacks DeepSpeed and Hydra): `bash bench/gpu/wheels.sh` here once,
then run `bash bench/gpu/run.sh` there with `.whl` carried (see BENCHMARKS.md).
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from cluster.config import TrainerConfig  # noqa: E402
from cluster.loop import StageData, Worker, run_stage  # noqa: E402
from treediff.checkpoint import save_checkpoint  # noqa: E402
from treediff.data.cache import SplitCache  # noqa: E402
from treediff.stages import DiffusionStage, TreePhaseStage  # noqa: E402
from treediff.vae import TreeVAE  # noqa: E402

# dense bf16 tensor-core peaks (TFLOP/s), by device name
PEAKS = {"H200": 989.4, "H100 SXM": 989.4, "H100 PCIe": 756.0, "H100": 989.4, "A100": 312.0, "L40S": 362.1,
         "A10G": 125.0, "L4": 121.0}


def peak_tflops(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((v for k, v in PEAKS.items() if k in name), None)


def compose(quick: bool):
    from jobs.cli import compose as hydra_compose
    return hydra_compose(["experiment=digits_quick" if quick else "experiment=cifar10", "cluster=inprocess"])[0]


def stages(cfg, tmp: Path, epochs: int):
    """(name, stage factory, per-GPU batch, image shape) for the U-Net and the TreeVAE phase."""
    torch.manual_seed(0)
    tree = TreeVAE(cfg.model)
    while len(tree.tree.leaves) < 4:
        tree.split(min(tree.tree.leaves))
    save_checkpoint(tmp / "tree", tree.state_dict(), tree.tree, {"model": vars(cfg.model)}, {})
    shape = (cfg.model.in_channels, cfg.model.image_size, cfg.model.image_size)
    unet = lambda: DiffusionStage(cfg.diffusion, str(tmp / "tree"), epochs=epochs, name="unet")  # noqa: E731
    phase = lambda: TreePhaseStage(cfg.model, tree.tree.to_json(), tree.state_dict(), None, cfg.optim,  # noqa: E731
                                   epochs=epochs, name="tree")
    return [("U-Net step (path)", unet, cfg.diffusion.batch_size, shape),
            ("TreeVAE phase step", phase, cfg.optim.batch_size, shape)]


def synthetic(n: int, shape) -> SplitCache:
    g = torch.Generator().manual_seed(0)
    return SplitCache(torch.randint(0, 256, (n, *shape), generator=g, dtype=torch.uint8),
                      torch.zeros(n, dtype=torch.long), [f"{i:08d}" for i in range(n)])


def flops_per_step(make_stage, batch: tuple, device: torch.device) -> float:
    """FLOPs of one training step (forward + backward), counted by torch, in fp32 eager."""
    from torch.utils.flop_counter import FlopCounterMode

    stage = make_stage()
    stage.setup(0)
    model = stage.build().to(device)
    with FlopCounterMode(display=False) as counter:
        loss, _ = stage.loss(model, batch)
        loss.backward()
    return float(counter.get_total_flops())


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def plain(make_stage, cache: SplitCache, batch_size: int, steps: int, bf16: bool, compiled: bool,
          device: torch.device) -> float:
    """images/s of a plain loop: the stage's model, optimiser and loss, autocast under bf16."""
    stage = make_stage()
    stage.setup(0)
    model = stage.build().to(device)
    opt = stage.optimizer(stage.trainable(model))
    forward = torch.compile(model) if compiled else model
    model.train()
    x = cache.images[:batch_size].float().div(127.5).sub(1.0).to(device)
    batch = (x, cache.labels[:batch_size].to(device), cache.keys[:batch_size])

    def step():
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            loss, _ = stage.loss(forward, batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    for _ in range(3 if compiled else 2):  # warm-up (compilation, allocator)
        step()
    sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    sync(device)
    return steps * batch_size / (time.perf_counter() - t0)


def project(make_stage, cache: SplitCache, batch_size: int, steps: int, bf16: bool, compiled: bool,
            device: torch.device, storage: Path) -> float:
    """images/s of the project's loop over the same batches (the second epoch: the first warms up)."""
    t = TrainerConfig(num_workers=1, use_gpu=device.type == "cuda", precision="bf16" if bf16 else "fp32",
                      compile=compiled, zero_stage=0, checkpoint_every=0, storage_path=str(storage), cache_mb=0)
    stage = make_stage()  # two epochs of `steps` steps
    timing: dict = {}
    run_stage(stage, StageData(str(storage), global_batch=batch_size), Worker(0, 1, t, device.type == "cuda"),
              None, timing=timing, cache=cache, report=lambda metrics, d: None)
    return steps * batch_size / timing["epochs"][-1]


def init_group(device: torch.device) -> None:
    """A one-rank process group on loopback (DeepSpeed needs one)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK="0", WORLD_SIZE="1", LOCAL_RANK="0")
    torch.distributed.init_process_group("nccl" if device.type == "cuda" else "gloo",
                                         init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--steps", type=int, default=20, help="timed steps per cell")
    ap.add_argument("--budget", type=float, default=480, help="seconds; cells left when it runs out are skipped")
    ap.add_argument("--quick", action="store_true", help="the digits preset's small models (a CPU smoke run)")
    ap.add_argument("--no-compile", action="store_true")
    ap.add_argument("--json", default=os.path.join(os.environ.get("OUT", "."), "gpu_check.json"))
    args = ap.parse_args()
    start = time.perf_counter()
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.cuda.set_device(device)
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    init_group(device)
    peak = peak_tflops(device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"device: {name}; torch {torch.__version__}; bf16 dense peak: {peak or 'unknown'} TFLOP/s", flush=True)
    cfg = compose(args.quick)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for label, make_stage, batch_size, shape in stages(cfg, tmp, epochs=2):
            cache = synthetic(batch_size * args.steps, shape)
            x = cache.images[:batch_size].float().div(127.5).sub(1.0).to(device)
            flops = flops_per_step(make_stage, (x, cache.labels[:batch_size].to(device), cache.keys[:batch_size]),
                                   device)
            print(f"\n{label}: batch {batch_size} x {shape}, {flops / 1e9:.1f} GFLOP per step (torch's count)",
                  flush=True)
            print(f"  {'precision':9s} {'compile':7s} {'plain img/s':>12s} {'loop img/s':>11s} "
                  f"{'plain TFLOP/s':>14s} {'of peak':>8s} {'overhead':>9s}", flush=True)
            for compiled in ([False] if args.no_compile else [False, True]):
                for bf16 in (False, True):
                    if time.perf_counter() - start > args.budget:
                        print(f"  {'bf16' if bf16 else 'fp32':9s} {str(compiled):7s} skipped: budget spent", flush=True)
                        continue
                    ips = plain(make_stage, cache, batch_size, args.steps, bf16, compiled, device)
                    lps = project(make_stage, cache, batch_size, args.steps, bf16, compiled, device, tmp / "ray")
                    tflops = flops * ips / batch_size / 1e12
                    share = f"{100 * tflops / peak:7.1f}%" if peak else f"{'-':>8s}"
                    row = {"stage": label, "precision": "bf16" if bf16 else "fp32", "compile": compiled,
                           "batch": batch_size, "plain_images_per_s": ips, "loop_images_per_s": lps,
                           "gflop_per_step": flops / 1e9, "plain_tflops": tflops,
                           "loop_tflops": flops * lps / batch_size / 1e12, "peak_bf16_tflops": peak,
                           "overhead": ips / lps}
                    rows.append(row)
                    print(f"  {row['precision']:9s} {str(compiled):7s} {ips:12.1f} {lps:11.1f} {tflops:14.2f} {share} "
                          f"{row['overhead']:8.2f}x", flush=True)
    Path(args.json).write_text(json.dumps({"device": name, "torch": torch.__version__, "rows": rows,
                                           "wall_s": time.perf_counter() - start}, indent=2))
    print(f"\nwall {time.perf_counter() - start:.0f} s; figures in {args.json}", flush=True)
    torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()
