"""Denoising U-Net and conditioning modules (tiny configs: CPU, 2 cores)."""
import pytest
import torch
from torch import nn

from treediff.diffusion.conditioning import (NULL_ID, LeafEmbedding, PathEncoder, argmax_leaves,
                                             drop_mask, gather_paths, sample_leaves)
from treediff.diffusion.unet import AttentionBlock, UNet, UNetConfig
from treediff.tree import Tree


def tiny(**kw) -> UNetConfig:
    base = dict(image_size=8, in_channels=1, out_channels=1, model_channels=8, channel_mult=(1, 2),
                num_res_blocks=1, attention_resolutions=(), num_heads=2, dropout=0.0)
    base.update(kw)
    return UNetConfig(**base)


def reinit_zero_params(net: nn.Module) -> None:
    """Give every zero-initialised weight random values, so all paths through the net are live."""
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in net.parameters():
            if p.dim() > 1 and not p.any():
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)


# ---------------------------------------------------------------------------- U-Net
@pytest.mark.parametrize("shape,kw", [
    ((1, 8, 8), {}),
    ((1, 28, 28), dict(pad_to=32, channel_mult=(1, 2, 2))),
    ((3, 16, 16), dict(channel_mult=(1, 2, 2), attention_resolutions=(8,))),
])
def test_unet_output_shape_matches_input(shape, kw):
    c, h, _ = shape
    net = UNet(tiny(image_size=h, in_channels=c, out_channels=c, **kw))
    reinit_zero_params(net)
    x = torch.randn(2, *shape)
    out = net(x, torch.tensor([0, 999]))
    assert out.shape == x.shape
    assert torch.isfinite(out).all() and out.abs().sum() > 0


def test_attention_placement_by_pixel_size():
    count = lambda cfg: sum(isinstance(m, AttentionBlock) for m in UNet(cfg).modules())  # noqa: E731
    # 32x32 padded input, levels at 32, 16, 8, 4 pixels; 2 res blocks down, 3 up per level.
    cfg = dict(image_size=28, pad_to=32, channel_mult=(1, 1, 1, 1), num_res_blocks=2)
    assert count(tiny(**cfg, attention_resolutions=())) == 1  # middle block only
    assert count(tiny(**cfg, attention_resolutions=(16,))) == 1 + 2 + 3
    assert count(tiny(**cfg, attention_resolutions=(16, 4))) == 1 + 2 * (2 + 3)
    assert UNetConfig(image_size=32, in_channels=3, out_channels=3).resolutions == (32, 16, 8, 4)


@pytest.mark.parametrize("kw,field", [
    (dict(attention_resolutions=(2,)), "unet.attention_resolutions"),
    (dict(image_size=28, channel_mult=(1, 1, 1, 1)), "unet.image_size"),
    (dict(image_size=28, pad_to=30, channel_mult=(1, 1, 1, 1)), "unet.pad_to"),
    (dict(num_heads=3), "unet.num_heads"),
    (dict(dropout=1.0), "unet.dropout"),
])
def test_config_errors_name_the_field(kw, field):
    with pytest.raises(ValueError, match=field):
        tiny(**kw)


def test_unknown_attention_resolution_lists_available():
    with pytest.raises(ValueError, match=r"\[8, 4\]"):
        tiny(attention_resolutions=(16,))


def test_fresh_unet_outputs_zeros():
    net = UNet(tiny(cond_dim=32, extra_in_channels=1))
    out = net(torch.randn(3, 1, 8, 8), torch.tensor([1, 2, 3]), cond=torch.randn(3, 32),
              extra=torch.randn(3, 1, 8, 8))
    assert torch.equal(out, torch.zeros_like(out))


def test_cond_vector_changes_output_after_training_steps():
    torch.manual_seed(0)
    net = UNet(tiny(cond_dim=32))
    assert net.emb_dim == 32 and net.cond_proj is None
    x, t = torch.randn(4, 1, 8, 8), torch.tensor([5, 50, 500, 900])
    for _ in range(3):  # plain SGD: step 1 wakes the output conv, step 2 the ResBlocks' zero convs
        net.zero_grad()
        (net(x, t, cond=torch.randn(4, 32)) - x).pow(2).mean().backward()
        with torch.no_grad():
            for p in net.parameters():
                p -= 0.1 * p.grad
    net.eval()
    a, b = net(x, t, cond=torch.zeros(4, 32)), net(x, t, cond=torch.ones(4, 32))
    assert not torch.allclose(a, b)


def test_cond_and_extra_are_used_and_none_is_null():
    net = UNet(tiny(cond_dim=5, extra_in_channels=2)).eval()  # cond_dim != emb_dim: bias-free projection
    reinit_zero_params(net)
    x, t = torch.randn(2, 1, 8, 8), torch.tensor([3, 7])
    cond, extra = torch.randn(2, 5), torch.randn(2, 2, 8, 8)
    base = net(x, t, cond, extra)
    assert not torch.allclose(base, net(x, t, cond + 1, extra))
    assert not torch.allclose(base, net(x, t, cond, extra + 1))
    assert torch.equal(net(x, t), net(x, t, torch.zeros(2, 5), torch.zeros(2, 2, 8, 8)))
    with pytest.raises(ValueError, match="unet.extra_in_channels"):
        net(x, t, cond, torch.randn(2, 1, 8, 8))
    with pytest.raises(ValueError, match="cond_dim=0"):
        UNet(tiny())(x, t, cond=torch.randn(2, 32))


