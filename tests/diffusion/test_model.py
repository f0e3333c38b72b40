"""The tree-conditioned denoiser on a tiny frozen TreeVAE: the condition builders, the null
condition of classifier-free guidance, and guidance itself in every conditioning mode."""
import pytest
import torch

from treediff.diffusion.conditioning import NULL_ID
from treediff.diffusion.config import DiffusionConfig
from treediff.diffusion.model import Condition, TreeDenoiser, frozen, posterior_condition, prior_condition
from treediff.vae import TreeVAE, TreeVAEConfig

TINY_TREE = TreeVAEConfig(latent_channels=4, bottom_up_channels=8, max_depth=3)
MODES = [("path", False), ("recon", False), ("recon_path", False), ("none", True), ("recon", True)]


@pytest.fixture(scope="module")
def tree_model():
    torch.manual_seed(0)
    model = TreeVAE(TINY_TREE)
    model.split(2)  # leaves 1, 5, 6
    return frozen(model)


def denoiser(tree_model, conditioning: str, leaf_embedding: bool) -> TreeDenoiser:
    torch.manual_seed(1)
    cfg = DiffusionConfig(T=50, model_channels=8, channel_mult=[1, 2], num_res_blocks=1, attention_resolutions=[],
                          num_heads=2, dropout=0.0, conditioning=conditioning, leaf_embedding=leaf_embedding)
    net = TreeDenoiser.for_tree(cfg, tree_model)
    with torch.no_grad():  # the U-Net's zero-initialised output layers would hide every difference
        for p in net.parameters():
            if not p.any():
                p.copy_(torch.randn(p.shape) * 0.1)
    return net.eval()


def inputs(tree_model, n=6):
    g = torch.Generator().manual_seed(2)
    cond = prior_condition(tree_model, n, g, leaf=torch.tensor([1, 5, 6, 1, 5, 6][:n]))
    return torch.randn(n, 1, 8, 8, generator=g), torch.randint(0, 50, (n,), generator=g), cond


@pytest.mark.parametrize("mode,leaf_emb", MODES)
def test_dropping_the_condition_is_the_unconditional_branch(tree_model, mode, leaf_emb):
    net = denoiser(tree_model, mode, leaf_emb)
    x, t, cond = inputs(tree_model)
    with torch.no_grad():
        uncond = net.eps(x, t, None)
        cond_out = net.eps(x, t, cond)
        dropped = net.eps(x, t, cond, drop=torch.ones(len(x), dtype=torch.bool))
        part = torch.tensor([True, False, True, False, False, True])
        mixed = net.eps(x, t, cond, drop=part)
    torch.testing.assert_close(dropped, uncond, rtol=0, atol=1e-6)
    assert (cond_out - uncond).abs().amax() > 1e-3  # the condition is live, so the check above can fail
    torch.testing.assert_close(mixed[part], uncond[part], rtol=0, atol=1e-6)
    torch.testing.assert_close(mixed[~part], cond_out[~part], rtol=0, atol=1e-6)
    # the null condition itself: NULL leaf, empty path, zero x_hat
    null = cond.drop(torch.ones(len(x), dtype=torch.bool))
    assert (null.leaves == NULL_ID).all() and not null.mask.any() and not null.x_hat.any() and not null.z_path.any()


@pytest.mark.parametrize("mode,leaf_emb", MODES)
def test_guidance_weights_reduce_to_the_branches_and_mix_them(tree_model, mode, leaf_emb):
    net = denoiser(tree_model, mode, leaf_emb)
    x, t, cond = inputs(tree_model)
    with torch.no_grad():
        u, c = net.eps(x, t, None), net.eps(x, t, cond)
        torch.testing.assert_close(net.guided_eps(x, t, cond, 0.0), u, rtol=0, atol=1e-6)
        torch.testing.assert_close(net.guided_eps(x, t, cond, 1.0), c, rtol=0, atol=1e-6)
        for w in (2.0, 0.5, 3.5):  # one doubled batch inside guided_eps against two separate calls
            torch.testing.assert_close(net.guided_eps(x, t, cond, w), u + w * (c - u), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(net.eps_fn(cond, 2.0)(x, t), u + 2.0 * (c - u), rtol=1e-5, atol=1e-5)


def test_posterior_condition_follows_the_leaf_posterior(tree_model):
    g = torch.Generator().manual_seed(3)
    x = torch.rand(4, 1, 8, 8, generator=g) * 2 - 1
    probs = tree_model.leaf_probs(x)  # (4, 3) over leaves [1, 5, 6]
    leaves = tree_model.tree.leaves
    draws = 3000
    counts = torch.zeros(4, len(leaves))
    for _ in range(draws // 100):
        cond = posterior_condition(tree_model, x.repeat(100, 1, 1, 1), g)
        for j, leaf in enumerate(leaves):
            counts[:, j] += (cond.leaves.view(100, 4) == leaf).sum(0)
    freq = counts / draws
    # multinomial standard error <= sqrt(0.25 / 3000) ~ 0.009
    torch.testing.assert_close(freq, probs.float(), rtol=0, atol=0.04)


def test_posterior_condition_carries_the_path_latents_and_that_leafs_decoding(tree_model):
    g = torch.Generator().manual_seed(4)
    x = torch.rand(8, 1, 8, 8, generator=g) * 2 - 1
    torch.manual_seed(5)  # the posterior samples z_i use the global RNG, as TreeVAE.forward does
    cond = posterior_condition(tree_model, x, g)
    torch.manual_seed(5)
    out = tree_model(x)  # the same posterior draws, with every leaf decoded
    for b, leaf in enumerate(cond.leaves.tolist()):
        path = tree_model.tree.path(leaf)
        assert cond.node_ids[b, :len(path)].tolist() == path and cond.mask[b].sum() == len(path)
        for k, node in enumerate(path):
            torch.testing.assert_close(cond.z_path[b, k], out.z[node][b].flatten())
    assert cond.x_hat.shape == x.shape and cond.x_hat.abs().max() <= 1.0
    no_decode = posterior_condition(tree_model, x, g, decode=False)
    assert not no_decode.x_hat.any()


def test_prior_condition_fixes_or_draws_the_leaf(tree_model):
    g = torch.Generator().manual_seed(6)
    fixed = prior_condition(tree_model, 5, g, leaf=5)
    assert fixed.leaves.tolist() == [5] * 5
    assert all(fixed.node_ids[b, :3].tolist() == [0, 2, 5] for b in range(5))
    drawn = prior_condition(tree_model, 400, g)
    assert set(drawn.leaves.tolist()) <= set(tree_model.tree.leaves)
    assert len(set(drawn.leaves.tolist())) > 1
    with pytest.raises(ValueError, match="not leaves of the tree"):
        prior_condition(tree_model, 2, g, leaf=2)
    assert isinstance(Condition.cat([fixed, drawn[:3]]), Condition)
