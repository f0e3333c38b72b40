"""Conditioning signals for the denoising U-Net (reference notes, sections 3.2 and 3.3).

* `PathEncoder`: TreeDiffusion's path signal
  y_l = sum_{i in P_l} [ f_embed(vec(z_i)) + f_node(i) ] over the root-to-leaf path P_l.
* `LeafEmbedding`: Diffuse-TreeVAE's optional embedding of the leaf id.
* `gather_paths`: padded (node_ids, z_path, mask) tensors for a batch of leaves.
* `sample_leaves` / `argmax_leaves`: the leaf each sample is conditioned on.
* `drop_mask`: which samples classifier-free guidance trains unconditionally.

Both vectors have width emb_dim (= UNet.emb_dim, 4 * model_channels) and are added to the
U-Net's time embedding.

Null conditioning (classifier-free guidance). A sample whose conditioning is dropped gets a
conditioning vector of exactly zero and an extra image (x_hat) of zeros
(`treediff.diffusion.model.Condition.drop`), and `UNet.forward(cond=None, extra=None)` is the
same null input. The leaf id `NULL_ID` (-1) gives the same result: `gather_paths` returns an
empty (fully masked) path for it, so `PathEncoder` yields a zero vector, and `LeafEmbedding`
maps it to zero. Guidance evaluates the U-Net once with the full conditioning and once with
everything dropped; because the null input is a plain zero tensor of the usual shape, this
works for the path signal too (the reference's does not: its path is a Python list).

Deviations from the reference: node and leaf ids enter through an embedding table
(`nn.Embedding` over heap ids) rather than as an unnormalised float scalar; the drop is drawn
per sample, not once per batch.
"""
from __future__ import annotations

import torch
from torch import nn

from treediff.tree import Tree

NULL_ID = -1  # leaf / node id of a dropped (unconditional) sample and of path padding


def _check_ids(ids: torch.Tensor, max_nodes: int, what: str) -> None:
    if ids.numel() and (int(ids.max()) >= max_nodes or int(ids.min()) < NULL_ID):
        raise ValueError(f"{what}: node ids must lie in [0, max_nodes={max_nodes}) or be NULL_ID={NULL_ID}, "
                         f"got range [{int(ids.min())}, {int(ids.max())}]; raise max_nodes (heap ids reach "
                         f"2^(max_depth+1) - 2)")


class IdEmbedding(nn.Module):
    """Embedding(max_nodes, emb) -> SiLU -> Linear(emb, emb) of a heap id; NULL_ID -> exactly zero."""

    def __init__(self, max_nodes: int, emb_dim: int):
        super().__init__()
        if max_nodes < 1:
            raise ValueError(f"max_nodes must be >= 1, got {max_nodes}")
        self.max_nodes = max_nodes
        self.table = nn.Embedding(max_nodes, emb_dim)
        self.mlp = nn.Sequential(nn.SiLU(), nn.Linear(emb_dim, emb_dim))

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        _check_ids(ids, self.max_nodes, type(self).__name__)
        valid = ids != NULL_ID
        out = self.mlp(self.table(ids.clamp(min=0)))
        return out.masked_fill(~valid.unsqueeze(-1), 0.0)


