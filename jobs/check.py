"""`treediff check`: validate a configuration and build its models, without data, Ray or training.

Composes and validates the config (jobs/schema.py), checks the model against the data set's
image shape and the sampler against the noise schedule, plans the growth schedule with the
growth rules (treediff.vae.growth.plan_growth), builds the TreeVAE of the planned final tree and
one denoiser per conditioning mode at full size on the CPU, runs one forward pass at batch 2
(the tree's ELBO, the posterior condition, the denoiser's eps), and prints the parameter counts
per part, the schedule, the output shapes and the resolved config.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch
import yaml
from torch import nn

from treediff.diffusion.model import TreeDenoiser, frozen, posterior_condition
from treediff.tree import Tree, depth
from treediff.vae.growth import PlannedPhase, plan_growth
from treediff.vae.model import TreeVAE

from .errors import JobError
from .schema import JobConfig


@dataclass
class Part:
    name: str
    detail: str
    params: int


@dataclass
class Inspection:
    """What `check` found: the planned growth, the parameter counts and the batch-2 shapes."""

    phases: list[PlannedPhase]
    tree: Tree  # the planned final tree (balanced growth)
    tree_parts: list[Part]
    denoisers: dict[str, list[Part]]  # conditioning mode -> U-Net, path encoder, leaf embedding
    shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)

    @property
    def tree_params(self) -> int:
        return sum(p.params for p in self.tree_parts)


def count(*modules: nn.Module) -> int:
    return sum(p.numel() for m in modules for p in m.parameters())


def _n(k: int, noun: str) -> str:
    return f"{k} {noun}" + ("" if k == 1 else "s")


def planned_tree(initial_depth: int, phases: list[PlannedPhase]) -> Tree:
    tree = Tree.initial(initial_depth)
    for phase in phases:
        if phase.kind == "subtree":
            tree.split(phase.leaf)
    return tree


def tree_parts(model: TreeVAE) -> list[Part]:
    """Parameters of the shared bottom-up path, then of the nodes at each depth."""
    parts = [Part("bottom-up", f"encoder {model.cfg.encoder} + {len(model.ladder)} ladder blocks",
                  count(model.encoder, model.ladder))]
    tree = model.tree
    per_node = (model.dense, model.transform, model.prior_router, model.post_router, model.decoder)
    for k in range(tree.depth + 1):
        ids = [i for i in tree.bfs() if depth(i) == k]
        routers = sum(tree.is_router(i) for i in ids)
        leaves = sum(tree.is_leaf(i) for i in ids)
        params = sum(count(mods[str(i)]) for i in ids for mods in per_node if str(i) in mods)
        parts.append(Part(f"depth {k}", f"{_n(len(ids), 'node')}: {_n(routers, 'router pair')}, "
                          f"{_n(leaves, 'leaf decoder')}", params))
    return parts


def denoiser_parts(den: TreeDenoiser) -> list[Part]:
    u = den.unet_cfg
    parts = [Part("U-Net", f"{u.model_channels} x {list(u.channel_mult)} channels, "
                  f"{_n(u.num_res_blocks, 'ResBlock')} per level, attention at {list(u.attention_resolutions)} px + middle"
                  + (f", x_hat concatenated ({u.extra_in_channels} ch)" if u.extra_in_channels else ""),
                  count(den.unet))]
    if den.path_encoder is not None:
        parts.append(Part("path encoder", f"f_embed {den.z_dim} -> {u.emb_dim}, f_node over {den.max_nodes} ids",
                          count(den.path_encoder)))
    if den.leaf_embedding is not None:
        parts.append(Part("leaf embedding", f"{den.max_nodes} ids -> {u.emb_dim}", count(den.leaf_embedding)))
    return parts


def modes_of(cfg: JobConfig) -> list[str]:
    """The conditioning modes `pipeline` trains, then `diffuse`'s diffusion.conditioning."""
    return list(dict.fromkeys([*cfg.pipeline.modes, cfg.diffusion.conditioning]))


