"""Single-process growth schedule of the TreeVAE, phase by phase, with resumable checkpoints.

Phases (reference notes, section 2.1):
  initial   train the whole initial tree (root + 2 leaves)
  subtree   split the chosen leaf and train only the new subtree (rest frozen, eval mode)
  fulltrain optional periodic retraining of the whole tree
  prune     drop near-empty leaves (no training)
  finetune  train the whole final tree

Each phase ends in a checkpoint directory `<run_dir>/tree/phase-NNN-<kind>[-<leaf>]`; a re-run
resumes after the last complete phase. Every growth decision is appended to
`<run_dir>/tree/growth_log.jsonl`.
"""
from __future__ import annotations

import json
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from tqdm.auto import tqdm

from ..checkpoint import load_checkpoint, save_checkpoint
from ..data.augment import augment_views, contrastive_augment
from ..tree import Tree
from .budget import phase_epochs, phase_kl_decay, phase_lr_factor, steps_per_epoch
from .config import GrowthConfig, OptimConfig, TreeVAEConfig
from .contrastive import pair_views
from .growth import choose_prune, choose_split, fulltrain_due
from .losses import kl_weight
from .model import TreeVAE

PHASE_RE = re.compile(r"^phase-(\d{3})-([a-z]+)(?:-(\d+))?$")
Logger = Callable[[str, dict[str, Any]], None]


class NonFiniteLoss(FloatingPointError):
    pass


@dataclass
class GrowthState:
    """What a resumed run needs besides the weights."""

    phase: int = -1  # index of the last complete phase
    kind: str = ""
    splits: int = 0
    growth_done: bool = False
    non_expandable: list[int] = field(default_factory=list)
    since_fulltrain: int = 0


def _print_logger(event: str, data: dict[str, Any]) -> None:
    """The console's growth lines: one per decision and one per phase checkpoint."""
    if event == "decision":
        print(f"[grow] {data['message']}", flush=True)
    elif event == "phase":
        trained = (f": {data['epochs']} epochs on {data['samples']} images in {data['step_seconds']:.1f} s"
                   if data.get("epochs") and data.get("step_seconds") is not None else "")
        print(f"[grow] {data['name']}{trained}; {len(data['leaves'])} leaves", flush=True)


