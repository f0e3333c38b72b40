"""Single-process training of the diffusion second stage on top of a frozen tree checkpoint.

`train_diffusion` trains the eps-prediction loss (t ~ U{0..T-1}, MSE) of a `TreeDenoiser`
whose conditions come from the frozen TreeVAE (`posterior_condition`), with AdamW, a linear
learning-rate warm-up, grad-norm clipping, an EMA of the weights and a per-sample conditioning
drop (classifier-free guidance). It writes one checkpoint directory atomically:

    model.pt     the denoiser's (raw) weights          ema.pt     the EMA state (used for sampling)
    tree.json    the frozen tree's topology            config.json the resolved config
    meta.json    tree_checkpoint (absolute path), tree_weights_sha256, steps, loss history

A complete directory is never re-trained; with `checkpoint_every` a progress checkpoint
`<out_dir>.progress` (weights, EMA, optimiser, RNG states) lets an interrupted run resume.
`load_denoiser` rebuilds the denoiser (EMA weights) and its tree, refusing a tree checkpoint
that is missing or differs from the one it was trained on.
"""
from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..checkpoint import CONFIG, META, TREE, WEIGHTS, load_checkpoint, save_checkpoint, sha256_file
from ..tree import Tree
from ..vae.model import TreeVAE
from ..vae.trainer import load_tree_model
from .conditioning import drop_mask
from .config import DiffusionConfig, SamplerConfig
from .model import TreeDenoiser, frozen, posterior_condition
from .schedule import EMA

EMA_FILE = "ema.pt"
TRAINING_STATE = "training.pt"
Logger = Callable[[str, dict[str, Any]], None]


def _print_logger(event: str, data: dict[str, Any]) -> None:
    if event == "log":
        print(f"[diffuse] {data['mode']} step {data['step']}/{data['steps']}  loss {data['loss']:.4f}  "
              f"lr {data['lr']:.2e}", flush=True)
    elif event in ("skip", "resume", "done"):
        print(f"[diffuse] {data['message']}", flush=True)


def is_complete(out_dir: str | Path) -> bool:
    out_dir = Path(out_dir)
    return out_dir.is_dir() and all((out_dir / f).is_file() for f in (WEIGHTS, TREE, CONFIG, META, EMA_FILE))


def progress_dir(out_dir: str | Path) -> Path:
    out_dir = Path(out_dir)
    return out_dir.with_name(out_dir.name + ".progress")


def _resolve_tree_checkpoint(meta: dict[str, Any], out_dir: Path) -> Path:
    recorded = Path(meta["tree_checkpoint"])
    if recorded.is_dir():
        return recorded
    rel = meta.get("tree_checkpoint_relative")
    if rel is not None and (out_dir / rel).is_dir():  # the run directory was moved as a whole
        return (out_dir / rel).resolve()
    raise FileNotFoundError(f"tree checkpoint {recorded} (recorded in {out_dir / META}) not found; the diffusion "
                            f"checkpoint {out_dir} needs the frozen tree it was trained on")


def verify_tree(tree_dir: Path, meta: dict[str, Any], tree: Tree, where: Path) -> None:
    """ValueError unless tree_dir's weights hash and topology are those recorded in `meta` / `tree`."""
    if not (tree_dir / WEIGHTS).is_file() or not (tree_dir / TREE).is_file():
        raise FileNotFoundError(f"tree checkpoint {tree_dir} is incomplete: missing {WEIGHTS} or {TREE}")
    digest = sha256_file(tree_dir / WEIGHTS)
    topology = Tree.load(tree_dir / TREE)
    problems = []
    if digest != meta.get("tree_weights_sha256"):
        problems.append(f"weights sha256 {digest[:12]}... != recorded {str(meta.get('tree_weights_sha256'))[:12]}...")
    if topology.nodes != tree.nodes:
        problems.append(f"nodes {topology.bfs()} != recorded {tree.bfs()}")
    if problems:
        raise ValueError(f"tree checkpoint {tree_dir} does not match the one {where} was trained on: "
                         f"weights hash / topology differ ({'; '.join(problems)})")


def _lr_lambda(warmup: int) -> Callable[[int], float]:
    return lambda step: 1.0 if warmup <= 0 else min(1.0, (step + 1) / warmup)


def _summary(losses: list[float], log_every: int) -> dict[str, Any]:
    chunks = [losses[i:i + log_every] for i in range(0, len(losses), log_every)]
    history = [sum(c) / len(c) for c in chunks]
    return {"loss_start": history[0] if history else None, "loss_end": history[-1] if history else None,
            "loss_history": history, "loss_history_every": log_every}