def inspect(cfg: JobConfig, batch: int = 2, seed: int = 0) -> Inspection:
    """Validate across sections, plan the growth, build the models and run one forward pass at `batch`."""
    cfg.check_model()
    cfg.check_diffusion()
    phases = plan_growth(cfg.growth, cfg.optim)
    tree = planned_tree(cfg.growth.initial_depth, phases)
    torch.manual_seed(seed)
    m = cfg.model
    model = TreeVAE(m, tree)
    found = Inspection(phases, tree, tree_parts(model), {})
    if m.contrastive:
        found.tree_parts.append(Part("projections", f"{len(model.projection)} contrastive heads, one per bottom-up level",
                                     count(model.projection)))
    rest = count(model) - found.tree_params
    if rest:  # modules outside the per-node dicts, should the model grow some
        found.tree_parts.append(Part("other", "outside the bottom-up path and the nodes", rest))
    x = torch.rand(batch, m.in_channels, m.image_size, m.image_size) * 2 - 1
    shapes = found.shapes
    shapes["x"] = tuple(x.shape)
    with torch.no_grad():
        shapes["tree.d0"] = tuple(model.encoder(x).shape)  # the encoder's output, read by the ladder
    out = model(x)  # training mode: the ELBO of the whole tree
    if m.contrastive:  # a two-view batch, [x'; x''], and its contrastive term
        shapes["tree.contrastive"] = tuple(model(torch.cat([x, x.flip(3)]), views=2).contrastive.shape)
    leaf = out.leaves[0]
    shapes |= {"tree.leaf_probs": tuple(out.leaf_probs.shape), "tree.z": tuple(out.z[0].shape),
               "tree.decoded": tuple(out.decoded[leaf].shape), "tree.loss": tuple(out.loss(1.0).shape)}
    cond = posterior_condition(frozen(model), x)
    shapes |= {"cond.z_path": tuple(cond.z_path.shape), "cond.x_hat": tuple(cond.x_hat.shape)}
    t = torch.randint(cfg.diffusion.T, (batch,))
    for mode in modes_of(cfg):
        den = TreeDenoiser.for_tree(replace(cfg.diffusion, conditioning=mode), model)
        found.denoisers[den.cfg.mode_name] = denoiser_parts(den)
        with torch.no_grad():
            vec, _ = den.inputs(cond)
            if vec is not None:
                shapes[f"{den.cfg.mode_name}.cond"] = tuple(vec.shape)
            shapes[f"{den.cfg.mode_name}.eps"] = tuple(den.eps(x, t, cond).shape)
    return found


def schedule_lines(cfg: JobConfig, phases: list[PlannedPhase]) -> list[str]:
    g = cfg.growth
    kinds: dict[str, list[PlannedPhase]] = {}
    for p in phases:
        kinds.setdefault(p.kind, []).append(p)
    lines = [f"from depth {g.initial_depth} ({2 ** g.initial_depth} leaves) to {g.num_clusters_tree} effective leaves "
             f"(depth <= {g.max_depth}, at most {g.max_phases} splits, leaves under {g.prune_fraction:.0%} pruned); "
             f"with every leaf effective:"]
    for kind in ("initial", "subtree", "fulltrain", "prune", "finetune"):
        ps = kinds.get(kind, [])
        if not ps:
            continue
        what = {"initial": "the whole initial tree", "subtree": "the new subtree only, on its leaf's samples",
                "fulltrain": f"the whole tree, once every {g.intermediate_fulltrain_every} splits",
                "prune": "no training", "finetune": "the whole final tree"}[kind]
        epochs = "" if kind == "prune" else f" x {ps[0].epochs} epochs"
        floor = getattr(cfg.optim, f"min_steps_{'intermediate' if kind == 'fulltrain' else kind}", 0)
        if floor and kind != "prune":
            what += f" (at least {floor} optimiser steps: small leaves get more epochs)"
        lines.append(f"  {len(ps):3d} {kind:9s}{epochs:14s} {what}")
    if cfg.optim.kl_finetune == "reach_one" and "finetune" in kinds:
        lines.append("      the fine-tune's KL weight reaches 1 by its last epoch (decay max(0.01, 1 / (epochs - 1)))")
    total = sum(p.epochs for p in phases)
    lines.append(f"  {len(phases)} phases, {total} epochs in all (a subtree's over its leaf's samples), "
                 f"final tree of {phases[-1].leaves} leaves")
    return lines


def _table(parts: list[Part], indent: str = "  ") -> list[str]:
    return [f"{indent}{p.name:16s}{p.params:>14,d}   {p.detail}" for p in parts]


