"""The CNN-TreeVAE: a tree of spatial latents z_i, routed top-down.

Inference (posterior), per node i at depth k reading bottom-up features d_{L-k}:
    q(z_0 | x)          = N(mu_hat_0, var_hat_0)
    q(z_i | z_pa, x)    = precision-weighted merge of N(mu_hat_i, var_hat_i) and p(z_i | z_pa)
    P(left at i | x)    = sigmoid(post_router_i(d))        (soft routing: every leaf is evaluated)
Generative model (prior):
    p(z_0) = N(0, I),  p(z_i | z_pa) = transform_i(z_pa),  P(left at i | z_i) = sigmoid(prior_router_i(z_i))
Leaves decode their z_l into x_hat_l.

Colour presets add the contrastive routing term (treediff/vae/contrastive.py) on batches of two
augmented views: forward(x, views=2) with x = [x'; x''], in training phases only.

Modules live in ModuleDicts keyed by the node's heap id, so growth and pruning add or drop
entries without renaming anything.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from ..tree import Tree, depth, parent
from .blocks import ConvStack, GaussianHead, Projection, Router, Transformation
from .config import TreeVAEConfig
from .contrastive import instance_term, routing_term
from .encoders import make_decoder, make_encoder
from .losses import EPS, decoder_image, kl_bernoulli, kl_normal, precision_merge, reconstruction_nll, to_unit


@dataclass
class TreeOutput:
    """Result of a (full or subtree) forward pass; per-sample terms have shape (B,)."""

    leaves: list[int]
    leaf_probs: torch.Tensor  # (B, L): P(leaf | x) over `leaves`, in that order
    node_probs: dict[int, torch.Tensor]
    z: dict[int, torch.Tensor]  # sampled latents, (B, C_lat, R, R)
    decoded: dict[int, torch.Tensor]  # raw decoder outputs per leaf
    rec: torch.Tensor
    kl_root: torch.Tensor
    kl_nodes: torch.Tensor
    kl_decisions: torch.Tensor
    kl_per_node: dict[int, torch.Tensor] = field(default_factory=dict)
    contrastive: torch.Tensor | None = None  # the contrastive routing term (0-dim), on two-view batches
    contrastive_weight: float = 0.0

    def loss(self, alpha: float) -> torch.Tensor:
        """Negative ELBO with KL weight alpha, averaged over the batch (plus the weighted
        contrastive term on a two-view batch; the reference does not anneal it)."""
        elbo = (self.rec + alpha * (self.kl_root + self.kl_nodes + self.kl_decisions)).mean()
        if self.contrastive is None:
            return elbo
        return elbo + self.contrastive_weight * self.contrastive

    def terms(self) -> dict[str, float]:
        return {k: v.item() for k, v in self.mean_terms().items()}

    def mean_terms(self) -> dict[str, torch.Tensor]:
        """The batch means of the loss terms, as detached tensors (no host sync)."""
        terms = {"rec": self.rec.mean().detach(), "kl_root": self.kl_root.mean().detach(),
                 "kl_nodes": self.kl_nodes.mean().detach(), "kl_decisions": self.kl_decisions.mean().detach()}
        if self.contrastive is not None:
            terms["contrastive"] = self.contrastive.detach()
        return terms


@dataclass
class Generation:
    leaves: list[int]
    leaf_probs: torch.Tensor  # (N, L): generative routing probabilities
    images: dict[int, torch.Tensor]  # leaf -> (N, C, H, W) in [-1, 1]
    z: dict[int, torch.Tensor]  # prior samples per node

    def most_probable(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Images rendered by each sample's most probable leaf, and that leaf's id."""
        idx = self.leaf_probs.argmax(1)
        stacked = torch.stack([self.images[leaf] for leaf in self.leaves], 1)  # (N, L, C, H, W)
        leaf_ids = torch.tensor(self.leaves, device=idx.device)[idx]
        return stacked[torch.arange(len(idx)), idx], leaf_ids


