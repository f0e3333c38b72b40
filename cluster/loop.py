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

import contextlib
import json
import os
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable

import torch

from treediff.data.cache import SplitCache, split_nbytes
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


def uses_bf16(t: TrainerConfig, on_gpu: bool) -> bool:
    return t.precision == "bf16" or (t.precision == "auto" and on_gpu)


def deepspeed_config(t: TrainerConfig, micro_batch: int, on_gpu: bool, world: int,
                     grad_clip: float | None = None) -> dict[str, Any]:
    """The engine's config. ZeRO partitions optimiser state and gradients across ranks: one rank
    has nothing to partition, so a single worker runs stage 0 (ZeRO-1 there costs 10-15 % per
    step on CPU in flattening and norms, bench/step.py). `grad_clip`: the stage's own clipping
    (e.g. diffusion.grad_clip), which wins over trainer.grad_clip.

    bf16 is DeepSpeed's torch_autocast mode: the weights stay fp32 (so every export is fp32, and
    BatchNorm, which autocast leaves in fp32, meets fp32 weights), each op runs in the dtype
    autocast gives it, and the gradients of linear and conv layers travel in bf16."""
    config = {"train_micro_batch_size_per_gpu": micro_batch, "gradient_accumulation_steps": t.grad_accum,
              "gradient_clipping": t.grad_clip if grad_clip is None else grad_clip,
              "zero_optimization": {"stage": t.zero_stage if world > 1 else 0},
              "zero_allow_untested_optimizer": True, "steps_per_print": 10 ** 9, "wall_clock_breakdown": False}
    if uses_bf16(t, on_gpu):
        config["torch_autocast"] = {"enabled": True, "dtype": "bfloat16"}
    return config


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


def paused_file(stop: Path) -> Path:
    """Beside the stop file: the run saved a checkpoint and ended on a stop request."""
    return stop.with_name(stop.name.replace(".stopped", ".paused"))


def ray_rank() -> int:
    import ray.train
    return ray.train.get_context().get_world_rank()


def train_loop_per_worker(config: dict[str, Any]) -> None:
    """Every worker's entry point: runs `config["loop"]` (one stage, or the whole tree growth),
    unless an earlier worker of this run already stopped it for good (the stop file)."""
    t: TrainerConfig = config["trainer"]
    if not t.verbose:  # this worker's whole output to its log file; the driver shows rank 0's project lines
        from .console import redirect_output, worker_log
        redirect_output(worker_log(t.log_dir, config["run_name"], ray_rank()))
    stop = Path(config["stop_file"])
    if stop.exists():
        raise StageFailed(stop.read_text())
    try:
        config["loop"](config)
    except StopRequested as e:  # saved: end the run normally; the driver tells the user
        if ray_rank() == 0:
            paused_file(stop).write_text(str(e))
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
    shards = ShardSet.open(data.shards)
    try:
        run_stage(config["stage"], data, worker, shards, resume=resumed, tb=tb,
                  record_losses=config.get("record_losses", False), cache=split_cache(shards, data.split, worker.trainer))
    finally:
        if tb is not None:
            tb.close()


def read_progress(checkpoint) -> dict[str, Any]:
    """The `progress.json` of a reported checkpoint (which stage, which epoch)."""
    with checkpoint.as_directory() as d:
        return json.loads((Path(d) / PROGRESS).read_text())


def cpu_state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The module's state on the CPU (fp32 weights: see deepspeed_config)."""
    return {k: v.detach().cpu() for k, v in module.state_dict().items()}


class JobStopped(RuntimeError):
    """The driver's side of StopRequested: the run saved a checkpoint and ended on request."""


class StopRequested(Exception):
    """A stop was requested (trainer.stop_request exists): the stage saved a checkpoint and stops;
    re-running the same command resumes from it."""


class Control:
    """The host's look at the run every trainer.sync_every optimiser steps (and at epoch ends):
    the NaN check of the losses accumulated on the device since the last look, the checkpoint
    timer (trainer.checkpoint_minutes, rank 0's clock) and the stop request (the file
    trainer.stop_request: `treediff stop`, the SLURM end-of-time warning). Every rank gets rank
    0's verdict through one small all_reduce, so all save and stop at the same step."""

    NONE, SAVE, STOP = 0, 1, 2

    def __init__(self, t: TrainerConfig, rank: int, world: int, device: torch.device):
        self.t, self.rank, self.world, self.device = t, rank, world, device
        self.last_save = time.monotonic()
        self.stop_path = Path(t.stop_request) if t.stop_request else None

    def verdict(self) -> int:
        v = self.NONE
        if self.rank == 0:
            if self.stop_path is not None and self.stop_path.exists():
                v = self.STOP
            elif self.t.checkpoint_minutes and time.monotonic() - self.last_save >= 60 * self.t.checkpoint_minutes:
                v = self.SAVE
        if self.world > 1:
            flag = torch.tensor([v], device=self.device)
            torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
            v = int(flag.item())
        return v

    def saved(self) -> None:
        self.last_save = time.monotonic()