def denoiser_meta(tree_dir: Path, out_dir: Path, tree_hash: str, arch: dict[str, int], mode: str, steps: int,
                  history: dict[str, Any], **extra: Any) -> dict[str, Any]:
    """meta.json of a denoiser checkpoint: the tree it needs (path, relative path, weights sha256)."""
    return {"tree_checkpoint": str(tree_dir), "tree_checkpoint_relative": os.path.relpath(tree_dir, out_dir),
            "tree_weights_sha256": tree_hash, "denoiser": arch, "mode": mode, "steps": steps, **history, **extra}


def train_diffusion(tree_ckpt_dir: str | Path, cfg: DiffusionConfig, sampler_cfg: SamplerConfig, x_train: torch.Tensor,
                    out_dir: str | Path, config_dict: dict[str, Any] | None = None, log: Logger | None = None,
                    device: str | torch.device | None = None) -> Path:
    """Train a TreeDenoiser on the frozen tree at `tree_ckpt_dir`; returns the checkpoint directory.

    x_train: float (N, C, H, W) in [-1, 1]. A complete `out_dir` is returned as is (after
    checking that its tree is still `tree_ckpt_dir`). A non-finite loss raises
    FloatingPointError naming the step; nothing under `out_dir` is written then and an existing
    progress checkpoint is kept.
    """
    log = log or _print_logger
    out_dir = Path(out_dir)
    tree_dir = Path(tree_ckpt_dir).resolve()
    sampler_cfg.check_against(cfg)
    mode = cfg.mode_name
    if is_complete(out_dir):
        ckpt = load_checkpoint(out_dir)
        verify_tree(tree_dir, ckpt.meta, ckpt.tree, out_dir)
        log("skip", {"mode": mode, "path": str(out_dir),
                     "message": f"{mode}: complete checkpoint {out_dir} found, not retraining"})
        return out_dir

    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    tree_model = frozen(load_tree_model(tree_dir)).to(device)
    tree_model.check_input(x_train[:1])
    tree_hash = sha256_file(tree_dir / WEIGHTS)
    x_train = x_train.to(device)

    torch.manual_seed(cfg.seed)
    denoiser = TreeDenoiser.for_tree(cfg, tree_model).to(device)
    schedule = denoiser.schedule().to(device)
    opt = torch.optim.AdamW(denoiser.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambda(cfg.warmup_steps))
    ema = EMA(denoiser, decay=cfg.ema_decay, warmup=cfg.ema_warmup)
    data_gen = torch.Generator().manual_seed(cfg.seed)
    dev_gen = torch.Generator(device).manual_seed(cfg.seed + 1)
    n = len(x_train)
    bs = min(cfg.batch_size, n)
    step, losses, perm, pos = 0, [], torch.randperm(n, generator=data_gen), 0

    prog = progress_dir(out_dir)
    if cfg.checkpoint_every and is_complete(prog) and (prog / TRAINING_STATE).is_file():
        state = torch.load(prog / TRAINING_STATE, map_location="cpu", weights_only=True)
        ckpt = load_checkpoint(prog, map_location=device)
        verify_tree(tree_dir, ckpt.meta, ckpt.tree, prog)
        denoiser.load_state_dict(ckpt.state_dict, strict=True)
        ema.load_state_dict(torch.load(prog / EMA_FILE, map_location=device, weights_only=True))
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        data_gen.set_state(state["data_gen"])
        dev_gen.set_state(state["dev_gen"])
        torch.set_rng_state(state["torch_rng"])
        step, losses, perm, pos = int(state["step"]), list(state["losses"]), state["perm"], int(state["pos"])
        log("resume", {"mode": mode, "step": step, "message": f"{mode}: resuming from {prog} at step {step}"})

    config = dict(config_dict or {})
    config["diffusion"], config["sampler"] = asdict(cfg), asdict(sampler_cfg)

    def meta(steps: int, extra: dict[str, Any]) -> dict[str, Any]:
        return denoiser_meta(tree_dir, out_dir, tree_hash, denoiser.arch(), mode, steps,
                             _summary(losses, cfg.log_every), **extra)

    denoiser.train()
    t0 = time.time()
    bar = tqdm(range(step, cfg.steps), desc=f"diffuse[{mode}]", leave=False, dynamic_ncols=True, mininterval=1.0,
               disable=None)
    for step in bar:
        if pos + bs > n:
            perm, pos = torch.randperm(n, generator=data_gen), 0
        x0 = x_train[perm[pos:pos + bs]].to(device)
        pos += bs
        try:
            cond = posterior_condition(tree_model, x0, dev_gen, decode=cfg.uses_recon)
        except FloatingPointError as e:
            raise FloatingPointError(f"diffusion {mode}: step {step}: {e}; "
                                     f"no checkpoint written to {out_dir}") from e
        drop = drop_mask(bs, cfg.cond_drop_prob, dev_gen, device)
        t = torch.randint(0, cfg.T, (bs,), generator=dev_gen, device=device)
        noise = torch.randn(x0.shape, generator=dev_gen, device=device)
        loss = F.mse_loss(denoiser.eps(schedule.q_sample(x0, t, noise), t, cond, drop), noise)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"diffusion {mode}: loss is {loss.item()} at step {step}; no checkpoint written "
                                     f"to {out_dir}" + (f", the progress checkpoint {prog} is kept"
                                                        if prog.exists() else ""))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(denoiser.parameters(), cfg.grad_clip)
        opt.step()
        sched.step()
        ema.update(denoiser)
        losses.append(loss.item())
        done = step + 1
        if done % cfg.log_every == 0 or done == cfg.steps:
            recent = losses[-cfg.log_every:]
            avg = sum(recent) / len(recent)
            bar.set_postfix(loss=f"{avg:.4f}")
            log("log", {"mode": mode, "step": done, "steps": cfg.steps, "loss": avg, "lr": sched.get_last_lr()[0]})
        if cfg.checkpoint_every and done % cfg.checkpoint_every == 0 and done < cfg.steps:
            state = {"optimizer": opt.state_dict(), "scheduler": sched.state_dict(), "data_gen": data_gen.get_state(),
                     "dev_gen": dev_gen.get_state(), "torch_rng": torch.get_rng_state(), "step": done,
                     "losses": list(losses), "perm": perm, "pos": pos}
            save_checkpoint(prog, denoiser.state_dict(), tree_model.tree, config, meta(done, {"complete": False}),
                            extra_files={EMA_FILE: ema.state_dict(), TRAINING_STATE: state}, overwrite=True)
    denoiser.eval()
    info = meta(cfg.steps, {"complete": True, "wall_s": round(time.time() - t0, 2), "device": str(device)})
    save_checkpoint(out_dir, denoiser.state_dict(), tree_model.tree, config, info,
                    extra_files={EMA_FILE: ema.state_dict()})
    if prog.exists():
        shutil.rmtree(prog)
    log("done", {"mode": mode, "path": str(out_dir), **info,
                 "message": f"{mode}: {cfg.steps} steps, loss {info['loss_start']:.4f} -> {info['loss_end']:.4f}; "
                            f"checkpoint {out_dir}"})
    return out_dir


