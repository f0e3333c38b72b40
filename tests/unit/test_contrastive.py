"""The contrastive routing term (treediff/vae/contrastive.py) on tiny tensors."""
import math

import pytest
import torch

from treediff.data.augment import augment_views, contrastive_augment
from treediff.vae import TreeVAE, TreeVAEConfig
from treediff.vae.config import OptimConfig
from treediff.vae.contrastive import instance_term, nt_xent, pair_views, routing_term
from treediff.vae.trainer import train_epochs

COLOUR = dict(in_channels=3, image_size=8, representation_dim=2, latent_channels=4, bottom_up_channels=8,
              max_depth=3, contrastive=True, contrastive_weight=100.0)


def colour_model(seed=0, **kw):
    torch.manual_seed(seed)
    model = TreeVAE(TreeVAEConfig(**(COLOUR | kw)))
    model.split(1)  # leaves 2, 3, 4
    return model


def two_views(n=6, seed=1):
    """A two-view batch [x'; x''] (2n samples) of n random colour images, augmented by the cifar preset."""
    x = torch.rand(n, 3, 8, 8, generator=torch.Generator().manual_seed(seed)) * 2 - 1
    torch.manual_seed(seed)
    return pair_views(augment_views(x, contrastive_augment("cifar", 8, 3)))