def split_cache(shards: ShardSet, split: str, t: TrainerConfig) -> SplitCache | None:
    """The split decoded into this worker's memory, when it fits in trainer.cache_mb (else None: stream)."""
    if t.cache_mb and split_nbytes(shards, split) <= t.cache_mb * 2 ** 20:
        return SplitCache.read(shards, split)
    return None


def run_stage(stage: Stage, data: StageData, worker: Worker, shards: ShardSet, *, resume=None, tb=None,
              record_losses: bool = False, tag: dict[str, Any] | None = None, verify: bool = True,
              timing: dict[str, Any] | None = None, cache: SplitCache | None = None,
              report: Callable[[dict[str, Any], str], None] | None = None,
              final_report: bool = True) -> tuple[dict[str, Any], dict[str, Any]]:
    """Train `stage` on this worker group (every rank calls it): build the model, wrap it in a
    DeepSpeed engine, stream this rank's share of the shards and train.

    Checkpoints are reported to Ray Train every `trainer.checkpoint_every` epochs and after the
    last, every `stage.checkpoint_steps` optimiser steps, on the `trainer.checkpoint_minutes`
    timer and on a stop request (then StopRequested is raised once it is saved). `resume`: a
    reported checkpoint of this same stage to continue from (mid-epoch ones continue at the step
    after). `tag` goes into every checkpoint's progress (which stage it is). Returns (the stage's
    export of the trained model, in fp32 on the CPU; the last epoch's metrics). `steps`, when
    given, collects where the time went: `setup` (seconds to the first step: model, engine,
    resume), `epochs` (seconds in each epoch's steps), `saves` (seconds checkpointing). `cache`: the split in memory (epochs
    drawn from it by the same rule as the stream's), else the shards are streamed. `report(metrics,
    checkpoint_dir)` hands a checkpoint over (default: to Ray Train; bench/gpu runs without Ray).
    `final_report=False`: no checkpoint after the last epoch (a growth phase: its own phase
    checkpoint is the resume point, and the export is returned).

    Losses and logged terms are summed on the device; the host reads them every
    `trainer.sync_every` steps (the NaN check) and at each epoch's end.
    """
    rank, world, t = worker.rank, worker.world, worker.trainer
    began = time.perf_counter()
    timing = timing if timing is not None else {}
    timing.update(setup=0.0, epochs=[], saves=0.0)
    views = stage.views  # the batch counts samples: images x views (two augmented views: the contrastive term)
    if data.global_batch % (world * t.grad_accum * views):
        raise StageFailed(f"{stage.name}: the batch size {data.global_batch} is not divisible by "
                          f"trainer.num_workers x trainer.grad_accum x views = {world} x {t.grad_accum} x {views}")
    micro = data.global_batch // (world * t.grad_accum)
    n = len(data.keys) if data.keys is not None else len(cache) if cache is not None else shards.count(data.split)
    steps_per_epoch, augment = _epoch_plan(stage, n, data.global_batch)

    stage.setup(data.seed + rank)
    model = stage.build()
    params = stage.trainable(model)
    opt = stage.optimizer(params)
    for group in opt.param_groups:  # before the schedule reads them
        group["lr"] *= stage.lr_scale
    sched = torch.optim.lr_scheduler.LambdaLR(opt, stage.lr_lambda(steps_per_epoch))
    ds_config = deepspeed_config(t, micro, worker.on_gpu, world, grad_clip=stage.grad_clip)
    engine, _, _, _ = _deepspeed().initialize(model=model, model_parameters=params, optimizer=opt,
                                              lr_scheduler=sched, config=ds_config)
    if world == 1:
        engine.enable_backward_allreduce = False  # averaging over one rank is the identity (and a copy)
    if t.compile:
        engine.compile()  # torch.compile of the module, through DeepSpeed
    device = torch.device(engine.device)
    # bf16: autocast around the whole loss (the stage's frozen tree, noise and conditioning too)
    bf16 = uses_bf16(t, worker.on_gpu)
    start_epoch, skip, history = 0, 0, []
    if resume is not None:
        with resume.as_directory() as d:
            engine.load_checkpoint(d, tag=DS_TAG)
            stage.load_export(engine.module, torch.load(Path(d) / EXPORT, map_location="cpu", weights_only=False))
            progress = json.loads((Path(d) / PROGRESS).read_text())
            history = list(progress.get("loss_history", []))
            if progress.get("micro_step"):  # saved mid-epoch: that epoch, after the steps it had done
                start_epoch, skip = progress["epoch"], progress["micro_step"]
            else:
                start_epoch = progress["epoch"] + 1
            torch.distributed.barrier()  # nobody leaves (and deletes) the directory while others read
    control = Control(t, rank, world, device)
    timing["setup"] = time.perf_counter() - began

    def save(metrics: dict[str, Any], epoch: int, micro_step: int = 0) -> None:
        """Report a checkpoint (every rank: ZeRO partitions, fp32 gather, the report are collectives)."""
        t0 = time.perf_counter()

        # report() copies the directory into storage_path before it returns
        with tempfile.TemporaryDirectory(prefix=f"{stage.name.replace('/', '-')}-ckpt-") as d:
            engine.save_checkpoint(d, tag=DS_TAG)
            export = _export(stage, engine)
            if rank == 0:
                torch.save(export, Path(d) / EXPORT)
                (Path(d) / PROGRESS).write_text(json.dumps({**(tag or {}), "epoch": epoch, "micro_step": micro_step,
                                                            "steps_per_epoch": steps_per_epoch,
                                                            "loss_history": history}))
            (report or _ray_report)(metrics | {"loss_history": list(history)}, d)
        control.saved()
        timing["saves"] += time.perf_counter() - t0

    metrics: dict[str, Any] = {"epoch": start_epoch - 1, "loss_history": list(history)}
    for epoch in range(start_epoch, stage.epochs):
        engine.train()
        epoch_logs = stage.begin_epoch(engine.module, epoch)
        stream = StreamConfig(
            batch_size=micro // views, rank=rank, world_size=world, num_workers=t.loader_workers, mode="resampled",
            batches_per_epoch=steps_per_epoch * t.grad_accum, shuffle_buffer=t.shuffle_buffer, seed=data.seed,
            epoch=epoch, keys=data.keys, views=views,
            verify=verify and epoch == start_epoch)  # sha256 once per (re)start
        loader = (cache.batches(stream, augment) if cache is not None
                  else make_loader(shards, data.split, stream, augment))
        sums = _DeviceSums(device)
        step_losses: list[torch.Tensor] = []
        micro_steps, t0 = 0, time.perf_counter()
        for batch in loader:
            if micro_steps < skip:  # resumed mid-epoch: the same stream, its first steps already trained
                micro_steps += 1
                continue
            batch = tuple(b.to(device, non_blocking=True) if torch.is_tensor(b) else b for b in batch)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                loss, logs = stage.loss(engine, batch)
            engine.backward(loss)
            boundary = engine.is_gradient_accumulation_boundary()  # read before step() advances it
            engine.step()
            sums.add(loss, logs)
            if record_losses:
                step_losses.append(loss.detach())
            micro_steps += 1
            if not boundary:
                continue
            stage.after_step(engine.module)
            step = epoch * steps_per_epoch + micro_steps // t.grad_accum  # optimiser steps so far
            due = bool(stage.checkpoint_steps) and step % stage.checkpoint_steps == 0
            if micro_steps == steps_per_epoch * t.grad_accum or not (due or step % t.sync_every == 0):
                continue  # (an epoch's end is looked at below)
            sums.check(stage.name, epoch, micro_steps, rank)
            verdict = control.verdict()
            if verdict or due:  # a checkpoint mid-epoch
                save(sums.means() | epoch_logs | {"epoch": epoch}, epoch, micro_steps)
                if verdict == Control.STOP:
                    raise StopRequested(f"{stage.name}: stopped on request at epoch {epoch}, step {step}")
        skip = 0
        sums.check(stage.name, epoch, micro_steps, rank)
        seconds = time.perf_counter() - t0
        timing["epochs"].append(seconds)
        metrics = sums.means() | epoch_logs
        metrics |= {"epoch": epoch, "lr": sched.get_last_lr()[0],
                    "images_per_s": sums.count * micro * world / max(seconds, 1e-9)}
        history.append(metrics.get("loss", float("nan")))
        if rank == 0:
            from .console import progress
            progress(stage.name, epoch + 1, stage.epochs)
        if record_losses:
            metrics["step_losses"] = torch.stack(step_losses).tolist() if step_losses else []
        if tb is not None:
            tb.scalars(metrics, step=(epoch + 1) * steps_per_epoch, prefix=f"{stage.name}/")
            tb.flush()
        # Ray Train hears from the workers only with a checkpoint (every rank reports equally
        # often): reporting costs a round trip to the controller, TensorBoard has every epoch.
        verdict = control.verdict()
        if ((epoch == stage.epochs - 1 and final_report) or verdict
                or (t.checkpoint_every and (epoch + 1) % t.checkpoint_every == 0)):
            save(metrics, epoch)
        if verdict == Control.STOP and epoch < stage.epochs - 1:
            raise StopRequested(f"{stage.name}: stopped on request after epoch {epoch}")
    metrics["loss_history"] = list(history)
    return _export(stage, engine), metrics