def load_denoiser(out_dir: str | Path, device: str | torch.device = "cpu", use_ema: bool = True
                  ) -> tuple[TreeDenoiser, TreeVAE]:
    """(denoiser with the EMA weights, in eval mode; its frozen tree), both strictly loaded.

    FileNotFoundError names a missing checkpoint or tree checkpoint; ValueError when the tree
    checkpoint's weights or topology differ from those the denoiser was trained on.
    """
    out_dir = Path(out_dir)
    if not is_complete(out_dir):
        missing = [f for f in (WEIGHTS, TREE, CONFIG, META, EMA_FILE) if not (out_dir / f).is_file()]
        raise FileNotFoundError(f"diffusion checkpoint {out_dir} not found or incomplete (missing {', '.join(missing)})")
    ckpt = load_checkpoint(out_dir, map_location=device)
    tree_dir = _resolve_tree_checkpoint(ckpt.meta, out_dir)
    verify_tree(tree_dir, ckpt.meta, ckpt.tree, out_dir)
    tree_model = frozen(load_tree_model(tree_dir)).to(device)
    cfg = DiffusionConfig(**ckpt.config["diffusion"])
    denoiser = TreeDenoiser(cfg, **ckpt.meta["denoiser"]).to(device)
    try:
        denoiser.load_state_dict(ckpt.state_dict, strict=True)
        if use_ema:
            ema = EMA(denoiser)
            ema.load_state_dict(torch.load(out_dir / EMA_FILE, map_location=device, weights_only=True))
            ema.copy_to(denoiser)
    except (RuntimeError, KeyError) as e:
        raise ValueError(f"diffusion checkpoint {out_dir} does not match its config: {e}") from e
    return denoiser.eval(), tree_model


def read_meta(out_dir: str | Path) -> dict[str, Any]:
    return json.loads((Path(out_dir) / META).read_text())


__all__ = ["train_diffusion", "denoiser_meta", "load_denoiser", "is_complete", "progress_dir", "sha256_file", "verify_tree",
           "read_meta"]