class PathEncoder(nn.Module):
    """y = sum over the valid path positions of f_embed(vec(z_i)) + f_node(i)."""

    def __init__(self, z_dim: int, emb_dim: int, max_nodes: int):
        super().__init__()
        self.z_dim, self.emb_dim, self.max_nodes = z_dim, emb_dim, max_nodes
        self.f_embed = nn.Sequential(nn.Linear(z_dim, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        self.f_node = IdEmbedding(max_nodes, emb_dim)

    def encode_parts(self, node_ids: torch.Tensor, z: torch.Tensor,
                     mask: torch.Tensor | None = None) -> torch.Tensor:
        """Per-node contributions (B, P, emb_dim); masked (padding) positions are exactly zero.

        node_ids: LongTensor (B, P); z: (B, P, z_dim) or (B, P, C, R, R); mask: bool (B, P),
        True where the position holds a path node (default: node_ids != NULL_ID).
        """
        if node_ids.dim() != 2:
            raise ValueError(f"PathEncoder: node_ids must be (B, P), got {tuple(node_ids.shape)}")
        z = z.flatten(2)
        if z.shape != (*node_ids.shape, self.z_dim):
            raise ValueError(f"PathEncoder: z must be (B, P, z_dim={self.z_dim}) matching node_ids "
                             f"{tuple(node_ids.shape)}, got {tuple(z.shape)} after flattening")
        if mask is None:
            mask = node_ids != NULL_ID
        if mask.shape != node_ids.shape:
            raise ValueError(f"PathEncoder: mask must have shape {tuple(node_ids.shape)}, got {tuple(mask.shape)}")
        ids = node_ids.masked_fill(~mask, NULL_ID)
        parts = self.f_embed(z) + self.f_node(ids)
        return parts.masked_fill(~mask.unsqueeze(-1), 0.0)

    def forward(self, node_ids: torch.Tensor, z: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """y: (B, emb_dim)."""
        return self.encode_parts(node_ids, z, mask).sum(1)


class LeafEmbedding(nn.Module):
    """Learned embedding of the leaf id (B,) -> (B, emb_dim); NULL_ID -> zero."""

    def __init__(self, max_nodes: int, emb_dim: int):
        super().__init__()
        self.emb_dim = emb_dim
        self.embed = IdEmbedding(max_nodes, emb_dim)

    def forward(self, leaves: torch.Tensor) -> torch.Tensor:
        if leaves.dim() != 1:
            raise ValueError(f"LeafEmbedding: leaves must be (B,), got {tuple(leaves.shape)}")
        return self.embed(leaves)


def gather_paths(tree: Tree, leaves: torch.Tensor, z: dict[int, torch.Tensor]
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Padded root-to-leaf paths for each sample's leaf.

    leaves: LongTensor (B,) of node ids (NULL_ID: empty path); z: node id -> (B, C, R, R) latents.
    Returns node_ids LongTensor (B, P) (root first, padded with NULL_ID), z_path (B, P, C*R*R)
    (padding zeros) and mask bool (B, P); P is the longest path in the batch (at least 1).
    Work is vectorised per distinct leaf.
    """
    if leaves.dim() != 1:
        raise ValueError(f"gather_paths: leaves must be (B,), got {tuple(leaves.shape)}")
    if not z:
        raise ValueError("gather_paths: z is empty")
    b = leaves.shape[0]
    ref = next(iter(z.values()))
    device, dtype, z_dim = ref.device, ref.dtype, ref[0].numel()
    distinct = [int(u) for u in torch.unique(leaves).tolist() if int(u) != NULL_ID]
    paths = {}
    for u in distinct:
        if u not in tree:
            raise ValueError(f"gather_paths: leaf {u} is not in the tree {tree.bfs()}")
        paths[u] = tree.path(u)
        missing = [n for n in paths[u] if n not in z]
        if missing:
            raise ValueError(f"gather_paths: no latent for nodes {missing} on the path to leaf {u}")
    p = max([len(v) for v in paths.values()] + [1])
    node_ids = torch.full((b, p), NULL_ID, dtype=torch.long, device=device)
    mask = torch.zeros(b, p, dtype=torch.bool, device=device)
    z_path = torch.zeros(b, p, z_dim, dtype=dtype, device=device)
    leaves = leaves.to(device)
    for u, path in paths.items():
        rows = (leaves == u).nonzero(as_tuple=True)[0]
        n = len(path)
        node_ids[rows, :n] = torch.tensor(path, dtype=torch.long, device=device)
        mask[rows, :n] = True
        z_path[rows, :n] = torch.stack([z[i][rows].reshape(len(rows), -1) for i in path], 1).to(dtype)
    return node_ids, z_path, mask


def _check_probs(leaf_probs: torch.Tensor, leaves: list[int]) -> None:
    if leaf_probs.dim() != 2 or leaf_probs.shape[1] != len(leaves):
        raise ValueError(f"leaf_probs must be (B, L={len(leaves)}) over the leaves {leaves}, "
                         f"got {tuple(leaf_probs.shape)}")


def sample_leaves(leaf_probs: torch.Tensor, leaves: list[int],
                  generator: torch.Generator | None = None) -> torch.Tensor:
    """One leaf id per sample, drawn from leaf_probs (B, L) over `leaves`; LongTensor (B,).

    Used for posterior (P(l|x)) and prior (generative routing) leaf choice alike. The generator
    must live on leaf_probs' device.
    """
    _check_probs(leaf_probs, leaves)
    idx = torch.multinomial(leaf_probs.float(), 1, generator=generator).squeeze(1)
    return torch.tensor(leaves, dtype=torch.long, device=leaf_probs.device)[idx]


def argmax_leaves(leaf_probs: torch.Tensor, leaves: list[int]) -> torch.Tensor:
    """The most probable leaf id per sample; LongTensor (B,)."""
    _check_probs(leaf_probs, leaves)
    return torch.tensor(leaves, dtype=torch.long, device=leaf_probs.device)[leaf_probs.argmax(1)]


def drop_mask(batch: int, p: float, generator: torch.Generator | None = None,
              device: torch.device | str = "cpu") -> torch.Tensor:
    """Bool (batch,): True for samples whose conditioning is dropped, each independently with prob p."""
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"drop probability must be in [0, 1], got {p}")
    if p == 0.0:
        return torch.zeros(batch, dtype=torch.bool, device=device)
    return torch.rand(batch, generator=generator, device=device) < p
