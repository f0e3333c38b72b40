"""The leaf decoder's stride-1 transposed convolutions: torch's conv_transpose2d against the same map
as a plain conv2d (kernel flipped and transposed, input padded by k - 1 - p), in one run.

    .venv/bin/python bench/decoder_conv.py [--model tree_mnist] [--batch 256] [--threads 2]

Why: a profile of one training step of a 10-leaf Fashion-MNIST tree (batch 256, 2 threads, 0.9 s)
put half of its CPU time in the forward of two transposed convolutions of each leaf's decoder
(kernel 12, stride 1, output channels 1 and 6), each 4-7x its own backward. Builds the decoder of
`configs/model/<model>.yaml`, records every stride-1 transposed convolution's input on a batch of
latents, and prints per layer the ms of both ways, their ratio and whether they agree
(allclose 1e-3). A record for a change not yet made: the decoder still calls ConvTranspose2d.
"""
from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F
import torch.utils.benchmark as benchmark
import yaml

from common import ROOT
from treediff.vae.config import TreeVAEConfig
from treediff.vae.encoders import make_decoder


def ms_per_call(fn, repeats: int) -> float:
    """Mean ms of `repeats` calls after one warm-up (torch.utils.benchmark, this process's threads)."""
    timer = benchmark.Timer(stmt="fn()", globals={"fn": fn}, num_threads=torch.get_num_threads())
    return timer.timeit(repeats).mean * 1e3


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="tree_mnist")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=10)
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
    with torch.no_grad():
        decoder(z)
        print(f"{args.model} decoder, batch {args.batch}, {args.threads} threads: "
              f"{ms_per_call(lambda: decoder(z), args.repeats):.1f} ms a forward")
        for mod, x in inputs.items():
            w, b, (pad, _) = mod.weight, mod.bias, mod.padding
            k = w.shape[-1]
            flipped = w.flip(2, 3).transpose(0, 1).contiguous()
            as_transposed = lambda: F.conv_transpose2d(x, w, b, padding=pad)  # noqa: E731
            as_conv = lambda: F.conv2d(x, flipped, b, padding=k - 1 - pad)  # noqa: E731
            agree = torch.allclose(as_transposed(), as_conv(), atol=1e-3, rtol=1e-3)
            t_tr, t_conv = ms_per_call(as_transposed, args.repeats), ms_per_call(as_conv, args.repeats)
            print(f"  {list(x.shape)} -> {list(as_transposed().shape)}, kernel {k}: conv_transpose2d "
                  f"{t_tr:.1f} ms, conv2d {t_conv:.1f} ms, ratio {t_tr / t_conv:.2f}x, agree {agree}")


if __name__ == "__main__":
    main()
