"""The leaf decoder's stride-1 transposed convolutions: torch's conv_transpose2d against the same map
as a plain conv2d (kernel flipped and transposed, input padded by k - 1 - p), with the inputs in
the two memory layouts, in one run.

    .venv/bin/python bench/decoder_conv.py [--model tree_mnist] [--batch 256] [--threads 2] [--leaves 10]
                                           [--checkpoint RUN_DIR/tree/phase-NNN-...]

Why: a profile of one training step of a 10-leaf Fashion-MNIST tree fed a channels-first batch
(`torch.rand(256, 1, 28, 28)`) put half of its CPU time in the forward of two transposed
convolutions of each leaf's decoder (kernel 12, stride 1), and a conv2d is 3-4x faster there. The
training loop's batches are laid out otherwise: the shard stream turns each H x W x C image into
C x H x W with permute(2, 0, 1).contiguous(), a no-op for grey images (a size-1 dimension does not
count for contiguity), so a grey batch has strides (784, 1, 28, 1), which torch reads as
channels-last; oneDNN keeps that layout through the encoder and the latents reach the decoders
channels-last (strides (64, 1, 32, 16)). There conv_transpose2d runs the conv2d's own kernel, as
fast and equal to the bit. This script prints, per
stride-1 layer of the decoder of `configs/model/<model>.yaml` and per layout, the ms of both ways,
their ratio and whether their outputs are equal to the bit. (Running the decoders as conv2d, commit
1a3f097, reverted, left every tree of `bench/quality.py --fmnist` and every phase time as before.)

Then one whole training step (forward, ELBO at alpha 1, backward, Adam) of a tree grown to
`--leaves` leaves (or the tree saved at `--checkpoint`), four ways: the batch in the layout the loop
gives it or channels-first, times the decoders on torch's conv_transpose2d or on a candidate layer
(below: the conv2d forward, torch's transposed backward). Ratios are against the pipeline as it is
(the loop's layout, torch's layer). A record of a lead, not of the pipeline: it does not use the
candidate.
"""
from __future__ import annotations

import argparse
from statistics import median

import torch
import torch.nn.functional as F
import torch.utils.benchmark as benchmark
import yaml

from common import ROOT, grown_tree
from treediff.vae.config import TreeVAEConfig
from treediff.vae.encoders import make_decoder

LAYOUTS = {"channels-first": torch.contiguous_format, "channels-last (grey batches in training)": torch.channels_last}


def ms_per_call(fn, repeats: int) -> float:
    """Mean ms of `repeats` calls after one warm-up (torch.utils.benchmark, this process's threads)."""
    timer = benchmark.Timer(stmt="fn()", globals={"fn": fn}, num_threads=torch.get_num_threads())
    return timer.timeit(repeats).mean * 1e3


class _ConvForward(torch.autograd.Function):
    """A stride-1 conv_transpose2d computed forward as the conv2d it equals, backward by torch's own
    transposed-convolution backward (a plain conv2d's backward is the slow one there)."""

    @staticmethod
    def forward(ctx, x, weight, bias, padding):  # weight: C_in x C_out x k x k
        ctx.save_for_backward(x, weight)
        ctx.padding, ctx.has_bias = padding, bias is not None
        k = weight.shape[-1]
        return F.conv2d(x, weight.flip(2, 3).transpose(0, 1), bias, padding=k - 1 - padding)

    @staticmethod
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        mask = [*ctx.needs_input_grad[:2], ctx.needs_input_grad[2] and ctx.has_bias]
        gx, gw, gb = torch.ops.aten.convolution_backward(
            grad, x, weight, [weight.shape[1]] if ctx.has_bias else None, [1, 1], [ctx.padding] * 2, [1, 1],
            True, [0, 0], 1, mask)
        return gx, gw, gb, None


class CandidateConvTranspose2d(torch.nn.ConvTranspose2d):
    def forward(self, x, output_size=None):
        if self.stride != (1, 1) or self.groups != 1 or self.padding[0] != self.padding[1]:
            return super().forward(x, output_size)
        return _ConvForward.apply(x, self.weight, self.bias, self.padding[0])