def reference_nt_xent(u, tau):
    """The reference's formula, element by element: -log(exp(s_pos / tau) / sum_{j != k} exp(s_kj / tau))."""
    n = len(u)
    u = [[v / math.sqrt(sum(w * w for w in row)) for v in row] for row in u]
    sim = [[sum(a * b for a, b in zip(u[k], u[j])) / tau for j in range(n)] for k in range(n)]
    return [-math.log(math.exp(sim[k][(k + n // 2) % n]) / sum(math.exp(sim[k][j]) for j in range(n) if j != k))
            for k in range(n)]


def test_nt_xent_has_the_reference_value():
    q = [0.9, 0.2, 0.6, 0.85, 0.3, 0.5]  # q', then q'' of the same three images
    u = [[v, 1 - v] for v in q]
    got = nt_xent(torch.tensor(u, dtype=torch.float64), 1.0)
    assert got.tolist() == pytest.approx(reference_nt_xent(u, 1.0), rel=1e-12)
    emb = torch.randn(8, 10, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    assert nt_xent(emb, 0.5).tolist() == pytest.approx(reference_nt_xent(emb.tolist(), 0.5), rel=1e-12)
    # all 2B vectors equal: every similarity is 1, so each sample's loss is log(2B - 1)
    same = nt_xent(torch.ones(6, 2, dtype=torch.float64), 1.0)
    assert same.tolist() == pytest.approx([math.log(5)] * 6, rel=1e-12)


def test_routing_term_weights_samples_by_their_detached_reach():
    q = torch.tensor([0.9, 0.2, 0.6, 0.85, 0.3, 0.5], dtype=torch.float64)
    reach = torch.tensor([1.0, 0.0, 0.5, 1.0, 0.0, 0.5], dtype=torch.float64, requires_grad=True)
    per_sample = reference_nt_xent([[v, 1 - v] for v in q.tolist()], 1.0)
    want = sum(w * l for w, l in zip(reach.tolist(), per_sample)) / sum(reach.tolist())
    term = routing_term(q, reach)
    assert term.item() == pytest.approx(want, rel=1e-12)
    assert not term.requires_grad  # the reach enters detached (q here has no grad)
    pairs = [[0.3, 0.1], [0.5, 0.2]]
    assert instance_term([torch.tensor(pairs * 2, dtype=torch.float64)]).item() == pytest.approx(
        sum(reference_nt_xent(pairs * 2, 0.5)) / 4, rel=1e-12)


def test_model_term_is_finite_and_is_the_sum_of_its_parts():
    model = colour_model().train()
    x = two_views()
    torch.manual_seed(3)
    out = model(x, views=2)
    assert out.contrastive is not None and torch.isfinite(out.contrastive)
    # the parts, recomputed from the same pass's posterior routers and bottom-up levels (deterministic:
    # the routers read d only; BatchNorm in train mode uses this batch's statistics either way)
    d = model.bottom_up(x)
    q0 = torch.sigmoid(model.post_router["0"](d[model.level(0)]))
    q1 = torch.sigmoid(model.post_router["1"](d[model.level(1)]))
    want = (routing_term(q0, torch.ones(len(x))) + routing_term(q1, q0)
            + instance_term([head(level) for head, level in zip(model.projection, d)]))
    torch.testing.assert_close(out.contrastive, want)
    elbo = (out.rec + 0.3 * (out.kl_root + out.kl_nodes + out.kl_decisions)).mean()
    torch.testing.assert_close(out.loss(0.3), elbo + 100.0 * out.contrastive)


def test_gradient_reaches_the_post_routers_and_projection_heads():
    model = colour_model().train()
    model(two_views(), views=2).contrastive.backward()
    for name, modules in (("post_router", model.post_router), ("projection", model.projection)):
        for key, module in (modules.items() if hasattr(modules, "items") else enumerate(modules)):
            grads = [p.grad for p in module.parameters() if p.requires_grad]
            assert grads and all(g is not None for g in grads), f"{name}[{key}] got no gradient"
            assert sum(g.abs().sum().item() for g in grads) > 0, f"{name}[{key}]: zero gradient"
    # the term reads q(x) only: the prior routers and the decoders get none of it
    assert all(p.grad is None for p in model.prior_router.parameters())
    assert all(p.grad is None for p in model.decoder.parameters())


def test_subtree_phase_changes_only_the_subtree():
    model = colour_model()
    model.split(4)  # the phase's leaf 4 is split into 9, 10
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.rand(24, 3, 8, 8, generator=torch.Generator().manual_seed(2)) * 2 - 1
    history = train_epochs(model, x, subtree=4, epochs=2, optim=OptimConfig(batch_size=16, lr=1e-2),
                           generator=torch.Generator().manual_seed(0), desc="subtree@4", log=lambda *a: None)
    assert history and all(math.isfinite(h["contrastive"]) and h["contrastive"] > 0 for h in history)
    after = model.state_dict()
    trained = {id(p) for m in model.subtree_modules(4) for p in m.parameters()}
    trained |= {id(b) for m in model.subtree_modules(4) for b in m.buffers()}
    named = dict(model.named_parameters()) | dict(model.named_buffers())
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    frozen_changed = [k for k in changed if id(named[k]) not in trained]
    assert frozen_changed == []  # every frozen weight and BatchNorm statistic is bit-identical
    assert any(k.startswith("post_router.4.") for k in changed)  # the subtree's router trained
    assert not any(k.startswith("projection.") for k in changed)


def test_without_the_term_the_loss_is_exactly_the_elbo():
    torch.manual_seed(0)
    plain = TreeVAE(TreeVAEConfig(**(COLOUR | dict(contrastive=False))))
    plain.split(1)
    x = torch.rand(6, 3, 8, 8, generator=torch.Generator().manual_seed(1)) * 2 - 1
    out = plain.train()(x)
    assert out.contrastive is None and "contrastive" not in out.terms()
    assert torch.equal(out.loss(0.7), (out.rec + 0.7 * (out.kl_root + out.kl_nodes + out.kl_decisions)).mean())
    assert not hasattr(plain, "projection")
    with pytest.raises(ValueError, match="model.contrastive=true"):
        plain(two_views(), views=2)


def test_two_view_batches_are_checked():
    with pytest.raises(ValueError, match="two views per image"):
        pair_views(torch.zeros(4, 3, 8, 8))
    with pytest.raises(ValueError, match="at least 2 image pairs"):
        nt_xent(torch.ones(2, 2), 1.0)


@pytest.mark.parametrize("preset, channels", [("crop", 3), ("crop", 1), ("affine", 1), ("flip", 1)])
def test_the_colour_free_presets_keep_shape_and_dtype_and_move_pixels(preset, channels):
    torch.manual_seed(0)
    x = torch.rand(8, channels, 8, 8) * 2 - 1
    views = augment_views(x, contrastive_augment(preset, 8, channels))  # (B, 2, C, H, W)
    assert views.shape == (8, 2, channels, 8, 8) and views.dtype == x.dtype
    assert views.min() >= -1 and views.max() <= 1
    assert not torch.equal(views[:, 0], views[:, 1])  # the two views of an image differ


def test_a_colour_preset_on_grey_images_is_refused():
    with pytest.raises(ValueError, match="needs colour images"):
        contrastive_augment("cifar", 8, 1)