# ---------------------------------------------------------------------------- path conditioning
def grown_tree() -> Tree:
    tree = Tree.initial(1)  # 0 -> 1, 2
    tree.split(1)  # 3, 4
    tree.split(4)  # 9, 10
    return tree  # leaves 2, 3, 9, 10


def test_path_encoder_sums_masked_parts_and_ignores_padding_and_order():
    torch.manual_seed(0)
    enc = PathEncoder(z_dim=6, emb_dim=16, max_nodes=32)
    ids = torch.tensor([[0, 1, 4, 10], [0, 2, 0, 0]])
    mask = torch.tensor([[True, True, True, True], [True, True, False, False]])
    z = torch.randn(2, 4, 6)
    y = enc(ids, z, mask)
    parts = enc.encode_parts(ids, z, mask)
    assert y.shape == (2, 16)
    # y_l = sum over the path's nodes of f_embed(z_i) + f_node(i), each part computed on its own
    by_hand = torch.stack([sum(enc.f_embed(z[b, k]) + enc.f_node.mlp(enc.f_node.table(ids[b, k]))
                               for k in range(4) if mask[b, k]) for b in range(2)])
    torch.testing.assert_close(y, by_hand)
    assert torch.equal(parts[1, 2:], torch.zeros(2, 16))
    # padding contents are irrelevant
    z2, ids2 = z.clone(), ids.clone()
    z2[1, 2:] = 123.0
    ids2[1, 2:] = 31
    torch.testing.assert_close(enc(ids2, z2, mask), y)
    # the path order is irrelevant
    perm = torch.tensor([3, 1, 0, 2])
    torch.testing.assert_close(enc(ids[:1, perm], z[:1, perm], mask[:1, perm]), y[:1])
    # single-node paths are f_embed(z) + f_node(id)
    single = enc(ids[:, :1], z[:, :1], mask[:, :1])
    torch.testing.assert_close(single, enc.f_embed(z[:, 0]) + enc.f_node(ids[:, 0]))
    with pytest.raises(ValueError, match="max_nodes"):
        enc(torch.tensor([[0, 40]]), torch.randn(1, 2, 6))


def test_gather_paths_on_grown_tree():
    tree = grown_tree()
    b, c, r = 6, 2, 2
    z = {i: torch.randn(b, c, r, r) for i in tree.bfs()}
    leaves = torch.tensor([9, 2, 3, 10, 9, NULL_ID])
    ids, z_path, mask = gather_paths(tree, leaves, z)
    assert ids.shape == mask.shape == (b, 4) and z_path.shape == (b, 4, c * r * r)
    for s, leaf in enumerate(leaves.tolist()):
        path = tree.path(leaf) if leaf != NULL_ID else []
        assert ids[s, :len(path)].tolist() == path and path[:1] in ([], [0])
        assert mask[s].tolist() == [k < len(path) for k in range(4)]
        assert (ids[s, len(path):] == NULL_ID).all()
        for k, node in enumerate(path):
            assert torch.equal(z_path[s, k], z[node][s].flatten())
        assert not z_path[s, len(path):].any()
    enc = PathEncoder(z_dim=c * r * r, emb_dim=8, max_nodes=32)
    y = enc(ids, z_path, mask)
    assert torch.equal(y[5], torch.zeros(8))  # NULL_ID leaf: null conditioning
    with pytest.raises(ValueError, match="not in the tree"):
        gather_paths(tree, torch.tensor([5]), z)


def test_leaf_embedding_null_is_zero():
    emb = LeafEmbedding(max_nodes=16, emb_dim=8)
    out = emb(torch.tensor([3, NULL_ID, 10]))
    assert out.shape == (3, 8) and torch.equal(out[1], torch.zeros(8)) and out[0].abs().sum() > 0


# ---------------------------------------------------------------------------- guidance / leaf choice
def test_drop_mask_rate_and_bounds():
    g = torch.Generator().manual_seed(0)
    assert not drop_mask(100, 0.0, g).any() and drop_mask(100, 1.0, g).all()
    frac = drop_mask(4000, 0.2, g).float().mean().item()
    assert 0.17 < frac < 0.23
    with pytest.raises(ValueError):
        drop_mask(4, 1.5)


def test_sample_leaves_respects_one_hot_probs():
    leaves = [2, 3, 9, 10]
    probs = torch.eye(4)[[2, 0, 3, 1, 2]]
    g = torch.Generator().manual_seed(0)
    for _ in range(3):
        assert sample_leaves(probs, leaves, g).tolist() == [9, 2, 10, 3, 9]
    assert argmax_leaves(torch.tensor([[0.1, 0.2, 0.6, 0.1]]), leaves).tolist() == [9]
    with pytest.raises(ValueError, match="L=4"):
        sample_leaves(torch.ones(2, 3), leaves)