class TreeVAE(nn.Module):
    def __init__(self, cfg: TreeVAEConfig, tree: Tree | None = None):
        super().__init__()
        self.cfg = cfg
        self.tree = tree.copy() if tree is not None else Tree.initial(1)
        if self.tree.depth > cfg.max_depth:
            raise ValueError(f"model.max_depth={cfg.max_depth} is smaller than the tree's depth {self.tree.depth}")
        self.encoder = make_encoder(cfg)
        # d_1 .. d_L: the bottom-up ladder above the encoder output d_0
        self.ladder = nn.ModuleList(ConvStack(cfg.bottom_up_channels, cfg.bottom_up_channels, cfg.activation,
                                              residual=cfg.res_connections, rep_dim=cfg.representation_dim)
                                    for _ in range(cfg.max_depth))
        self.dense = nn.ModuleDict()  # node -> q-hat head on d
        self.transform = nn.ModuleDict()  # non-root node -> prior p(z_i | z_pa)
        self.prior_router = nn.ModuleDict()  # router node -> P(left | z_i)
        self.post_router = nn.ModuleDict()  # router node -> P(left | x)
        self.decoder = nn.ModuleDict()  # leaf -> x_hat
        for i in self.tree.bfs():
            self._add_latent(i)
        for i in self.tree.routers:
            self._add_routers(i)
        for i in self.tree.leaves:
            self.decoder[str(i)] = make_decoder(cfg)
        if cfg.contrastive:  # one projection per bottom-up level d_0 .. d_L (the instance-wise term)
            self.projection = nn.ModuleList(Projection(cfg.bottom_up_channels, cfg.representation_dim, cfg.activation)
                                            for _ in range(cfg.max_depth + 1))
        self._trainable_root: int | None = None  # None: the whole tree trains

    # ------------------------------------------------------------------ structure
    def _add_latent(self, i: int) -> None:
        c = self.cfg
        self.dense[str(i)] = GaussianHead(c.bottom_up_channels, c.latent_channels, c.representation_dim)
        if i != 0:
            self.transform[str(i)] = Transformation(c.latent_channels, c.bottom_up_channels, c.activation,
                                                    c.representation_dim)

    def _add_routers(self, i: int) -> None:
        c = self.cfg
        self.prior_router[str(i)] = Router(c.latent_channels, c.representation_dim, c.hidden, c.activation,
                                           c.dropout_router)
        self.post_router[str(i)] = Router(c.bottom_up_channels, c.representation_dim, c.hidden, c.activation,
                                          c.dropout_router)

    def split(self, leaf: int) -> tuple[int, int]:
        """Grow two children under `leaf`: the leaf drops its decoder and gains routers."""
        if depth(leaf) + 1 > self.cfg.max_depth:
            raise ValueError(f"cannot split leaf {leaf}: its children would exceed model.max_depth={self.cfg.max_depth}")
        device = next(self.parameters()).device
        kids = self.tree.split(leaf)
        del self.decoder[str(leaf)]
        self._add_routers(leaf)
        for k in kids:
            self._add_latent(k)
            self.decoder[str(k)] = make_decoder(self.cfg)
        self.to(device)
        return kids

    def prune(self, leaf: int) -> list[int]:
        """Remove a leaf (and ancestors left childless); a parent left with one child stops routing."""
        removed = self.tree.prune(leaf)
        for i in removed:
            for modules in (self.dense, self.transform, self.prior_router, self.post_router, self.decoder):
                if str(i) in modules:
                    del modules[str(i)]
        survivor = parent(removed[-1])
        if not self.tree.is_router(survivor):
            for modules in (self.prior_router, self.post_router):
                if str(survivor) in modules:
                    del modules[str(survivor)]
        return removed

    def level(self, i: int) -> int:
        """Bottom-up level read by node i: the root reads the deepest level d_L."""
        return self.cfg.max_depth - depth(i)

    # ------------------------------------------------------------------ freezing
    def subtree_modules(self, root: int) -> list[nn.Module]:
        """The modules that a growth phase at `root` trains: its routers and everything below."""
        below = [i for i in self.tree.bfs() if i != root and root in self.tree.path(i)]
        mods: list[nn.Module] = []
        for i in [root] + below:
            for modules in (self.prior_router, self.post_router, self.decoder):
                if str(i) in modules:
                    mods.append(modules[str(i)])
        for i in below:
            mods += [self.dense[str(i)], self.transform[str(i)]]
        return mods

    def set_trainable(self, root: int | None) -> list[nn.Parameter]:
        """Freeze everything outside the subtree at `root` (None: train the whole tree).

        Frozen modules get requires_grad=False and stay in eval mode (BatchNorm uses its
        running statistics) even when .train() is called. Returns the trainable parameters.
        """
        self._trainable_root = root
        if root is None:
            for p in self.parameters():
                p.requires_grad_(True)
            self.train(self.training)
            return list(self.parameters())
        for p in self.parameters():
            p.requires_grad_(False)
        params: list[nn.Parameter] = []
        for m in self.subtree_modules(root):
            for p in m.parameters():
                p.requires_grad_(True)
                params.append(p)
        self.train(self.training)
        return params

    def train(self, mode: bool = True) -> "TreeVAE":
        super().train(mode)
        if mode and self._trainable_root is not None:
            super().train(False)
            for m in self.subtree_modules(self._trainable_root):
                m.train(True)
        return self

    # ------------------------------------------------------------------ inference
    def check_input(self, x: torch.Tensor) -> None:
        c = self.cfg
        want = (c.in_channels, c.image_size, c.image_size)
        if x.dim() != 4 or tuple(x.shape[1:]) != want:
            raise ValueError(f"input images have shape {tuple(x.shape[1:])}, but the encoder is configured for "
                             f"{want} (model.in_channels, model.image_size)")

    def bottom_up(self, x: torch.Tensor) -> list[torch.Tensor]:
        """d_0 .. d_L from x in [-1, 1] (the encoder reads it in model.encoder_input's range)."""
        d = [self.encoder(to_unit(x) if self.cfg.encoder_input == "unit" else x)]
        for block in self.ladder:
            d.append(block(d[-1]))
        return d

    def _latent(self, i: int, d: list[torch.Tensor], z: dict[int, torch.Tensor], sample: bool) -> torch.Tensor:
        """Posterior sample of node i into z[i]; returns KL(q(z_i) || p(z_i | z_pa)), (B,)."""
        mu_hat, var_hat = self.dense[str(i)](d[self.level(i)])
        if i == 0:
            mu_p, var_p = torch.zeros_like(mu_hat), torch.ones_like(var_hat)
            mu_q, var_q = mu_hat, var_hat
        else:
            mu_p, var_p = self.transform[str(i)](z[parent(i)])
            mu_q, var_q = precision_merge(mu_hat, var_hat, mu_p, var_p)
        z[i] = mu_q + torch.sqrt(var_q + EPS) * torch.randn_like(mu_q) if sample else mu_q
        return kl_normal(mu_q, var_q, mu_p, var_p)

    def _route(self, i: int, d: list[torch.Tensor], z: dict[int, torch.Tensor],
               prob: dict[int, torch.Tensor], q: dict[int, torch.Tensor] | None = None) -> torch.Tensor | None:
        """Propagate P(node | x) to i's children; returns the decision KL at a router node
        (and records P(left at i | x) in `q` when given)."""
        kids = self.tree.children(i)
        if len(kids) == 1:
            prob[kids[0]] = prob[i]
        if len(kids) != 2:
            return None
        logit_q = self.post_router[str(i)](d[self.level(i)])
        logit_p = self.prior_router[str(i)](z[i])
        p_left = torch.sigmoid(logit_q)
        if q is not None:
            q[i] = p_left
        prob[kids[0]] = prob[i] * p_left
        prob[kids[1]] = prob[i] * (1.0 - p_left)
        return kl_bernoulli(logit_q, logit_p)

    def forward(self, x: torch.Tensor, subtree: int | None = None, sample: bool = True, views: int = 1) -> TreeOutput:
        """Full-tree ELBO terms, or (subtree=i) only the terms of the subtree below node i.

        In subtree mode the path root -> i is computed without gradients (it is frozen) and
        the returned terms are those of the full ELBO that depend on the subtree's modules:
        i's decision, the KL of the nodes below i, and the reconstructions of its leaves.

        views=2: x is a two-view batch [x'; x''] (2B samples) and the output carries the
        contrastive term of the routers this pass trains (model.contrastive must be on).
        """
        self.check_input(x)
        if views not in (1, 2):
            raise ValueError(f"views must be 1 or 2, got {views}")
        if views == 2 and not self.cfg.contrastive:
            raise ValueError("a two-view batch needs model.contrastive=true (the contrastive routing term)")
        q: dict[int, torch.Tensor] | None = {} if views == 2 else None
        ones = x.new_ones(x.shape[0])
        z: dict[int, torch.Tensor] = {}
        prob: dict[int, torch.Tensor] = {0: ones}
        kl_root, kl_nodes, kl_dec = ones * 0, ones * 0, ones * 0
        kl_per_node: dict[int, torch.Tensor] = {}
        if subtree is None:
            d = self.bottom_up(x)
            nodes = self.tree.bfs()
        else:
            path = self.tree.path(subtree)
            with torch.no_grad():
                d = self.bottom_up(x)
                for i in path:
                    self._latent(i, d, z, sample)
                    if i != subtree:
                        self._route(i, d, z, prob)
            kl = self._route(subtree, d, z, prob, q)
            if kl is not None:
                kl_dec = kl_dec + prob[subtree] * kl
            nodes = [i for i in self.tree.bfs() if i != subtree and subtree in self.tree.path(i)]

        decoded: dict[int, torch.Tensor] = {}
        rec = ones * 0
        for i in nodes:
            kl = self._latent(i, d, z, sample)
            kl_per_node[i] = kl
            if i == 0:
                kl_root = kl
            else:
                kl_nodes = kl_nodes + prob[i] * kl
            kl = self._route(i, d, z, prob, q)
            if kl is not None:
                kl_dec = kl_dec + prob[i] * kl
            if self.tree.is_leaf(i):
                decoded[i] = self.decoder[str(i)](z[i])
                rec = rec + prob[i] * reconstruction_nll(x, decoded[i], self.cfg.likelihood)
        leaves = sorted(decoded)
        contrastive = None if q is None else self._contrastive(d, q, prob, whole_tree=subtree is None)
        return TreeOutput(leaves=leaves, leaf_probs=torch.stack([prob[l] for l in leaves], 1),
                          node_probs=prob, z=z, decoded=decoded, rec=rec, kl_root=kl_root, kl_nodes=kl_nodes,
                          kl_decisions=kl_dec, kl_per_node=kl_per_node, contrastive=contrastive,
                          contrastive_weight=self.cfg.contrastive_weight if q is not None else 0.0)

    def _contrastive(self, d: list[torch.Tensor], q: dict[int, torch.Tensor], prob: dict[int, torch.Tensor],
                     whole_tree: bool) -> torch.Tensor:
        """The routing term at every router of this pass (q), plus, when the whole tree trains and
        the root routes, the instance-wise term on the projections of every bottom-up level."""
        term = d[0].new_zeros(())
        for i, q_left in q.items():
            term = term + routing_term(q_left, prob[i])
        if whole_tree and 0 in q:
            term = term + instance_term([head(level) for head, level in zip(self.projection, d)])
        return term

    @torch.no_grad()
    def leaf_probs(self, x: torch.Tensor) -> torch.Tensor:
        """P(leaf | x), (B, L) over self.tree.leaves; deterministic: posterior routers read d only."""
        self.check_input(x)
        d = self.bottom_up(x)
        prob = {0: x.new_ones(x.shape[0])}
        for i in self.tree.bfs():
            kids = self.tree.children(i)
            if len(kids) == 2:
                p_left = torch.sigmoid(self.post_router[str(i)](d[self.level(i)]))
                prob[kids[0]], prob[kids[1]] = prob[i] * p_left, prob[i] * (1 - p_left)
            elif len(kids) == 1:
                prob[kids[0]] = prob[i]
        return torch.stack([prob[l] for l in self.tree.leaves], 1)

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Reconstruction by each sample's most probable leaf (posterior means); returns (x_hat, leaf ids)."""
        out = self.forward(x, sample=False)
        idx = out.leaf_probs.argmax(1)
        imgs = torch.stack([decoder_image(out.decoded[l], self.cfg.likelihood) for l in out.leaves], 1)
        return imgs[torch.arange(len(idx)), idx], torch.tensor(out.leaves, device=x.device)[idx]

    # ------------------------------------------------------------------ generation
    @torch.no_grad()
    def generate(self, n: int, generator: torch.Generator | None = None, device: torch.device | str = "cpu"
                 ) -> Generation:
        """Sample z_0 ~ N(0, I), then z_i ~ p(z_i | z_pa) top-down; prior routers weigh the leaves."""
        c = self.cfg
        shape = (n, c.latent_channels, c.representation_dim, c.representation_dim)
        z = {0: torch.randn(shape, generator=generator, device=device)}
        prob = {0: torch.ones(n, device=device)}
        images: dict[int, torch.Tensor] = {}
        for i in self.tree.bfs():
            if i != 0:
                mu_p, var_p = self.transform[str(i)](z[parent(i)])
                z[i] = mu_p + torch.sqrt(var_p + EPS) * torch.randn(shape, generator=generator, device=device)
            kids = self.tree.children(i)
            if len(kids) == 2:
                p_left = torch.sigmoid(self.prior_router[str(i)](z[i]))
                prob[kids[0]], prob[kids[1]] = prob[i] * p_left, prob[i] * (1 - p_left)
            elif len(kids) == 1:
                prob[kids[0]] = prob[i]
            else:
                images[i] = decoder_image(self.decoder[str(i)](z[i]), c.likelihood)
        leaves = self.tree.leaves
        return Generation(leaves=leaves, leaf_probs=torch.stack([prob[l] for l in leaves], 1), images=images, z=z)