def _ray_report(metrics: dict[str, Any], checkpoint_dir: str) -> None:
    import ray.train
    ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(checkpoint_dir))


class _DeviceSums:
    """Per-epoch sums of the loss and the logged terms, kept on the device (no host sync per
    step); `check` reads them to stop at a non-finite loss, `means` at the epoch's end."""

    def __init__(self, device: torch.device):
        self.device, self.count, self.checked = device, 0, 0
        self.sums: dict[str, torch.Tensor | float] = {}
        self.bad = torch.zeros((), device=device)  # non-finite losses so far
        self.first_bad = torch.zeros((), device=device)  # the first of them (its value)

    def add(self, loss: torch.Tensor, logs: dict[str, Any]) -> None:
        loss = loss.detach().float()
        finite = torch.isfinite(loss)
        self.first_bad = torch.where((self.bad == 0) & ~finite, loss, self.first_bad)
        self.bad = self.bad + (~finite).float()
        for k, v in logs.items():
            v = v.detach().float() if torch.is_tensor(v) else float(v)
            self.sums[k] = self.sums.get(k, 0.0) + v
        self.count += 1

    def check(self, name: str, epoch: int, micro_step: int, rank: int) -> None:
        if self.count > self.checked and float(self.bad) > 0:
            raise StageFailed(f"{name}: loss is {float(self.first_bad)} at epoch {epoch}, between micro steps "
                              f"{self.checked} and {micro_step - 1} on rank {rank}; the last good checkpoint is kept")
        self.checked = micro_step

    def means(self) -> dict[str, float]:
        return {k: float(v) / max(self.count, 1) for k, v in self.sums.items()}