def step_table(cfg: TreeVAEConfig, args) -> None:
    if args.checkpoint:
        from treediff.vae.trainer import load_tree_model
        model = load_tree_model(args.checkpoint)
    else:
        model = grown_tree(cfg, args.leaves)
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    c, s = cfg.in_channels, cfg.image_size
    hwc = torch.rand(args.batch, s, s, c) * 2 - 1
    # the shard stream's permute(2, 0, 1).contiguous(): a no-op for grey images (size-1 channel dims do not count
    # for contiguity), so they keep strides (HW, 1, W, 1), which torch reads as channels-last
    batches = {"the loop's layout": hwc.permute(0, 3, 1, 2).contiguous(),
               "channels-first": torch.empty(args.batch, c, s, s).copy_(hwc.permute(0, 3, 1, 2))}  # strides (CHW, HW, W, 1)

    def step(x: torch.Tensor) -> None:
        opt.zero_grad(set_to_none=True)
        model(x).loss(1.0).backward()
        opt.step()

    runs: dict[tuple[str, str], list[float]] = {}
    # the four ways in turn, `--rounds` times after an untimed round (this machine's noise drifts over
    # minutes; the median per way is printed)
    for r in range(args.rounds + 1):
        for layout, x in batches.items():
            for name, cls in (("conv_transpose2d", torch.nn.ConvTranspose2d), ("candidate", CandidateConvTranspose2d)):
                for mod in model.modules():
                    if isinstance(mod, torch.nn.ConvTranspose2d):
                        mod.__class__ = cls
                t = ms_per_call(lambda: step(x), max(3, args.repeats // 2) if r else 1)
                if r:
                    runs.setdefault((layout, name), []).append(t)
    times = {way: median(ts) for way, ts in runs.items()}
    base = times["the loop's layout", "conv_transpose2d"]
    print(f"  a training step of a {len(model.tree.leaves)}-leaf tree (forward, ELBO, backward, Adam), "
          f"median of {args.rounds} rounds:")
    for (layout, name), t in times.items():
        print(f"    batch {layout:18s} decoders {name:17s} {t:6.0f} ms  ratio (as the pipeline runs) / this {base / t:.2f}x")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="tree_mnist")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--leaves", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=3, help="timed rounds of the four ways, in turn")
    ap.add_argument("--checkpoint", default="", help="time the tree saved here instead of a grown one")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    cfg_path = ROOT / "configs" / "model" / f"{args.model}.yaml"
    cfg = TreeVAEConfig(**yaml.safe_load(cfg_path.read_text()))
    decoder = make_decoder(cfg).eval()
    inputs: dict[torch.nn.ConvTranspose2d, torch.Tensor] = {}
    for mod in decoder.modules():
        if isinstance(mod, torch.nn.ConvTranspose2d) and mod.stride == (1, 1) and mod.groups == 1:
            mod.register_forward_hook(lambda m, inp, out: inputs.__setitem__(m, inp[0].detach()))
    z = torch.randn(args.batch, cfg.latent_channels, cfg.representation_dim, cfg.representation_dim)
    print(f"{args.model} decoder, batch {args.batch}, {args.threads} threads")
    with torch.no_grad():
        decoder(z)
        for mod, x0 in inputs.items():
            w, b, (pad, _) = mod.weight, mod.bias, mod.padding
            k = w.shape[-1]
            for layout, fmt in LAYOUTS.items():
                x = x0.contiguous(memory_format=fmt)
                as_transposed = lambda: F.conv_transpose2d(x, w, b, padding=pad)  # noqa: E731
                as_conv = lambda: _ConvForward.apply(x, w, b, pad)  # noqa: E731  the candidate's forward
                equal = torch.equal(as_transposed(), as_conv())
                t_tr, t_conv = ms_per_call(as_transposed, args.repeats), ms_per_call(as_conv, args.repeats)
                print(f"  {list(x.shape)} -> {list(as_transposed().shape)}, kernel {k}, {layout}: conv_transpose2d "
                      f"{t_tr:.1f} ms, conv2d {t_conv:.1f} ms, ratio {t_tr / t_conv:.2f}x, equal to the bit {equal}")

    step_table(cfg, args)


if __name__ == "__main__":
    main()
