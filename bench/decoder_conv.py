"""The leaf decoders' stride-1 transposed convolutions, torch's conv_transpose2d against the plain
conv2d they equal (kernel flipped and transposed, input padded by k - 1 - p), in one run.

    .venv/bin/python bench/decoder_conv.py [--model tree_mnist] [--leaves 10] [--batch 256] [--threads 2]

Why: a profile of one training step of a 10-leaf Fashion-MNIST tree (batch 256, 2 threads, 0.9 s)
put half of its CPU time in the forward of two transposed convolutions of each leaf's decoder
(kernel 12, stride 1, output channels 1 and 6), each 4-7x its own backward. The decoders now build
`treediff.vae.blocks.ConvTranspose2d`, which runs that case as conv2d. For the model of
`configs/model/<model>.yaml` this prints, both ways on the same inputs and weights:
  - per stride-1 layer of one decoder, the forward's ms and whether the outputs agree;
  - one whole training step (forward, ELBO at alpha 1, backward, Adam) of a tree grown breadth-first
    to `--leaves` leaves on random images, ms and the ratio old / new.
"""
from __future__ import annotations

import argparse

import torch
import torch.utils.benchmark as benchmark
import yaml
from torch import nn

from common import ROOT, grown_tree
from treediff.vae.blocks import ConvTranspose2d
from treediff.vae.config import TreeVAEConfig
from treediff.vae.encoders import make_decoder


def ms_per_call(fn, repeats: int) -> float:
    """Mean ms of `repeats` calls after one warm-up (torch.utils.benchmark, this process's threads)."""
    timer = benchmark.Timer(stmt="fn()", globals={"fn": fn}, num_threads=torch.get_num_threads())
    return timer.timeit(repeats).mean * 1e3


def set_transposed_conv(model: nn.Module, cls: type) -> None:
    """Run every decoder transposed conv as `cls` (torch's own, or ours): same weights, same layout."""
    for mod in model.modules():
        if isinstance(mod, nn.ConvTranspose2d):
            mod.__class__ = cls


def layer_table(cfg: TreeVAEConfig, batch: int, repeats: int) -> None:
    decoder = make_decoder(cfg).eval()
    inputs: dict[nn.Module, torch.Tensor] = {}
    for mod in decoder.modules():
        if isinstance(mod, nn.ConvTranspose2d) and mod.stride == (1, 1):
            mod.register_forward_hook(lambda m, inp, out: inputs.__setitem__(m, inp[0].detach()))
    z = torch.randn(batch, cfg.latent_channels, cfg.representation_dim, cfg.representation_dim)
    with torch.no_grad():
        decoder(z)
        for mod, x in inputs.items():
            ours = lambda: ConvTranspose2d.forward(mod, x)  # noqa: E731
            torch_own = lambda: nn.ConvTranspose2d.forward(mod, x)  # noqa: E731
            agree = torch.allclose(ours(), torch_own(), atol=1e-4, rtol=1e-4)
            t_torch, t_ours = ms_per_call(torch_own, repeats), ms_per_call(ours, repeats)
            print(f"  {list(x.shape)} -> {list(ours().shape)}, kernel {mod.kernel_size[0]}: conv_transpose2d "
                  f"{t_torch:.1f} ms, as conv2d {t_ours:.1f} ms, ratio {t_torch / t_ours:.2f}x, agree {agree}")


def step_ms(cfg: TreeVAEConfig, leaves: int, batch: int, repeats: int) -> dict[str, float]:
    model = grown_tree(cfg, leaves).train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    x = torch.rand(batch, cfg.in_channels, cfg.image_size, cfg.image_size) * 2 - 1

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        model(x).loss(1.0).backward()
        opt.step()

    out = {}
    for name, cls in (("conv_transpose2d", nn.ConvTranspose2d), ("as conv2d", ConvTranspose2d)):
        set_transposed_conv(model, cls)
        out[name] = ms_per_call(step, repeats)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="tree_mnist")
    ap.add_argument("--leaves", type=int, default=10)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=10)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cfg = TreeVAEConfig(**yaml.safe_load((ROOT / "configs" / "model" / f"{args.model}.yaml").read_text()))

    print(f"{args.model}, batch {args.batch}, {args.threads} threads; one decoder's stride-1 layers (forward):")
    layer_table(cfg, args.batch, args.repeats)
    ms = step_ms(cfg, args.leaves, args.batch, max(3, args.repeats // 2))
    old, new = ms["conv_transpose2d"], ms["as conv2d"]
    print(f"  a training step of a {args.leaves}-leaf tree (forward, ELBO, backward, Adam): "
          f"conv_transpose2d {old:.0f} ms, as conv2d {new:.0f} ms, ratio {old / new:.2f}x")


if __name__ == "__main__":
    main()
