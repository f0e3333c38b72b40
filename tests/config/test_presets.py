"""Every experiment preset composes, matches the reference setup of its data set, and builds models
that run one forward pass at batch 2 with the expected parameter counts and shapes (full-size
presets included, without training and without data)."""
import pytest

from jobs.check import inspect
from jobs.cli import compose
from treediff.vae.blocks import ResBlock

FULL = ["digits", "mnist", "fashion_mnist", "cifar10", "celeba", "cubicc"]
PRESETS = FULL + [f"{name}_quick" for name in FULL]

# The reference values (shared/notes/reference-models.md, TD configs), typed from the notes, not
# from the YAML: (data, encoder, input C x H, C_lat, R, C_bu, residual bottom-up, likelihood,
# tree batch, epochs initial/subtree/intermediate/finetune, full retraining every k splits,
# U-Net channels, channel_mult, attention (pixels), diffusion batch, diffusion steps).
REFERENCE = {
    "mnist": ("mnist", "cnn1", (1, 28), 16, 2, 32, False, "bernoulli", 256, (150, 150, 80, 200), 3,
              64, [1, 2, 2, 2], [16], 256, 1000 * (60000 // 256)),
    "fashion_mnist": ("fashion_mnist", "cnn1", (1, 28), 16, 2, 32, False, "bernoulli", 256, (150, 150, 80, 200), 3,
                      64, [1, 2, 2, 2], [16], 256, 1000 * (60000 // 256)),
    "cifar10": ("cifar10", "cnn2", (3, 32), 64, 4, 128, True, "gaussian", 256, (150, 150, 0, 0), 0,
                128, [1, 2, 2, 2], [16, 8], 64, 1000 * (50000 // 64)),
    "celeba": ("celeba", "cnn2", (3, 64), 64, 4, 128, False, "gaussian", 128, (35, 35, 0, 0), 0,
               128, [1, 2, 2, 2, 4], [16, 8], 32, 200 * (162770 // 32)),
    # CUBICC: 150 epochs per phase instead of the reference's debug leftover of 1
    "cubicc": ("cubicc", "cnn2", (3, 64), 64, 4, 128, True, "gaussian", 256, (150, 150, 0, 0), 0,
               128, [1, 2, 2, 2, 4], [16, 8], 32, None),
}
KL = {"mnist": (0.0, 0.001), "fashion_mnist": (0.5, 0.001), "cifar10": (0.01, 0.01), "celeba": (0.01, 0.01),
      "cubicc": (0.01, 0.01)}


def objects(name, *extra):
    return compose([f"experiment={name}", *extra])[0]


@pytest.mark.parametrize("name", sorted(REFERENCE))
def test_full_preset_reproduces_the_reference(name):
    (data, encoder, (c, size), c_lat, r, c_bu, res, likelihood, batch, epochs, every,
     channels, mult, attention, d_batch, d_steps) = REFERENCE[name]
    cfg = objects(name)
    m, o, d, s = cfg.model, cfg.optim, cfg.diffusion, cfg.sampler
    assert cfg.data.name == data and cfg.run_dir == f"runs/{name}"
    assert (m.encoder, m.in_channels, m.image_size, m.latent_channels, m.representation_dim, m.bottom_up_channels,
            m.res_connections, m.likelihood, m.activation, m.max_depth) == (
        encoder, c, size, c_lat, r, c_bu, res, likelihood, "silu", 6)
    assert (o.batch_size, o.lr, o.weight_decay, o.lr_step_epochs, o.seed) == (batch, 1e-3, 1e-5, 100, 42)
    assert (o.epochs_initial, o.epochs_subtree, o.epochs_intermediate, o.epochs_finetune) == epochs
    assert (o.kl_start, o.kl_decay) == KL[name]
    assert o.kl_finetune == "reach_one" and (o.min_steps_subtree, o.min_steps_finetune) == (0, 0)  # the reference's
    g = cfg.growth
    assert (g.initial_depth, g.num_clusters_tree, g.max_depth, g.prune, g.intermediate_fulltrain_every) == (
        1, 10, 6, True, every)
    assert (d.T, d.schedule, d.beta_1, d.beta_T) == (1000, "linear", 1e-4, 0.02)
    assert (d.model_channels, d.channel_mult, d.attention_resolutions, d.num_res_blocks, d.num_heads, d.dropout) == (
        channels, mult, attention, 2, 8, 0.1)
    assert (d.lr, d.warmup_steps, d.grad_clip, d.ema_decay, d.cond_drop_prob, d.batch_size) == (
        2e-4, 5000, 1.0, 0.9999, 0.0, d_batch)
    assert d_steps is None or d.steps == d_steps
    assert d.pad_to == (32 if size == 28 else 0)  # 28x28 is padded to 32x32 inside the U-Net, as the reference
    assert (s.method, s.steps, s.spacing, s.eta, s.w) == ("ddim", 100, "quad", 0.0, 1.0)
    assert (cfg.eval.num_samples, cfg.eval.extractor) == (10000, "inception")
    assert cfg.pipeline.modes == ["path", "recon"]  # TreeDiffusion and Diffuse-TreeVAE (Table 1's rows)


@pytest.mark.parametrize("name", FULL)
def test_quick_preset_keeps_the_choices_of_its_full_preset(name):
    full, quick = objects(name), objects(f"{name}_quick")
    assert quick.data.name == full.data.name and quick.run_dir == f"runs/{name}_quick"
    for key in ("encoder", "in_channels", "image_size", "representation_dim", "likelihood", "res_connections"):
        assert getattr(quick.model, key) == getattr(full.model, key), key
    assert quick.diffusion.T == full.diffusion.T and quick.diffusion.pad_to == full.diffusion.pad_to
    assert quick.pipeline.modes == full.pipeline.modes and quick.eval.extractor == "pixels"
    assert quick.optim.epochs_initial < full.optim.epochs_initial and quick.diffusion.steps <= 100
    assert quick.growth.num_clusters_tree < full.growth.num_clusters_tree


def path_encoder_params(z_dim, emb, max_nodes):
    """f_embed: Linear(z_dim, emb) + Linear(emb, emb); f_node: Embedding(max_nodes, emb) + Linear(emb, emb)."""
    return (z_dim * emb + emb + emb * emb + emb) + (max_nodes * emb + emb * emb + emb)


def unet_params(c_in, mc, mult, n_res, attn_res, size, scale_shift=True, extra=0):
    """The denoiser's parameter count in closed form, counted from the architecture (DDPM's U-Net:
    time MLP, input conv, per level n_res ResBlocks (+ attention at the listed pixel sizes) and a
    strided-conv downsample, middle ResBlock-attention-ResBlock, the mirrored up path over the
    concatenated skips with n_res + 1 ResBlocks and a nearest+conv upsample, GroupNorm-SiLU-conv out).
    scale_shift: the ResBlock's time projection gives scale and shift (2 x out) instead of a bias."""
    emb = 4 * mc
    conv = lambda a, b, k: a * b * k * k + b  # noqa: E731
    lin = lambda a, b: a * b + b  # noqa: E731
    gn = lambda c: 2 * c  # noqa: E731
    res = lambda a, b: (gn(a) + conv(a, b, 3) + lin(emb, (2 if scale_shift else 1) * b) + gn(b)  # noqa: E731
                        + conv(b, b, 3) + (0 if a == b else conv(a, b, 1)))
    attn = lambda c: gn(c) + lin(c, 3 * c) + lin(c, c)  # noqa: E731  (qkv and the output projection)
    sizes = [size >> level for level in range(len(mult))]
    total = lin(mc, emb) + lin(emb, emb) + conv(c_in + extra, mc * mult[0], 3)
    ch = mc * mult[0]
    skips = [ch]
    for level, m in enumerate(mult):
        for _ in range(n_res):
            total += res(ch, mc * m) + (attn(mc * m) if sizes[level] in attn_res else 0)
            ch = mc * m
            skips.append(ch)
        if level < len(mult) - 1:
            total += conv(ch, ch, 3)
            skips.append(ch)
    total += 2 * res(ch, ch) + attn(ch)
    for level in reversed(range(len(mult))):
        for i in range(n_res + 1):
            total += res(ch + skips.pop(), mc * mult[level]) + (attn(mc * mult[level]) if sizes[level] in attn_res else 0)
            ch = mc * mult[level]
            if level and i == n_res:
                total += conv(ch, ch, 3)
    return total + gn(ch) + conv(ch, c_in, 3)


def test_the_closed_form_gives_ddpms_published_cifar10_size():
    # Ho et al. 2020: 35.7M parameters (128 channels, mult 1-2-2-2, 2 ResBlocks, attention at 16x16,
    # a plain time-embedding bias); the exact figure of the released model is 35,746,307
    assert unet_params(3, 128, [1, 2, 2, 2], 2, [16], 32, scale_shift=False) == 35_746_307


# Parameter counts of the full-size models (planned trees of 10 leaves): a change here is a change
# of the architecture. The U-Nets' sizes sit where DDPM's are (35.7M on CIFAR-10 at 128 channels,
# attention at 16x16 only); ours add 8x8 attention and scale-shift norm.
PARAMS = {  # preset: (tree, path U-Net, recon U-Net)
    "digits": (401_834, 755_009, 755_297),
    "mnist": (963_680, 9_591_233, 9_591_809),
    "fashion_mnist": (963_680, 9_591_233, 9_591_809),
    "cifar10": (13_340_486, 39_625_603, 39_629_059),
    "celeba": (14_267_252, 84_156_035, 84_159_491),
    "cubicc": (14_267_252, 84_156_035, 84_159_491),
}


@pytest.mark.parametrize("name", PRESETS)
def test_preset_builds_and_runs_a_batch_of_two(name):
    cfg = objects(name)
    found = inspect(cfg, batch=2)
    m, d = cfg.model, cfg.diffusion
    image = (2, m.in_channels, m.image_size, m.image_size)
    leaves = len(found.tree.leaves)
    assert leaves == cfg.growth.num_clusters_tree and found.phases[-1].leaves == leaves
    sh = found.shapes
    assert sh["x"] == image and sh["tree.decoded"] == image and sh["cond.x_hat"] == image
    assert sh["tree.d0"] == (2, m.bottom_up_channels, m.representation_dim, m.representation_dim)
    assert sh["tree.z"] == (2, m.latent_channels, m.representation_dim, m.representation_dim)
    assert sh["tree.leaf_probs"] == (2, leaves) and sh["tree.loss"] == ()
    z_dim = m.latent_channels * m.representation_dim ** 2
    if name in REFERENCE:  # notes 3.3: z_dim 64 (grey) or 1024 (colour), the path signal 4c = 256 or 512 wide
        assert (z_dim, 4 * d.model_channels) == ((64, 256) if m.in_channels == 1 else (1024, 512))
    assert sh["cond.z_path"][0] == 2 and sh["cond.z_path"][2] == z_dim
    emb = 4 * d.model_channels
    for mode in cfg.pipeline.modes:
        assert sh[f"{mode}.eps"] == image
    assert sh["path.cond"] == (2, emb)
    max_nodes = 2 ** (m.max_depth + 1) - 1
    parts = {p.name: p.params for p in found.denoisers["path"]}
    assert parts["path encoder"] == path_encoder_params(z_dim, emb, max_nodes)
    assert "path encoder" not in {p.name for p in found.denoisers["recon"]}
    names = [p.name for p in found.tree_parts]
    assert names == (["bottom-up"] + [f"depth {k}" for k in range(found.tree.depth + 1)]
                     + (["projections"] if m.contrastive else []))
    assert (sh.get("tree.contrastive") == ()) == m.contrastive  # the colour presets train with the term
    assert m.contrastive == (m.in_channels == 3)
    size = d.pad_to or m.image_size
    unet = dict(c_in=m.in_channels, mc=d.model_channels, mult=list(d.channel_mult), n_res=d.num_res_blocks,
                attn_res=list(d.attention_resolutions), size=size)
    assert parts["U-Net"] == unet_params(**unet)  # the path signal enters the time embedding: no extra weights
    assert found.denoisers["recon"][0].params == unet_params(**unet, extra=m.in_channels)  # x_hat concatenated
    # the contrastive heads, one per bottom-up level: conv3x3 C_bu -> 1, Linear(R^2 -> 128, no bias), BN, Linear(128 -> 10)
    heads = {p.name: p.params for p in found.tree_parts}.get("projections", 0)
    assert heads == (m.max_depth + 1) * (9 * m.bottom_up_channels + 128 * m.representation_dim ** 2 + 256 + 1290
                                         if m.contrastive else 0)
    if name in PARAMS:  # the reference's tree without the heads
        assert (found.tree_params - heads, parts["U-Net"], found.denoisers["recon"][0].params) == PARAMS[name]


@pytest.mark.parametrize("size, channels", [(32, [8, 48, 88, 128]), (64, [8, 38, 68, 98, 128])])
def test_cnn2_encoder_channels_follow_the_reference(size, channels):
    # notes 1.3: CIFAR 8 -> 48 -> 88 -> 128 at 32 -> 16 -> 8 -> 4; 64x64: 8 -> 38 -> 68 -> 98 -> 128
    from treediff.vae.encoders import make_encoder
    cfg = objects("cifar10" if size == 32 else "celeba").model
    blocks = [mod for mod in make_encoder(cfg).net if isinstance(mod, ResBlock)]
    assert [b.residual[-1].out_channels for b in blocks] == channels