def _export(stage: Stage, engine) -> dict[str, Any]:
    """The stage's export of the engine's module, on the CPU."""
    return stage.export(_Exported(engine.module, cpu_state(engine.module)))


class _Exported:
    """A module stand-in whose state_dict() is a given state (so a stage exports fp32 weights)."""

    def __init__(self, module: torch.nn.Module, state: dict[str, torch.Tensor]):
        self._module, self._state = module, state

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self._state

    def __getattr__(self, name: str) -> Any:
        return getattr(self._module, name)


def fit_stage(stage: Stage, data: StageData, trainer: TrainerConfig, *, name: str, local: bool,
              tb_dir: str | None = None, config_text: str | None = None, record_losses: bool = False,
              batch_key: str = "the batch size") -> tuple[dict[str, Any], dict[str, Any]]:
    """Run `stage` on Ray Train workers; returns (its export from the final checkpoint, last metrics).

    The workers and the global batch follow trainer.batch_scaling (cluster/scaling.py; `batch_key`
    names the setting of `data.global_batch` in what it prints).

    Raises StageFailed with the worker's message when the stage fails.
    """
    from .scaling import plan

    sized = plan(trainer, data.global_batch, stage.name, batch_key)
    if sized.note:
        print(f"[{stage.name}] {sized.note}", flush=True)
    stage.lr_scale = sized.lr_scale
    # the workers' working directory is not the driver's: hand them absolute paths
    data = replace(data, shards=str(Path(data.shards).resolve()), global_batch=sized.global_batch)
    tb_dir = str(Path(tb_dir).resolve()) if tb_dir else None
    result = fit_loop(_train, {"stage": stage, "data": data, "tb_dir": tb_dir, "config_text": config_text,
                               "record_losses": record_losses}, sized.trainer(trainer), name=name, local=local,
                      what=stage.name)
    with result.checkpoint.as_directory() as d:
        export = torch.load(Path(d) / EXPORT, map_location="cpu", weights_only=False)
    return export, dict(result.metrics or {}) | {"workers": sized.workers, "global_batch": sized.global_batch}


