"""Where a data-parallel tree step's time goes on CPU: 2 gloo ranks on loopback, no Ray.

    .venv/bin/python bench/dp_step.py [--leaves 10] [--steps 60]

One TreeVAE step (a tree grown breadth-first to `--leaves` leaves, the digits preset's widths,
random images, one torch thread per process) timed five ways, each in fresh processes:
plain at the global batch 64 on one rank; plain at batch 32 on each of 2 ranks with no
communication; the same plus one flat all-reduce of the gradients (what data parallelism must
add at least); the DeepSpeed engine the loop uses (ZeRO stage 0, fp32) on 2 ranks at batch 32,
and on one rank at batch 64. Prints ms per step of each and the ratios that matter: what halving
the per-rank batch saves (the step's fixed cost), and DeepSpeed's cost over a bare all-reduce.
"""
from __future__ import annotations

import argparse
import os
import socket
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402

CASES = [("plain", 1), ("plain", 2), ("all-reduce", 2), ("deepspeed", 2), ("deepspeed", 1)]


def worker(rank: int, world: int, mode: str, leaves: int, steps: int, port: int, out) -> None:
    from common import default_config, tree_stage

    torch.set_num_threads(1)
    os.environ.update(LOCAL_RANK=str(rank))  # DeepSpeed reads it
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    cfg = default_config()
    micro = 64 // world
    stage = tree_stage(cfg, epochs=1, leaves=leaves)
    stage.setup(rank)
    stage.begin_epoch(None, 5)
    model = stage.build()
    model.train()
    params = stage.trainable(model)
    opt = stage.optimizer(params)
    x = torch.rand(micro, cfg.model.in_channels, cfg.model.image_size, cfg.model.image_size) * 2 - 1
    if mode == "deepspeed":
        from cluster.config import TrainerConfig
        from cluster.loop import _deepspeed, deepspeed_config
        engine, _, _, _ = _deepspeed().initialize(model=model, model_parameters=params, optimizer=opt,
                                                  config=deepspeed_config(TrainerConfig(zero_stage=0), micro, False, world))
        if world == 1:
            engine.enable_backward_allreduce = False  # as the loop does on one rank

        def step():
            loss, _ = stage.loss(engine, (x,))
            engine.backward(loss)
            engine.step()
    else:
        def step():
            loss, _ = stage.loss(model, (x,))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if mode == "all-reduce":
                grads = [p.grad for p in params if p.grad is not None]
                flat = torch._utils._flatten_dense_tensors(grads)
                dist.all_reduce(flat)
                flat /= world
                for g, f in zip(grads, torch._utils._unflatten_dense_tensors(flat, grads)):
                    g.copy_(f)
            opt.step()
    for _ in range(5):
        step()
    dist.barrier()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    ms = 1000 * (time.perf_counter() - t0) / steps
    if rank == 0:
        out.put((ms, sum(p.numel() for p in params), len(params)))
    dist.destroy_process_group()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--leaves", type=int, default=10)
    ap.add_argument("--steps", type=int, default=60)
    args = ap.parse_args()
    import torch.multiprocessing as mp
    ctx = mp.get_context("spawn")
    ms = {}
    for mode, world in CASES:
        out = ctx.Queue()
        port = free_port()
        procs = [ctx.Process(target=worker, args=(r, world, mode, args.leaves, args.steps, port, out)) for r in range(world)]
        for p in procs:
            p.start()
        result = out.get(timeout=600)
        for p in procs:
            p.join()
            if p.exitcode:
                sys.exit(f"{mode} on {world} ranks failed (exit {p.exitcode})")
        ms[mode, world], numel, tensors = result
        print(f"{mode:11s} {world} rank(s), batch {64 // world:2d} each: {ms[mode, world]:6.1f} ms/step", flush=True)
    print(f"tree of {args.leaves} leaves: {numel} trainable parameters in {tensors} tensors, one thread per rank")
    print(f"batch 32 / batch 64 step time: {ms['plain', 2] / ms['plain', 1]:.2f}x (a step's fixed cost dominates)")
    print(f"2 DeepSpeed ranks / 1 plain rank at the same global batch: {ms['deepspeed', 2] / ms['plain', 1]:.2f}x")
    print(f"DeepSpeed (ZeRO 0) / plain + one flat all-reduce, 2 ranks: {ms['deepspeed', 2] / ms['all-reduce', 2]:.2f}x")
    print(f"DeepSpeed / plain, 1 rank: {ms['deepspeed', 1] / ms['plain', 1]:.2f}x")


if __name__ == "__main__":
    main()
