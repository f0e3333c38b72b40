"""One Ray Train + DeepSpeed loop for every stage (treediff.stages): tree phases, diffusion, ...

Each worker builds the stage's model, wraps it in a DeepSpeed engine (the stage's optimiser and
LambdaLR as client objects; ZeRO stage, precision, accumulation and clipping from the trainer
config), streams its share of the shards (resampled, a fixed number of batches per epoch, so
ranks never wait on each other) and trains. Every `checkpoint_every` epochs (and at the end)
each rank saves the engine (ZeRO shards), rank 0 adds the stage's export (consolidated weights,
EMA) and `progress.json`, and all ranks report the directory to Ray Train, which merges them.
After a worker failure Ray Train restarts the workers and `ray.train.get_checkpoint()` resumes
at the epoch after the last checkpoint. Rank 0 writes TensorBoard scalars per epoch.
"""
from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from treediff.data.shards import ShardError, ShardSet
from treediff.data.stream import StreamConfig, make_loader
from treediff.stages.base import Stage

from .config import TrainerConfig

EXPORT = "export.pt"
PROGRESS = "progress.json"
DS_TAG = "ds"


class StageFailed(RuntimeError):
    """A stage stopped with an error the user must act on (NaN loss, bad data, bad config)."""


@dataclass
class StageData:
    shards: str  # the shard set's directory
    global_batch: int  # samples per optimiser step over all workers (x grad_accum micro steps)
    split: str = "train"
    keys: frozenset | None = None  # only these samples (a subtree phase's leaf)
    seed: int = 0


def deepspeed_config(t: TrainerConfig, micro_batch: int, on_gpu: bool, world: int,
                     grad_clip: float | None = None) -> dict[str, Any]:
    """The engine's config. ZeRO partitions optimiser state and gradients across ranks: one rank
    has nothing to partition, so a single worker runs stage 0 (ZeRO-1 there costs 10-15 % per
    step on CPU in flattening and norms, bench/step.py). `grad_clip`: the stage's own clipping
    (e.g. diffusion.grad_clip), which wins over trainer.grad_clip."""
    bf16 = t.precision == "bf16" or (t.precision == "auto" and on_gpu)
    return {"train_micro_batch_size_per_gpu": micro_batch, "gradient_accumulation_steps": t.grad_accum,
            "gradient_clipping": t.grad_clip if grad_clip is None else grad_clip, "zero_optimization": {"stage": t.zero_stage if world > 1 else 0},
            "bf16": {"enabled": bf16}, "zero_allow_untested_optimizer": True, "steps_per_print": 10 ** 9,
            "wall_clock_breakdown": False}


def _deepspeed():
    """DeepSpeed, without the JIT build of its CPU shared-memory comm op.

    DeepSpeed JIT-builds `deepspeed_shm_comm` at the first `initialize` of every fresh
    environment on CPU (30-45 s, two compilers at once). Marking the op incompatible (DeepSpeed's
    own op registry, pinned DeepSpeed 0.19.8) makes it use plain gloo collectives. Should a later
    DeepSpeed drop that registry, the build is paid once per environment instead: torch caches
    JIT ops in TORCH_EXTENSIONS_DIR, set to the environment's own folder (`sys.prefix`) when unset.
    """
    import deepspeed

    os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(Path(sys.prefix) / "torch_extensions"))
    registry = getattr(deepspeed.ops, "__compatible_ops__", None)
    if isinstance(registry, dict):
        registry["deepspeed_shm_comm"] = False
    return deepspeed


# Errors no restart can mend (a NaN loss, bad data, a bad setting): the failing rank writes this
# file beside the Ray Train run before raising, and the workers Ray Train restarts (FailureConfig
# counts every worker error alike) stop at once with the same message instead of replaying
# epochs up to the same failure. `fit_stage` removes it before every run.
FINAL_ERRORS = (StageFailed, ShardError, FloatingPointError)


def stop_file(storage_path: str | Path, name: str) -> Path:
    return Path(storage_path).resolve() / f".{name}.stopped"


def train_loop_per_worker(config: dict[str, Any]) -> None:
    """Every worker's entry point: runs `config["loop"]` (one stage, or the whole tree growth),
    unless an earlier worker of this run already stopped it for good (the stop file)."""
    stop = Path(config["stop_file"])
    if stop.exists():
        raise StageFailed(stop.read_text())
    try:
        config["loop"](config)
    except FINAL_ERRORS as e:
        tmp = stop.with_name(f"{stop.name}.{os.getpid()}")
        tmp.write_text(str(e))
        tmp.replace(stop)  # atomic: a restarted worker reads the whole message or none
        raise