def train_epochs(model: TreeVAE, x: torch.Tensor, *, subtree: int | None, epochs: int, optim: OptimConfig,
                 generator: torch.Generator, desc: str, log: Logger, kl_decay: float | None = None) -> list[dict[str, float]]:
    """Train the trainable part (whole tree, or the subtree at `subtree`) for some epochs.

    A fresh Adam (L2 weight decay), step learning-rate decay (budget.phase_lr_factor) and a
    restarted KL annealing (alpha grows by `kl_decay`, default optim.kl_decay, per epoch), as the
    reference does at every phase. Each epoch drops its partial last batch
    (budget.steps_per_epoch). Returns per-epoch mean loss terms.
    """
    params = model.set_trainable(subtree)
    views = model.cfg.views  # the batch counts samples: images x views
    if epochs == 0 or not params or len(x) < 2:  # (BatchNorm needs two samples; NT-Xent two images)
        return []
    augment = (contrastive_augment(model.cfg.contrastive_augment, model.cfg.image_size, model.cfg.in_channels)
               if views == 2 else None)
    opt = torch.optim.Adam(params, lr=optim.lr, weight_decay=optim.weight_decay, foreach=True)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, phase_lr_factor(optim, epochs))  # stepped per epoch
    n = len(x)
    bs = min(optim.batch_size if views == 1 else max(2, optim.batch_size // views), n)  # images per step
    batches = steps_per_epoch(n, bs)
    decay = optim.kl_decay if kl_decay is None else kl_decay
    history = []
    model.train()
    bar = tqdm(range(epochs), desc=desc, leave=False, dynamic_ncols=True, mininterval=1.0, disable=None)
    for epoch in bar:
        alpha = kl_weight(epoch, optim.kl_start, decay)
        perm = torch.randperm(n, generator=generator)
        sums: dict[str, float] = {}
        steps = 0
        for start in range(0, batches * bs, bs):
            idx = perm[start:start + bs]
            if augment is None:
                out = model(x[idx], subtree=subtree)
            else:  # two augmented views of every image, [x'; x'']
                out = model(pair_views(augment_views(x[idx], augment, views)), subtree=subtree, views=views)
            loss = out.loss(alpha)
            if not torch.isfinite(loss):
                raise NonFiniteLoss(f"{desc}: loss is {loss.item()} at epoch {epoch}, step {steps} "
                                    f"(terms {out.terms()}); the last complete phase checkpoint is kept")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            terms = out.terms() | {"loss": loss.item()}
            for k, v in terms.items():
                sums[k] = sums.get(k, 0.0) + v
            steps += 1
        sched.step()
        means = {k: v / max(steps, 1) for k, v in sums.items()} | {"alpha": alpha, "lr": sched.get_last_lr()[0]}
        history.append(means)
        bar.set_postfix(loss=f"{means.get('loss', float('nan')):.2f}")
        log("epoch", {"phase": desc, "epoch": epoch, **means})
    model.eval()
    return history


@torch.no_grad()
def predict_leaf_probs(model: TreeVAE, x: torch.Tensor, batch_size: int = 1024) -> np.ndarray:
    model.eval()
    return torch.cat([model.leaf_probs(x[i:i + batch_size]) for i in range(0, len(x), batch_size)]).numpy()


def leaf_assignments(model: TreeVAE, x: torch.Tensor) -> np.ndarray:
    """Argmax leaf id per sample."""
    probs = predict_leaf_probs(model, x)
    return np.asarray(model.tree.leaves)[probs.argmax(1)]


class InProcessExecutor:
    """Trains phases and computes leaf probabilities in this process, on images held in memory.

    The executor interface GrowthRun drives (cluster.growth.RayExecutor is the distributed one):
      train(model, subtree, epochs, desc, subset, phase, kl_decay)
                                                   train in place; subset: bool mask over the
                                                   training samples (in leaf_probs' order) or None;
                                                   phase: the number of the checkpoint it leads to;
                                                   kl_decay: the phase's KL annealing per epoch.
                                                   Returns what that checkpoint's meta records of
                                                   the training (or None): step_seconds (time in
                                                   the steps), trained_at (wall clock at the end)
      leaf_probs(model) -> (N, L) array            P(leaf | x) of every training sample
      num_samples                                  N, the training samples
    """

    def __init__(self, x_train: torch.Tensor, optim: OptimConfig, log: Logger):
        self.x, self.optim, self.log = x_train, optim, log
        self.generator = torch.Generator().manual_seed(optim.seed)

    @property
    def num_samples(self) -> int:
        return len(self.x)

    def train(self, model: TreeVAE, *, subtree: int | None, epochs: int, desc: str,
              subset: np.ndarray | None = None, phase: int = 0, kl_decay: float | None = None) -> dict[str, Any] | None:
        if epochs == 0:
            return None
        x = self.x if subset is None else self.x[torch.as_tensor(np.flatnonzero(subset))]
        t0 = time.perf_counter()
        train_epochs(model, x, subtree=subtree, epochs=epochs, optim=self.optim, generator=self.generator, desc=desc,
                     log=self.log, kl_decay=kl_decay)
        return {"step_seconds": time.perf_counter() - t0, "trained_at": time.time(), "epochs": epochs}

    def leaf_probs(self, model: TreeVAE) -> np.ndarray:
        return predict_leaf_probs(model, self.x)


class GrowthRun:
    """Runs (or resumes) the whole growth schedule; phases are trained by an executor."""

    def __init__(self, model_cfg: TreeVAEConfig, growth: GrowthConfig, optim: OptimConfig,
                 x_train: torch.Tensor | None, run_dir: str | Path, config: dict[str, Any], log: Logger | None = None,
                 executor: Any = None, writer: bool = True):
        """writer=False: follow the same schedule (the same decisions, from the same executor
        results) without writing checkpoints, the growth log or messages: a replica of a run that
        another process records."""
        self.model_cfg, self.growth, self.optim = model_cfg, growth, optim
        self.writer = writer
        self.dir = Path(run_dir) / "tree"
        self.config = config
        self.log = (log or _print_logger) if writer else (lambda event, data: None)
        if executor is None:
            if x_train is None:
                raise ValueError("GrowthRun: give the training images or an executor")
            executor = InProcessExecutor(x_train, optim, self.log)
        self.executor = executor
        self.check(model_cfg, growth)

    @staticmethod
    def check(model_cfg: TreeVAEConfig, growth: GrowthConfig) -> None:
        """The settings' agreement (a ValueError naming the keys), before anything starts."""
        if growth.max_depth > model_cfg.max_depth:
            raise ValueError(f"growth.max_depth={growth.max_depth} exceeds model.max_depth={model_cfg.max_depth}")

    # ------------------------------------------------------------------ checkpoints
    def complete_phases(self) -> list[Path]:
        return complete_phases(self.dir)

    def _save(self, model: TreeVAE, state: GrowthState, kind: str, leaf: int | None = None,
              extra: dict[str, Any] | None = None) -> Path:
        state.phase += 1
        state.kind = kind
        name = f"phase-{state.phase:03d}-{kind}" + (f"-{leaf}" if leaf is not None else "")
        meta = {"state": asdict(state), **getattr(self.executor, "checkpoint_meta", {}), **(extra or {})}
        if not self.writer:
            return self.dir / name
        self._fence()
        path = save_checkpoint(self.dir / name, model.state_dict(), model.tree, self.config, meta)
        self.log("phase", {"name": name, "path": str(path), "tree": model.tree.bfs(), "leaves": model.tree.leaves,
                           "epochs": meta.get("epochs"), "step_seconds": meta.get("step_seconds"),
                           "samples": meta.get("subset") or getattr(self.executor, "num_samples", None)})
        return path

    def _phase(self, model: TreeVAE, state: GrowthState, kind: str, leaf: int | None = None,
               extra: dict[str, Any] | None = None, subset: np.ndarray | None = None, **train: Any) -> Path:
        """Train one phase with the executor (its epochs and KL schedule from the budget: the
        kind's epochs, raised to its floor in steps on the phase's samples), then save its
        checkpoint with what the executor records of the training (e.g. the Ray task that ran it)."""
        budget = "intermediate" if kind == "fulltrain" else kind
        n = int(subset.sum()) if subset is not None else self.executor.num_samples
        views = self.model_cfg.views  # a step's batch counts views: n images are n x views samples
        epochs = phase_epochs(self.optim, budget, n * views)
        info = self.executor.train(model, phase=state.phase + 1, epochs=epochs, subset=subset,
                                   kl_decay=phase_kl_decay(self.optim, budget, epochs), **train)
        return self._save(model, state, kind, leaf, {**(extra or {}), **(info or {})})

    def _resume(self) -> tuple[TreeVAE, GrowthState]:
        phases = self.complete_phases()
        if not phases:
            return TreeVAE(self.model_cfg, Tree.initial(self.growth.initial_depth)), GrowthState()
        ckpt = load_checkpoint(phases[-1])
        model = TreeVAE(self.model_cfg, ckpt.tree)
        model.load_state_dict(ckpt.state_dict, strict=True)
        state = GrowthState(**ckpt.meta["state"])
        self.log("resume", {"path": str(phases[-1]), "phase": state.phase, "kind": state.kind})
        if self.writer:
            print(f"[grow] resuming after {phases[-1].name}", flush=True)
        return model, state

    def _fence(self) -> None:
        """Before every write: the executor may refuse (a newer run of the same growth owns the
        directory), so a stale process never writes beside its successor."""
        check = getattr(self.executor, "fence", None)
        if check is not None:
            check()

    def _decision(self, kind: str, message: str, **data: Any) -> None:
        record = {"kind": kind, "message": message, **data}
        if not self.writer:
            return
        self._fence()
        self.dir.mkdir(parents=True, exist_ok=True)
        with open(self.dir / "growth_log.jsonl", "a") as f:
            f.write(json.dumps(record, default=str) + "\n")
        self.log("decision", record)

    # ------------------------------------------------------------------ schedule
    def run(self) -> TreeVAE:
        torch.manual_seed(self.optim.seed)
        model, state = self._resume()
        g, o = self.growth, self.optim
        min_samples = g.min_samples or o.batch_size

        ex = self.executor
        if state.phase < 0:
            self._phase(model, state, "initial", subtree=None, desc="initial")

        while not state.growth_done and state.splits < g.max_phases:
            if fulltrain_due(g.intermediate_fulltrain_every, state.splits, state.kind):
                self._phase(model, state, "fulltrain", subtree=None, desc=f"fulltrain@{state.splits}")
            probs = ex.leaf_probs(model)
            leaves = model.tree.leaves
            decision = choose_split(probs, leaves, num_clusters=g.num_clusters_tree, min_samples=min_samples,
                                    max_depth=g.max_depth, non_expandable=set(state.non_expandable),
                                    mass=g.effective_leaf_mass)
            state.non_expandable += decision.blocked
            if decision.leaf is None:
                self._decision("stop", f"stop growing: {decision.reason}; counts {decision.counts}",
                               **decision.to_dict())
                state.growth_done = True
                break
            leaf = decision.leaf
            self._decision("split", f"split leaf {leaf}: {decision.reason}; counts {decision.counts}"
                           + (f"; skipped {decision.skipped}" if decision.skipped else ""), **decision.to_dict())
            subset = probs[:, leaves.index(leaf)] >= decision.threshold
            model.split(leaf)
            state.splits += 1
            self._phase(model, state, "subtree", leaf, {"decision": decision.to_dict(), "subset": int(subset.sum())},
                        subtree=leaf, desc=f"subtree@{leaf}", subset=subset)
        else:
            state.growth_done = True

        if state.kind in ("initial", "subtree", "fulltrain"):
            if g.prune:
                self._prune(model)
            self._save(model, state, "prune")
        if state.kind == "prune":
            self._phase(model, state, "finetune", subtree=None, desc="finetune")
        model.set_trainable(None)
        model.eval()
        return model

    def _prune(self, model: TreeVAE) -> None:
        while True:
            probs = self.executor.leaf_probs(model)
            assignments = np.asarray(model.tree.leaves)[probs.argmax(1)]
            decision = choose_prune(assignments, model.tree, self.growth.prune_fraction)
            if decision.leaf is None:
                self._decision("prune-stop", f"pruning done: {decision.reason}", sizes=decision.sizes)
                return
            removed = model.prune(decision.leaf)
            self._decision("prune", f"prune leaf {decision.leaf}: {decision.reason}; removed {removed}",
                           leaf=decision.leaf, removed=removed, sizes=decision.sizes)


def complete_phases(tree_dir: Path) -> list[Path]:
    """The complete phase checkpoints under a run's tree/ directory, in the order they were written
    (a checkpoint still being written has a temporary name and is not listed)."""
    if not tree_dir.is_dir():
        return []
    return sorted(p for p in tree_dir.iterdir() if p.is_dir() and PHASE_RE.match(p.name))


def final_checkpoint(run_dir: str | Path) -> Path:
    """The last complete phase of a finished growth run (its finetune phase)."""
    tree_dir = Path(run_dir) / "tree"
    phases = complete_phases(tree_dir)
    if not phases or PHASE_RE.match(phases[-1].name).group(2) != "finetune":
        raise FileNotFoundError(f"no finished tree under {tree_dir}: run `treediff grow run_dir={run_dir}` first")
    return phases[-1]


def load_tree_model(path: str | Path, model_cfg: TreeVAEConfig | None = None) -> TreeVAE:
    """Rebuild a TreeVAE from a checkpoint directory (strict: every weight must match)."""
    ckpt = load_checkpoint(path)
    cfg = model_cfg or TreeVAEConfig(**ckpt.config["model"])
    model = TreeVAE(cfg, ckpt.tree)
    try:
        model.load_state_dict(ckpt.state_dict, strict=True)
    except RuntimeError as e:
        raise ValueError(f"checkpoint {path} does not match its tree/config: {e}") from e
    model.eval()
    return model