def report(cfg: JobConfig, found: Inspection) -> str:
    m, d, s = cfg.model, cfg.diffusion, cfg.sampler
    root = f"data.root={cfg.data.root}" if cfg.data.root else "data.root not set: prepare and grow need it"
    lines = [f"data       {cfg.data.name}, model input {m.image_size}x{m.image_size}x{m.in_channels}; {root}",
             f"tree       encoder {m.encoder}, latents {m.latent_channels} x {m.representation_dim} x "
             f"{m.representation_dim} (z_dim {m.latent_channels * m.representation_dim ** 2}), bottom-up "
             f"{m.bottom_up_channels} channels, {m.likelihood} likelihood; batch {cfg.optim.batch_size}, "
             f"lr {cfg.optim.lr:g}, KL annealing {cfg.optim.kl_start:g} + {cfg.optim.kl_decay:g}/epoch",
             "           " + _contrastive(cfg),
             "growth     " + "\n".join(schedule_lines(cfg, found.phases)),
             f"parameters of the planned tree ({len(found.tree.leaves)} leaves, {len(found.tree.nodes)} nodes):",
             *_table(found.tree_parts),
             f"  {'tree total':16s}{found.tree_params:>14,d}"]
    for mode, parts in found.denoisers.items():
        lines += [f"parameters of the denoiser '{mode}':", *_table(parts),
                  f"  {'total':16s}{sum(p.params for p in parts):>14,d}"]
    lines += [f"diffusion  T={d.T} {d.schedule} schedule; {d.steps:,d} steps at batch {d.batch_size}, lr {d.lr:g}, "
              f"warm-up {d.warmup_steps}, EMA {d.ema_decay:g}, condition dropout {d.cond_drop_prob:g}; "
              f"pipeline modes {cfg.pipeline.modes}",
              f"sampler    {s.method} {s.steps} steps ({s.spacing}), eta {s.eta:g}, w {s.w:g}",
              f"eval       {cfg.eval.extractor}: {cfg.eval.num_samples} generations, {cfg.eval.num_recon} "
              f"reconstructions, {cfg.eval.samples_per_leaf} per leaf; {cfg.eval.workers} farm workers"
              + (" (GPU)" if cfg.eval.use_gpu else ""),
              f"runtime    {_runtime(cfg)}",
              "forward    batch 2: " + ", ".join(f"{k} {tuple(v)}" for k, v in found.shapes.items())]
    return "\n".join(lines)


def _contrastive(cfg: JobConfig) -> str:
    m, bs = cfg.model, cfg.optim.batch_size
    if not m.contrastive:
        return "no contrastive routing term (model.contrastive=false): the ELBO alone"
    return (f"contrastive routing term x {m.contrastive_weight:g} on two augmented views per image "
            f"(preset {m.contrastive_augment}): a batch of {bs} is {bs // 2} images x 2 views")


def _runtime(cfg: JobConfig) -> str:
    c, t = cfg.cluster, cfg.trainer
    where = "one process (no Ray)" if c.runtime == "inprocess" else (
        f"Ray at {c.address}" if c.address else "a local Ray cluster on 127.0.0.1")
    if cfg.slurm.nodes > 1 and c.runtime == "ray":
        where += f" (under `treediff submit slurm`: Ray across the {cfg.slurm.nodes} nodes)"
    workers = _n(t.num_workers, "GPU worker" if t.use_gpu else "CPU worker")
    return (f"{where}; {workers}, ZeRO-{t.zero_stage}, precision {t.precision}, storage {t.storage_path}; "
            f"slurm: {_n(cfg.slurm.nodes, 'node')} x {_n(cfg.slurm.gpus_per_node, 'GPU')}")


def run(cfg: JobConfig, plain: dict) -> Inspection:
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    try:
        found = inspect(cfg)
    except ValueError as e:
        raise JobError(f"invalid configuration: {e}") from e
    except RuntimeError as e:  # a shape mismatch inside a forward pass
        raise JobError(f"the models do not run with this configuration (model.*, diffusion.*): {e}") from e
    print(report(cfg, found))
    print("resolved config:")
    print(yaml.safe_dump(plain, sort_keys=False), end="")
    print("treediff check: OK")
    return found