@dataclass
class Worker:
    """This process's place in the Ray Train worker group, and the engine settings it trains with."""

    rank: int
    world: int
    trainer: TrainerConfig
    on_gpu: bool

    @classmethod
    def current(cls, t: TrainerConfig) -> "Worker":
        import ray.train

        ctx = ray.train.get_context()
        torch.set_num_threads(t.cpus_per_worker)
        return cls(ctx.get_world_rank(), ctx.get_world_size(), t, t.use_gpu and torch.cuda.is_available())


def _train(config: dict[str, Any]) -> None:
    import ray.train

    worker = Worker.current(config["trainer"])
    data: StageData = config["data"]
    tb = None
    if worker.rank == 0 and config.get("tb_dir"):
        from .tensorboard import TBLogger
        tb = TBLogger(config["tb_dir"])
    resumed = ray.train.get_checkpoint()
    if tb is not None and resumed is None and config.get("config_text"):
        tb.text("config", config["config_text"])
    try:
        run_stage(config["stage"], data, worker, ShardSet.open(data.shards), resume=resumed, tb=tb,
                  record_losses=config.get("record_losses", False))
    finally:
        if tb is not None:
            tb.close()


def read_progress(checkpoint) -> dict[str, Any]:
    """The `progress.json` of a reported checkpoint (which stage, which epoch)."""
    with checkpoint.as_directory() as d:
        return json.loads((Path(d) / PROGRESS).read_text())