def fit_loop(loop, loop_config: dict[str, Any], trainer: TrainerConfig, *, name: str, local: bool, what: str):
    """One Ray Train run `name` (under trainer.storage_path) of `loop(config)` on every worker; a
    re-run of the same name resumes from its latest checkpoint. Returns Ray Train's Result.

    Raises StageFailed with the worker's message (`what` names the work) when the run fails.
    """
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig

    from .rendezvous import torch_config
    from .trainer import Trainer

    storage = Path(trainer.storage_path).resolve()
    storage.mkdir(parents=True, exist_ok=True)
    if trainer.stop_request:  # the workers' working directory is not the driver's
        trainer = replace(trainer, stop_request=str(Path(trainer.stop_request).resolve()))
    trainer = replace(trainer, log_dir=str(Path(trainer.log_dir).resolve() if trainer.log_dir else storage / "logs"))
    scaling = ScalingConfig(num_workers=trainer.num_workers, use_gpu=trainer.use_gpu,
                            resources_per_worker={"CPU": trainer.cpus_per_worker,
                                                  **({"GPU": 1} if trainer.use_gpu else {})})
    run = RunConfig(name=name, storage_path=str(storage), failure_config=FailureConfig(max_failures=trainer.max_failures),
                    checkpoint_config=CheckpointConfig(num_to_keep=2))  # the latest, and one before it
    tc = torch_config(trainer.rendezvous, local, str(storage / "rendezvous"), trainer.timeout_s, trainer.use_gpu)
    stop = stop_file(storage, name)
    stop.unlink(missing_ok=True)  # a new run: the user may have fixed what stopped the last one
    paused_file(stop).unlink(missing_ok=True)
    config = loop_config | {"loop": loop, "trainer": trainer, "stop_file": str(stop), "run_name": name}
    from .console import Follower, worker_log
    logs = "" if trainer.verbose else f"; worker logs {worker_log(trainer.log_dir, name, '*')}"
    follow = contextlib.nullcontext() if trainer.verbose else Follower(worker_log(trainer.log_dir, name, 0))
    try:
        with follow:
            result = Trainer(train_loop_per_worker, train_loop_config=config, scaling_config=scaling,
                                  run_config=run, torch_config=tc).fit()
    except Exception as e:  # TrainingFailedError and friends: surface the worker's own message
        raise StageFailed(f"{what}: {_root_message(e)} (Ray Train run {storage / name}{logs})") from e
    if result.error is not None:
        raise StageFailed(f"{what}: {_root_message(result.error)} (Ray Train run {storage / name}{logs})")
    if paused_file(stop).exists():
        raise JobStopped(f"{paused_file(stop).read_text()}; checkpoint {result.checkpoint.path}; re-run the same "
                         f"command to resume")
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


def _epoch_plan(stage: Stage, n: int, global_batch: int):
    """(optimiser steps per epoch, the views' augmentation or None) of a stage on n images: the batch
    counts samples (images x stage.views), and an epoch draws each image once."""
    return max(1, n * stage.views // global_batch), (stage.augmentation() if stage.views > 1 else None)


def plain_steps(stage: Stage, data: StageData, steps: int, seed: int | None = None,
                trainer: TrainerConfig = TrainerConfig()) -> list[float]:
    """The same stage and batches in one process without Ray or DeepSpeed (a check of the loop):
    the split from memory when trainer.cache_mb holds it (as the loop does), else streamed; on the
    workers' torch threads (trainer.cpus_per_worker), since the thread count changes the order of a
    kernel's sums and so the last bits of every step."""
    from treediff.stages.base import run_plain

    shards = ShardSet.open(data.shards)
    cache = split_cache(shards, data.split, trainer)
    n = len(data.keys) if data.keys is not None else shards.count(data.split)
    views = stage.views
    steps_per_epoch, augment = _epoch_plan(stage, n, data.global_batch)

    def batches(epoch: int):
        cfg = StreamConfig(batch_size=data.global_batch // views, mode="resampled", batches_per_epoch=steps_per_epoch,
                           shuffle_buffer=trainer.shuffle_buffer, seed=data.seed, epoch=epoch, keys=data.keys,
                           views=views)
        return cache.batches(cfg, augment) if cache is not None else make_loader(shards, data.split, cfg, augment)
    with _torch_threads(trainer.cpus_per_worker):
        _, losses = run_plain(stage, batches, steps_per_epoch, seed=data.seed if seed is None else seed,
                              max_steps=steps)
    return losses


@contextlib.contextmanager
def _torch_threads(n: int):
    """torch's intra-op threads set to `n` for the block, then put back."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


__all__ = ["Control", "JobStopped", "StageData", "StageFailed", "StopRequested", "Worker", "fit_loop", "fit_stage", "run_stage", "read_progress", "train_loop_per_worker", "deepspeed_config", "plain_steps", "stop_file"]
