"""The tree-conditioned denoiser and the conditioning it reads from a frozen TreeVAE.

* `Condition`: one leaf per sample, its root-to-leaf path (node ids + latents, padded) and the
  leaf's decoded image x_hat (in [-1, 1]).
* `posterior_condition`: training conditions. Per image, a leaf is sampled from P(leaf | x)
  (multinomial); the path latents are the posterior samples z_i of the TreeVAE's forward pass
  and x_hat is that leaf's decoder output (reference notes, sections 3.2-3.3).
* `prior_condition`: generation conditions. Top-down prior samples (`TreeVAE.generate`); the
  leaf is drawn from the generative routing probabilities or fixed (per-leaf grids), the path
  latents are the prior samples along that leaf's path and x_hat is that leaf's decoding.
* `TreeDenoiser`: the U-Net plus, per `DiffusionConfig.conditioning`, the `PathEncoder` (its
  y_l is added to the time embedding), x_hat concatenated to x_t, and/or a `LeafEmbedding`.
  `eps(x_t, t, cond, drop)` predicts the noise; `guided_eps` applies classifier-free guidance.

The TreeVAE is never trained here: both condition builders run it in eval mode without
gradients. A dropped condition (classifier-free guidance) is NULL leaf / empty path / zero
x_hat, which the U-Net sees as exactly the same input as `cond=None`.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..vae.losses import decoder_image
from ..vae.model import TreeVAE
from .conditioning import NULL_ID, LeafEmbedding, PathEncoder, gather_paths, sample_leaves
from .config import DiffusionConfig
from .guidance import guided_eps
from .schedule import NoiseSchedule
from .unet import UNet


@dataclass
class Condition:
    """Per-sample conditioning: leaves (B,), node_ids (B, P), z_path (B, P, z_dim), mask (B, P), x_hat (B, C, H, W)."""

    leaves: torch.Tensor
    node_ids: torch.Tensor
    z_path: torch.Tensor
    mask: torch.Tensor
    x_hat: torch.Tensor

    def __len__(self) -> int:
        return int(self.leaves.shape[0])

    def drop(self, mask: torch.Tensor) -> "Condition":
        """A copy whose rows where `mask` (bool (B,)) is True are the null condition."""
        mask = mask.to(self.leaves.device, torch.bool)
        if mask.shape != self.leaves.shape:
            raise ValueError(f"Condition.drop: mask must have shape {tuple(self.leaves.shape)}, got {tuple(mask.shape)}")
        keep = ~mask
        return Condition(leaves=self.leaves.masked_fill(mask, NULL_ID),
                         node_ids=self.node_ids.masked_fill(mask[:, None], NULL_ID),
                         z_path=self.z_path * keep[:, None, None].to(self.z_path.dtype),
                         mask=self.mask & keep[:, None],
                         x_hat=self.x_hat * keep.view(-1, 1, 1, 1).to(self.x_hat.dtype))

    def to(self, device: torch.device | str) -> "Condition":
        return Condition(*(getattr(self, f).to(device) for f in ("leaves", "node_ids", "z_path", "mask", "x_hat")))

    def __getitem__(self, idx) -> "Condition":
        return Condition(self.leaves[idx], self.node_ids[idx], self.z_path[idx], self.mask[idx], self.x_hat[idx])

    @staticmethod
    def cat(conds: list["Condition"]) -> "Condition":
        """Concatenate along the batch, padding paths to the longest."""
        p = max(c.node_ids.shape[1] for c in conds)

        def pad(t: torch.Tensor, value) -> torch.Tensor:
            if t.shape[1] == p:
                return t
            shape = (t.shape[0], p - t.shape[1], *t.shape[2:])
            return torch.cat([t, t.new_full(shape, value)], 1)

        return Condition(leaves=torch.cat([c.leaves for c in conds]),
                         node_ids=torch.cat([pad(c.node_ids, NULL_ID) for c in conds]),
                         z_path=torch.cat([pad(c.z_path, 0.0) for c in conds]),
                         mask=torch.cat([pad(c.mask, False) for c in conds]),
                         x_hat=torch.cat([c.x_hat for c in conds]))


def _select_images(images: dict[int, torch.Tensor], leaves: torch.Tensor) -> torch.Tensor:
    """Row b of the result is images[leaves[b]][b]."""
    ref = next(iter(images.values()))
    out = torch.zeros_like(ref)
    for leaf in torch.unique(leaves).tolist():
        rows = (leaves == leaf).nonzero(as_tuple=True)[0]
        out[rows] = images[int(leaf)][rows]
    return out


def _generator_device(generator: torch.Generator | None, device: torch.device) -> torch.Generator | None:
    """`generator` itself when it lives on `device`; otherwise a generator there seeded from it."""
    if generator is None or generator.device.type == torch.device(device).type:
        return generator
    seed = int(torch.randint(2 ** 62, (1,), generator=generator))
    return torch.Generator(device).manual_seed(seed)


def _tree_device(tree_model: TreeVAE) -> torch.device:
    return next(tree_model.parameters()).device


@torch.no_grad()
def _posterior_latents(tree_model: TreeVAE, x: torch.Tensor) -> tuple[dict[int, torch.Tensor], torch.Tensor]:
    """Posterior samples z_i of every node and P(leaf | x) (B, L) over tree.leaves.

    The same samples as `TreeVAE.forward(x, sample=True)` (same RNG draws, in the same order)
    minus the leaf decoders, the prior routers and the ELBO terms (decoding every leaf would be most of the cost; only the chosen leaf is decoded).
    """
    tree_model.check_input(x)
    d = tree_model.bottom_up(x)
    z: dict[int, torch.Tensor] = {}
    prob = {0: x.new_ones(x.shape[0])}
    tree = tree_model.tree
    for i in tree.bfs():
        tree_model._latent(i, d, z, True)
        kids = tree.children(i)
        if len(kids) == 2:  # posterior routing only (no prior router, no KL terms)
            p_left = torch.sigmoid(tree_model.post_router[str(i)](d[tree_model.level(i)]))
            prob[kids[0]], prob[kids[1]] = prob[i] * p_left, prob[i] * (1.0 - p_left)
        elif len(kids) == 1:
            prob[kids[0]] = prob[i]
    return z, torch.stack([prob[leaf] for leaf in tree.leaves], 1)


@torch.no_grad()
def _decode_selected(tree_model: TreeVAE, z: dict[int, torch.Tensor], leaves: torch.Tensor) -> torch.Tensor:
    """x_hat (B, C, H, W) in [-1, 1]: row b decoded by leaf leaves[b] from z[leaves[b]][b]."""
    c = tree_model.cfg
    out = torch.zeros(len(leaves), c.in_channels, c.image_size, c.image_size, device=leaves.device)
    for leaf in torch.unique(leaves).tolist():
        rows = (leaves == leaf).nonzero(as_tuple=True)[0]
        dec = tree_model.decoder[str(int(leaf))](z[int(leaf)][rows])
        out[rows] = decoder_image(dec, c.likelihood).to(out.dtype)
    return out


@torch.no_grad()
def posterior_condition(tree_model: TreeVAE, x: torch.Tensor, generator: torch.Generator | None = None,
                        decode: bool = True) -> Condition:
    """Training condition for images x (B, C, H, W) in [-1, 1], from the frozen tree (eval mode).

    Per sample: leaf ~ P(leaf | x), the posterior samples z_i along its path, and x_hat = that
    leaf's decoding of its z_l (`decode=False`: x_hat left at zeros, for path-only models).
    Raises FloatingPointError when the leaf probabilities are not finite (e.g. NaN input).
    """
    tree_model.eval()
    z, probs = _posterior_latents(tree_model, x)
    if not torch.isfinite(probs).all():
        bad = (~torch.isfinite(probs).all(1)).nonzero(as_tuple=True)[0].tolist()
        raise FloatingPointError(f"the tree's posterior leaf probabilities are not finite for batch rows {bad[:10]} "
                                 f"(non-finite input images?)")
    leaves = sample_leaves(probs, tree_model.tree.leaves, _generator_device(generator, probs.device))
    node_ids, z_path, mask = gather_paths(tree_model.tree, leaves, z)
    x_hat = _decode_selected(tree_model, z, leaves) if decode else torch.zeros_like(x)
    return Condition(leaves, node_ids, z_path, mask, x_hat)


@torch.no_grad()
def prior_condition(tree_model: TreeVAE, n: int, generator: torch.Generator | None = None,
                    leaf: int | torch.Tensor | None = None) -> Condition:
    """Generation condition for n prior samples of the frozen tree.

    leaf None: each sample's leaf is drawn from the generative routing probabilities; an int
    fixes every sample to that leaf; a LongTensor (n,) fixes each sample's leaf. The path
    latents are the prior samples along the chosen leaf's path.
    """
    tree_model.eval()
    device = _tree_device(tree_model)
    gen = _generator_device(generator, device)
    out = tree_model.generate(n, generator=gen, device=device)
    if leaf is None:
        leaves = sample_leaves(out.leaf_probs, out.leaves, gen)
    else:
        leaves = torch.as_tensor(leaf, dtype=torch.long, device=device)
        leaves = leaves.expand(n).clone() if leaves.dim() == 0 else leaves
        if leaves.shape != (n,):
            raise ValueError(f"prior_condition: leaf must be an int or a LongTensor ({n},), got {tuple(leaves.shape)}")
        unknown = sorted(set(leaves.tolist()) - set(out.leaves))
        if unknown:
            raise ValueError(f"prior_condition: {unknown} are not leaves of the tree; its leaves are {out.leaves}")
    node_ids, z_path, mask = gather_paths(tree_model.tree, leaves, out.z)
    return Condition(leaves, node_ids, z_path, mask, _select_images(out.images, leaves))


@torch.no_grad()
def leaf_condition(tree_model: TreeVAE, leaf: int, generator: torch.Generator | None = None, *,
                   min_prob: float = 0.5, draws: int = 64) -> tuple[Condition, float]:
    """Generation condition for one sample of `leaf` that the tree itself would route there.

    Prior samples z_0 ~ N(0, I), z_i ~ p(z_i | z_pa) are drawn `draws` at a time; the first whose
    generative routing probability of `leaf` is >= min_prob is kept (the reference's per-leaf
    "highprob" figures), else the most probable of them. Unlike prior_condition(leaf=...), the
    path's latents then belong to the leaf's own subtree, the paths the denoiser was trained on.
    Returns (the condition, that draw's P(leaf))."""
    tree_model.eval()
    device = _tree_device(tree_model)
    out = tree_model.generate(draws, generator=_generator_device(generator, device), device=device)
    if leaf not in out.leaves:
        raise ValueError(f"leaf_condition: {leaf} is not a leaf of the tree; its leaves are {out.leaves}")
    p = out.leaf_probs[:, out.leaves.index(leaf)]
    above = (p >= min_prob).nonzero(as_tuple=True)[0]
    row = int(above[0]) if len(above) else int(p.argmax())
    leaves = torch.tensor([leaf], device=device)
    node_ids, z_path, mask = gather_paths(tree_model.tree, leaves, {i: z[row:row + 1] for i, z in out.z.items()})
    return Condition(leaves, node_ids, z_path, mask, out.images[leaf][row:row + 1]), float(p[row])


class TreeDenoiser(nn.Module):
    """eps-prediction U-Net conditioned on a frozen tree (see `DiffusionConfig.conditioning`)."""

    def __init__(self, cfg: DiffusionConfig, image_size: int, in_channels: int, z_dim: int, max_nodes: int):
        super().__init__()
        self.cfg = cfg
        self.image_size, self.in_channels, self.z_dim, self.max_nodes = image_size, in_channels, z_dim, max_nodes
        self.unet_cfg = cfg.unet_config(image_size, in_channels)
        self.unet = UNet(self.unet_cfg)
        emb = self.unet_cfg.emb_dim
        self.path_encoder = PathEncoder(z_dim, emb, max_nodes) if cfg.uses_path else None
        self.leaf_embedding = LeafEmbedding(max_nodes, emb) if cfg.leaf_embedding else None

    @classmethod
    def for_tree(cls, cfg: DiffusionConfig, tree_model: TreeVAE) -> "TreeDenoiser":
        """Sizes from the tree: z_dim = C_lat * R * R, max_nodes = 2^(max_depth + 1) - 1."""
        c = tree_model.cfg
        return cls(cfg, image_size=c.image_size, in_channels=c.in_channels,
                   z_dim=c.latent_channels * c.representation_dim ** 2, max_nodes=2 ** (c.max_depth + 1) - 1)

    def arch(self) -> dict[str, int]:
        """What the constructor needs besides the config (stored in checkpoints)."""
        return {"image_size": self.image_size, "in_channels": self.in_channels, "z_dim": self.z_dim,
                "max_nodes": self.max_nodes}

    def schedule(self) -> NoiseSchedule:
        c = self.cfg
        kwargs = {"beta_1": c.beta_1, "beta_T": c.beta_T} if c.schedule == "linear" else {}
        return NoiseSchedule.from_name(c.schedule, c.T, **kwargs)

    def inputs(self, cond: Condition | None, drop: torch.Tensor | None = None
               ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """(cond vector for the time embedding, extra image) of a condition; None -> null."""
        if cond is None:
            return None, None
        if drop is not None:
            cond = cond.drop(drop)
        vec = None
        if self.path_encoder is not None:
            vec = self.path_encoder(cond.node_ids, cond.z_path, cond.mask)
        if self.leaf_embedding is not None:
            leaf_vec = self.leaf_embedding(cond.leaves)
            vec = leaf_vec if vec is None else vec + leaf_vec
        extra = cond.x_hat if self.cfg.uses_recon else None
        return vec, extra

    def eps(self, x_t: torch.Tensor, t: torch.Tensor, cond: Condition | None,
            drop: torch.Tensor | None = None) -> torch.Tensor:
        """Predicted noise; `drop` (bool (B,)) nulls the condition of those rows, cond=None nulls all."""
        if cond is not None and len(cond) != x_t.shape[0]:
            raise ValueError(f"TreeDenoiser: condition has {len(cond)} rows for a batch of {x_t.shape[0]}")
        vec, extra = self.inputs(cond, drop)
        return self.unet(x_t, t, cond=vec, extra=extra)

    forward = eps

    def guided_eps(self, x_t: torch.Tensor, t: torch.Tensor, cond: Condition, w: float) -> torch.Tensor:
        """Classifier-free guidance: eps(null) + w * (eps(cond) - eps(null)); one U-Net call per branch needed."""
        if w == 1:
            return self.eps(x_t, t, cond)
        if w == 0:
            return self.eps(x_t, t, None)
        b = x_t.shape[0]
        both = Condition.cat([cond, cond])
        drop = torch.cat([torch.zeros(b, dtype=torch.bool), torch.ones(b, dtype=torch.bool)]).to(x_t.device)
        out = self.eps(torch.cat([x_t, x_t]), torch.cat([t, t]), both, drop)
        return guided_eps(out[:b], out[b:], w)

    def eps_fn(self, cond: Condition, w: float = 1.0):
        """`eps_fn(x_t, t)` for the samplers, with the condition bound and guidance applied."""
        return lambda x_t, t: self.guided_eps(x_t, t, cond, w)


def frozen(tree_model: TreeVAE) -> TreeVAE:
    """Put a TreeVAE in eval mode with every parameter frozen (the diffusion stage never trains it)."""
    tree_model.set_trainable(None)
    for p in tree_model.parameters():
        p.requires_grad_(False)
    return tree_model.eval()


__all__ = ["Condition", "TreeDenoiser", "posterior_condition", "prior_condition", "frozen"]