def fp32_state(engine, frozen: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """The module's state in fp32 on the CPU. Under bf16 DeepSpeed casts the whole module: each
    trained parameter then comes from DeepSpeed's fp32 master copy (what the optimiser steps), each
    frozen one from `frozen` (its fp32 value before the cast); buffers are upcast."""
    from deepspeed.utils import safe_get_full_fp32_param

    masters = dict(frozen or {})
    if engine.bfloat16_enabled():
        # ZeRO 0 keeps its fp32 copies in parallel lists (FP16_UnfusedOptimizer); ZeRO 1/2 map each
        # parameter to its fp32 fragment (gathered by safe_get_full_fp32_param, a collective)
        opt = engine.optimizer
        pairs = {id(lp): hp for lps, hps in zip(getattr(opt, "fp16_groups", None) or [],
                                                 getattr(opt, "fp32_groups", None) or [])
                 if isinstance(lps, list) and isinstance(hps, list) for lp, hp in zip(lps, hps)}
        for name, p in engine.module.named_parameters():  # the same order on every rank
            if p.requires_grad:
                full = pairs.get(id(p))
                if full is None:
                    full = safe_get_full_fp32_param(p)
                if full is not None:
                    masters[name] = full
    return {k: masters.get(k, v).detach().to("cpu", torch.float32 if v.is_floating_point() else v.dtype)
            for k, v in engine.module.state_dict().items()}


def run_stage(stage: Stage, data: StageData, worker: Worker, shards: ShardSet, *, resume=None, tb=None,
              record_losses: bool = False, tag: dict[str, Any] | None = None, verify: bool = True,
              steps: list[float] | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """Train `stage` on this worker group (every rank calls it): build the model, wrap it in a
    DeepSpeed engine, stream this rank's share of the shards and train, reporting a checkpoint
    every `checkpoint_every` epochs and after the last. `resume`: a reported checkpoint of this
    same stage to continue from. `tag` goes into every checkpoint's progress (which stage it is).
    Returns (the stage's export of the trained model, in fp32 on the CPU; the last epoch's metrics).
    `steps`, when given, collects the seconds spent in each epoch's steps."""
    import ray.train

    rank, world, t = worker.rank, worker.world, worker.trainer
    if data.global_batch % (world * t.grad_accum):
        raise StageFailed(f"{stage.name}: the batch size {data.global_batch} is not divisible by "
                          f"trainer.num_workers x trainer.grad_accum = {world} x {t.grad_accum}")
    micro = data.global_batch // (world * t.grad_accum)
    n = len(data.keys) if data.keys is not None else shards.count(data.split)
    steps_per_epoch = max(1, n // data.global_batch)  # optimiser steps

    stage.setup(data.seed + rank)
    model = stage.build()
    params = stage.trainable(model)
    opt = stage.optimizer(params)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, stage.lr_lambda(steps_per_epoch))
    ds_config = deepspeed_config(t, micro, worker.on_gpu, world, grad_clip=stage.grad_clip)
    frozen = ({k: p.detach().clone() for k, p in model.named_parameters() if not p.requires_grad}
              if ds_config["bf16"]["enabled"] else {})  # their fp32 values, before DeepSpeed's bf16 cast
    engine, _, _, _ = _deepspeed().initialize(model=model, model_parameters=params, optimizer=opt,
                                              lr_scheduler=sched, config=ds_config)
    if world == 1:
        engine.enable_backward_allreduce = False  # averaging over one rank is the identity (and a copy)
    device = torch.device(engine.device)
    # bf16: DeepSpeed casts the module's weights, not its inputs; autocast runs each op in the
    # dtype it needs (the stage's fp32 batches, noise and frozen tree included)
    bf16 = ds_config["bf16"]["enabled"]
    start_epoch, history = 0, []
    if resume is not None:
        with resume.as_directory() as d:
            engine.load_checkpoint(d, tag=DS_TAG)
            stage.load_export(engine.module, torch.load(Path(d) / EXPORT, map_location="cpu", weights_only=False))
            progress = json.loads((Path(d) / PROGRESS).read_text())
            start_epoch, history = progress["epoch"] + 1, list(progress.get("loss_history", []))
            torch.distributed.barrier()  # nobody leaves (and deletes) the directory while others read

    metrics: dict[str, Any] = {"epoch": start_epoch - 1, "loss_history": list(history)}
    for epoch in range(start_epoch, stage.epochs):
        engine.train()
        epoch_logs = stage.begin_epoch(engine.module, epoch)
        loader = make_loader(shards, data.split, StreamConfig(
            batch_size=micro, rank=rank, world_size=world, num_workers=t.loader_workers, mode="resampled",
            batches_per_epoch=steps_per_epoch * t.grad_accum, shuffle_buffer=t.shuffle_buffer, seed=data.seed,
            epoch=epoch, keys=data.keys, verify=verify and epoch == start_epoch))  # sha256 once per (re)start
        sums: dict[str, float] = {}
        step_losses: list[float] = []
        micro_steps, t0 = 0, time.perf_counter()
        for batch in loader:
            batch = tuple(b.to(device) if torch.is_tensor(b) else b for b in batch)  # images and labels
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                loss, logs = stage.loss(engine, batch)
            if not torch.isfinite(loss):
                raise StageFailed(f"{stage.name}: loss is {loss.item()} at epoch {epoch}, micro step {micro_steps} "
                                  f"on rank {rank}; the last good checkpoint is kept")
            engine.backward(loss)
            boundary = engine.is_gradient_accumulation_boundary()  # read before step() advances it
            engine.step()
            if boundary:
                stage.after_step(engine.module)
            for k, v in logs.items():
                sums[k] = sums.get(k, 0.0) + v
            step_losses.append(loss.item())
            micro_steps += 1
        seconds = time.perf_counter() - t0
        if steps is not None:
            steps.append(seconds)
        metrics = {k: v / max(micro_steps, 1) for k, v in sums.items()} | epoch_logs
        metrics |= {"epoch": epoch, "lr": sched.get_last_lr()[0],
                    "images_per_s": micro_steps * micro * world / max(seconds, 1e-9)}
        history.append(metrics.get("loss", float("nan")))
        if record_losses:
            metrics["step_losses"] = step_losses
        if tb is not None:
            tb.scalars(metrics, step=(epoch + 1) * steps_per_epoch, prefix=f"{stage.name}/")
            tb.flush()
        # Ray Train hears from the workers only with a checkpoint (every rank reports equally
        # often): reporting costs a round trip to the controller, TensorBoard has every epoch.
        if epoch == stage.epochs - 1 or (epoch + 1) % t.checkpoint_every == 0:
            # report() copies the directory into storage_path before it returns
            with tempfile.TemporaryDirectory(prefix=f"{stage.name.replace('/', '-')}-ckpt-") as d:
                engine.save_checkpoint(d, tag=DS_TAG)  # a collective: every rank writes its ZeRO partition
                export = _export(stage, engine, frozen)  # a collective too (ZeRO's fp32 partitions are gathered)
                if rank == 0:
                    torch.save(export, Path(d) / EXPORT)
                    (Path(d) / PROGRESS).write_text(json.dumps({**(tag or {}), "epoch": epoch,
                                                                "steps_per_epoch": steps_per_epoch,
                                                                "loss_history": history}))
                ray.train.report(metrics | {"loss_history": list(history)},
                                 checkpoint=ray.train.Checkpoint.from_directory(d))
    metrics["loss_history"] = list(history)
    return _export(stage, engine, frozen), metrics


def _export(stage: Stage, engine, frozen: dict[str, torch.Tensor]) -> dict[str, Any]:
    """The stage's export with fp32 weights (DeepSpeed's master copy under bf16), on the CPU."""
    return stage.export(_Exported(engine.module, fp32_state(engine, frozen)))


class _Exported:
    """A module stand-in whose state_dict() is a given state (so a stage exports fp32 weights)."""

    def __init__(self, module: torch.nn.Module, state: dict[str, torch.Tensor]):
        self._module, self._state = module, state

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self._state

    def __getattr__(self, name: str) -> Any:
        return getattr(self._module, name)


def fit_stage(stage: Stage, data: StageData, trainer: TrainerConfig, *, name: str, local: bool,
              tb_dir: str | None = None, config_text: str | None = None, record_losses: bool = False) -> tuple[dict[str, Any], dict[str, Any]]:
    """Run `stage` on Ray Train workers; returns (its export from the final checkpoint, last metrics).

    Raises StageFailed with the worker's message when the stage fails.
    """
    # the workers' working directory is not the driver's: hand them absolute paths
    data = replace(data, shards=str(Path(data.shards).resolve()))
    tb_dir = str(Path(tb_dir).resolve()) if tb_dir else None
    result = fit_loop(_train, {"stage": stage, "data": data, "tb_dir": tb_dir, "config_text": config_text,
                               "record_losses": record_losses}, trainer, name=name, local=local, what=stage.name)
    with result.checkpoint.as_directory() as d:
        export = torch.load(Path(d) / EXPORT, map_location="cpu", weights_only=False)
    return export, dict(result.metrics or {})


def fit_loop(loop, loop_config: dict[str, Any], trainer: TrainerConfig, *, name: str, local: bool, what: str):
    """One Ray Train run `name` (under trainer.storage_path) of `loop(config)` on every worker; a
    re-run of the same name resumes from its latest checkpoint. Returns Ray Train's Result.

    Raises StageFailed with the worker's message (`what` names the work) when the run fails.
    """
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from .rendezvous import torch_config

    storage = Path(trainer.storage_path).resolve()
    storage.mkdir(parents=True, exist_ok=True)
    scaling = ScalingConfig(num_workers=trainer.num_workers, use_gpu=trainer.use_gpu,
                            resources_per_worker={"CPU": trainer.cpus_per_worker,
                                                  **({"GPU": 1} if trainer.use_gpu else {})})
    run = RunConfig(name=name, storage_path=str(storage), failure_config=FailureConfig(max_failures=trainer.max_failures),
                    checkpoint_config=CheckpointConfig(num_to_keep=2))  # the latest, and one before it
    tc = torch_config(trainer.rendezvous, local, str(storage / "rendezvous"), trainer.timeout_s, trainer.use_gpu)
    stop = stop_file(storage, name)
    stop.unlink(missing_ok=True)  # a new run: the user may have fixed what stopped the last one
    config = loop_config | {"loop": loop, "trainer": trainer, "stop_file": str(stop)}
    try:
        result = TorchTrainer(train_loop_per_worker, train_loop_config=config, scaling_config=scaling,
                              run_config=run, torch_config=tc).fit()
    except Exception as e:  # TrainingFailedError and friends: surface the worker's own message
        raise StageFailed(f"{what}: {_root_message(e)} (Ray Train run {storage / name})") from e
    if result.error is not None:
        raise StageFailed(f"{what}: {_root_message(result.error)} (Ray Train run {storage / name})")
    return result


def _root_message(e: BaseException) -> str:
    """The innermost meaningful message of a (Ray-wrapped) exception chain."""
    seen, cur, best = set(), e, str(e)
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if isinstance(cur, (StageFailed, FileNotFoundError, ValueError)) and str(cur):
            best = str(cur)
        cur = cur.__cause__ or cur.__context__
    text = best.strip().splitlines()
    for line in reversed(text):  # Ray's text ends with the worker exception's own line
        if "StageFailed:" in line or "Error:" in line:
            return line.split("StageFailed:", 1)[-1].strip()
    return text[-1] if text else type(e).__name__


def plain_steps(stage: Stage, data: StageData, steps: int, seed: int | None = None,
                shuffle_buffer: int = TrainerConfig.shuffle_buffer) -> list[float]:
    """The same stage and stream in one process without Ray or DeepSpeed (a check of the loop)."""
    from treediff.stages.base import run_plain

    shards = ShardSet.open(data.shards)
    n = len(data.keys) if data.keys is not None else shards.count(data.split)
    steps_per_epoch = max(1, n // data.global_batch)

    def batches(epoch: int):
        return make_loader(shards, data.split, StreamConfig(
            batch_size=data.global_batch, mode="resampled", batches_per_epoch=steps_per_epoch,
            shuffle_buffer=shuffle_buffer,
            seed=data.seed, epoch=epoch, keys=data.keys))
    _, losses = run_plain(stage, batches, steps_per_epoch, seed=data.seed if seed is None else seed, max_steps=steps)
    return losses


__all__ = ["StageData", "StageFailed", "Worker", "fit_loop", "fit_stage", "run_stage", "read_progress", "train_loop_per_worker", "deepspeed_config", "plain_steps", "stop_file"]
