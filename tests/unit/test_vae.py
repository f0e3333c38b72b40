"""CNN-TreeVAE math on tiny tensors: probabilities, posterior merge, KL terms, freezing."""
import numpy as np
import pytest
import torch
from torch.distributions import Bernoulli, Normal, kl_divergence

from treediff.vae import TreeVAE, TreeVAEConfig
from treediff.vae.losses import kl_bernoulli, kl_normal, kl_weight, precision_merge, reconstruction_nll

TINY = dict(in_channels=1, image_size=8, representation_dim=2, latent_channels=4, bottom_up_channels=8, max_depth=4)


def tiny_model(seed=0, **kw):
    torch.manual_seed(seed)
    return TreeVAE(TreeVAEConfig(**(TINY | kw)))


def batch(n=6, seed=1, c=1, s=8):
    return torch.rand(n, c, s, s, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def grown(model):
    model.split(1)
    model.split(4)  # leaves 2, 3, 9, 10
    return model


@pytest.mark.parametrize("prune", [False, True])
def test_leaf_probabilities_sum_to_one(prune):
    m = grown(tiny_model())
    if prune:
        m.prune(9)  # node 4 becomes a pass-through with only child 10
        assert not m.tree.is_router(4) and str(4) not in m.post_router
    x = batch()
    out = m(x)
    assert out.leaves == m.tree.leaves
    torch.testing.assert_close(out.leaf_probs.sum(1), torch.ones(len(x)))
    m.eval()
    torch.testing.assert_close(m.leaf_probs(x).sum(1), torch.ones(len(x)))
    torch.testing.assert_close(m.generate(5).leaf_probs.sum(1), torch.ones(5))


def test_posterior_merge_matches_closed_form():
    g = torch.Generator().manual_seed(0)
    mu1, mu2 = torch.randn(5, generator=g), torch.randn(5, generator=g)
    v1, v2 = torch.rand(5, generator=g) + 0.1, torch.rand(5, generator=g) + 0.1
    mu, var = precision_merge(mu1, v1, mu2, v2)
    torch.testing.assert_close(var, v1 * v2 / (v1 + v2), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(mu, (mu1 * v2 + mu2 * v1) / (v1 + v2), rtol=1e-5, atol=1e-6)
    # the product of the two densities is proportional to N(mu, var): log-ratio constant in t
    t = torch.linspace(-3, 3, 7).unsqueeze(1)
    lhs = Normal(mu1, v1.sqrt()).log_prob(t) + Normal(mu2, v2.sqrt()).log_prob(t)
    ratio = lhs - Normal(mu, var.sqrt()).log_prob(t)
    torch.testing.assert_close(ratio, ratio[:1].expand_as(ratio), rtol=1e-4, atol=1e-4)


def test_kl_terms_match_torch_and_vanish_when_equal():
    g = torch.Generator().manual_seed(0)
    mq, mp = torch.randn(3, 2, 2, 2, generator=g), torch.randn(3, 2, 2, 2, generator=g)
    vq, vp = torch.rand(3, 2, 2, 2, generator=g) + 0.2, torch.rand(3, 2, 2, 2, generator=g) + 0.2
    ref = kl_divergence(Normal(mq, vq.sqrt()), Normal(mp, vp.sqrt())).flatten(1).sum(1)
    torch.testing.assert_close(kl_normal(mq, vq, mp, vp), ref, rtol=1e-4, atol=1e-5)
    assert (kl_normal(mq, vq, mp, vp) >= 0).all()
    torch.testing.assert_close(kl_normal(mq, vq, mq, vq), torch.zeros(3), atol=1e-6, rtol=0)

    lq, lp = torch.randn(50, generator=g) * 3, torch.randn(50, generator=g) * 3
    ref = kl_divergence(Bernoulli(logits=lq), Bernoulli(logits=lp))
    torch.testing.assert_close(kl_bernoulli(lq, lp), ref, rtol=1e-4, atol=1e-5)
    assert (kl_bernoulli(lq, lp) >= -1e-7).all()
    torch.testing.assert_close(kl_bernoulli(lq, lq), torch.zeros(50), atol=1e-6, rtol=0)


def test_model_kl_terms_are_non_negative():
    out = grown(tiny_model())(batch())
    for term in (out.kl_root, out.kl_nodes, out.kl_decisions):
        assert (term >= -1e-5).all()


def test_kl_annealing_schedule():
    assert [kl_weight(e, 0.0, 0.25) for e in range(6)] == [0.0, 0.25, 0.5, 0.75, 1.0, 1.0]
    assert kl_weight(0, 0.5, 0.1) == 0.5


def snapshot(module):
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def test_growth_phase_freezes_everything_outside_the_new_subtree():
    m = grown(tiny_model())
    params = m.set_trainable(4)
    m.train()
    sub = {id(p) for mod in m.subtree_modules(4) for p in mod.parameters()}
    assert {id(p) for p in params} == sub
    names_sub = {n for n, p in m.named_parameters() if id(p) in sub}
    assert names_sub and all(any(n.startswith(f"{d}.{i}.") for d in ("prior_router", "post_router", "dense",
                                                                       "transform", "decoder") for i in (4, 9, 10))
                             for n in names_sub)
    before = snapshot(m)
    opt = torch.optim.Adam(params, lr=1e-2, weight_decay=1e-5)
    loss = m(batch(8), subtree=4).loss(1.0)
    loss.backward()
    opt.step()
    after = snapshot(m)
    sub_keys = {k for k in before if any(k.startswith(f"{d}.{i}.") for d in ("prior_router", "post_router", "dense",
                                                                               "transform", "decoder")
                                         for i in (4, 9, 10)) and not (k.startswith("dense.4.") or
                                                                       k.startswith("transform.4."))}
    frozen = set(before) - sub_keys
    assert frozen and all(torch.equal(before[k], after[k]) for k in frozen), \
        [k for k in frozen if not torch.equal(before[k], after[k])]  # weights and BN statistics
    moved = [k for k in sub_keys if k.endswith("weight") and not torch.equal(before[k], after[k])]
    assert len(moved) > 10
    assert not m.encoder.training and m.decoder["9"].training  # frozen parts stay in eval mode


def test_subtree_loss_has_the_full_elbo_gradient():
    """The phase loss is the part of the full ELBO that depends on the new subtree's weights."""
    m = grown(tiny_model())
    params = m.set_trainable(4)
    m.train()
    x = batch(8)
    g_sub = torch.autograd.grad(m(x, subtree=4, sample=False).loss(0.7), params)
    g_full = torch.autograd.grad(m(x, sample=False).loss(0.7), params)
    for a, b in zip(g_sub, g_full):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_wrong_input_shape_names_the_fields():
    with pytest.raises(ValueError, match="model.image_size"):
        tiny_model()(batch(s=28))


def test_generation_and_reconstruction_shapes():
    m = grown(tiny_model()).eval()
    g = m.generate(4, generator=torch.Generator().manual_seed(0))
    imgs, leaves = g.most_probable()
    assert imgs.shape == (4, 1, 8, 8) and set(leaves.tolist()) <= set(m.tree.leaves)
    assert imgs.min() >= -1 and imgs.max() <= 1
    xh, leaves = m.reconstruct(batch(5))
    assert xh.shape == (5, 1, 8, 8) and set(leaves.tolist()) <= set(m.tree.leaves)


def test_unit_encoder_input_reads_the_images_in_zero_one():
    """encoder_input=unit: the encoder sees (x + 1) / 2, so a black image ([-1] everywhere) reads as
    zeros, the value of the convs' padding; the reconstruction targets do not change."""
    signed, unit = tiny_model(), tiny_model(encoder_input="unit")
    unit.load_state_dict(signed.state_dict())
    x = batch(4)
    for m in (signed, unit):
        m.eval()
    d_signed, d_unit = signed.bottom_up((x + 1) / 2), unit.bottom_up(x)
    for a, b in zip(d_signed, d_unit):
        torch.testing.assert_close(a, b)
    assert not torch.allclose(signed.bottom_up(x)[0], d_unit[0])
    torch.testing.assert_close(unit.encoder(torch.zeros(1, 1, 8, 8)), unit.bottom_up(-torch.ones(1, 1, 8, 8))[0])
    out = unit(x, sample=False)  # the targets stay x in [-1, 1] mapped to [0, 1] by the likelihood
    want = sum(out.node_probs[l] * reconstruction_nll(x, out.decoded[l], "bernoulli") for l in out.leaves)
    torch.testing.assert_close(out.rec, want)


def test_colour_encoder_shapes():
    m = tiny_model(in_channels=3, image_size=16, encoder="cnn2", likelihood="gaussian")
    out = m(batch(4, c=3, s=16))
    assert out.decoded[1].shape == (4, 3, 16, 16)
    assert np.isfinite(out.loss(1.0).item())


def flat_model(encoder="flat", size=28, seed=0):
    torch.manual_seed(seed)
    return TreeVAE(TreeVAEConfig(in_channels=1, image_size=size, encoder=encoder, representation_dim=1, latent_channels=4,
                                 bottom_up_channels=32, max_depth=3, activation="leaky_relu", encoder_input="unit"))


@pytest.mark.parametrize("encoder,size", [("flat", 28), ("mlp", 8)])
def test_flat_latents_are_vectors_read_by_linear_layers(encoder, size):
    """encoder=flat or mlp (the original TreeVAE's): d and z are B x C x 1 x 1, the latent-side blocks are
    linear layers (a 3x3 conv there would read only its centre tap), the routers read every feature."""
    m = grown(flat_model(encoder, size))
    x = batch(5, s=size)
    d = m.bottom_up(x)
    assert [tuple(level.shape) for level in d] == [(5, 32, 1, 1)] * 4
    assert not any(isinstance(mod, torch.nn.Conv2d) for name, mod in m.named_modules()
                   if name.split(".")[0] in ("ladder", "dense", "transform", "prior_router", "post_router"))
    out = m(x)
    assert all(z.shape == (5, 4, 1, 1) for z in out.z.values())
    assert all(out.decoded[l].shape == (5, 1, size, size) for l in out.leaves)
    torch.testing.assert_close(out.leaf_probs.sum(1), torch.ones(5))
    assert np.isfinite(out.loss(1.0).item())
    # a router's decision moves with every feature of d, not with one squeezed channel
    router = m.post_router["0"].eval()
    base = router(d[-1])
    for c in (0, 17, 31):
        bumped = d[-1].clone()
        bumped[:, c] += 1.0
        assert not torch.allclose(router(bumped), base)
    # the linear layer computes what a 3x3 conv with zero padding computes on a 1 x 1 map
    lin = m.ladder[0].net[0]
    conv = torch.nn.Conv2d(32, 32, 3, padding=1, bias=False)
    with torch.no_grad():
        conv.weight.zero_()
        conv.weight[:, :, 1, 1] = lin.weight
    torch.testing.assert_close(lin(d[0]), conv(d[0]))
    g = m.eval().generate(3, generator=torch.Generator().manual_seed(0))
    assert g.most_probable()[0].shape == (3, 1, size, size)


def test_config_errors_name_the_field():
    with pytest.raises(ValueError, match="model.encoder"):
        TreeVAEConfig(encoder="vgg")
    with pytest.raises(ValueError, match="model.representation_dim"):
        TreeVAEConfig(encoder="cnn2", image_size=24, representation_dim=5)
    with pytest.raises(ValueError, match="model.contrastive_augment"):
        TreeVAEConfig(contrastive=True)  # grey images: the colour-jitter preset cannot apply
    with pytest.raises(ValueError, match="model.contrastive_weight"):
        TreeVAEConfig(contrastive_weight=-1.0)
    with pytest.raises(ValueError, match="model.encoder_input"):
        TreeVAEConfig(encoder_input="centered")
    with pytest.raises(ValueError, match="model.representation_dim"):
        TreeVAEConfig(encoder="flat", image_size=28, representation_dim=2, bottom_up_channels=32)
    with pytest.raises(ValueError, match="model.image_size"):
        TreeVAEConfig(encoder="flat", image_size=32, representation_dim=1, bottom_up_channels=32)
    with pytest.raises(ValueError, match="model.bottom_up_channels"):
        TreeVAEConfig(encoder="flat", image_size=28, representation_dim=1, bottom_up_channels=40)
    with pytest.raises(ValueError, match="model.representation_dim"):
        TreeVAEConfig(encoder="mlp", image_size=8, representation_dim=2)
