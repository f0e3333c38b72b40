"""Per-sample seeds: a sample is the same image whatever batch (chunk, worker) draws it."""
import pytest
import torch

from treediff.diffusion.config import SamplerConfig
from treediff.diffusion.trainer import load_denoiser
from treediff.eval.chunks import Chunk, merge_results, run_chunk, split_indices
from treediff.eval.generate import generate, reconstruct, sample_generator

from eval_helpers import tiny_run


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    ckpt = tiny_run(tmp_path_factory.mktemp("gen") / "run")["path"]
    return ckpt, *load_denoiser(ckpt)


@pytest.mark.parametrize("eta", [0.0, 1.0])
def test_a_sample_does_not_depend_on_its_batch(tiny, eta):
    _, denoiser, tree_model = tiny
    sampler = SamplerConfig(steps=5, eta=eta)
    whole, x_hat, leaves = generate(denoiser, tree_model, sampler, seed=3, indices=list(range(6)))
    parts = [generate(denoiser, tree_model, sampler, seed=3, indices=idx) for idx in ([0, 1], [2, 3, 4], [5])]
    torch.testing.assert_close(torch.cat([p[0] for p in parts]), whole, atol=1e-5, rtol=0)
    assert torch.equal(torch.cat([p[2] for p in parts]), leaves)
    assert set(leaves.tolist()) <= {1, 5, 6} and whole.shape == (6, 1, 8, 8) and whole.abs().max() <= 1
    # another seed, other images
    other, _, _ = generate(denoiser, tree_model, sampler, seed=4, indices=list(range(6)))
    assert not torch.allclose(other, whole)


def test_fixed_leaf_and_reconstruction(tiny):
    _, denoiser, tree_model = tiny
    sampler = SamplerConfig(steps=5)
    _, _, leaves = generate(denoiser, tree_model, sampler, seed=0, indices=list(range(5)), leaf=6)
    assert leaves.tolist() == [6] * 5
    x = torch.rand(4, 1, 8, 8, generator=torch.Generator().manual_seed(2)) * 2 - 1
    rec, x_hat, leaves = reconstruct(denoiser, tree_model, sampler, 0, [0, 1, 2, 3], x)
    rec2, _, _ = reconstruct(denoiser, tree_model, sampler, 0, [2, 3], x[2:])
    torch.testing.assert_close(rec[2:], rec2, atol=1e-3, rtol=0)  # batched convs: float-level differences
    assert x_hat.shape == x.shape


def test_generators_are_distinct_per_index_and_seed():
    draws = {(s, i): torch.randn(3, generator=sample_generator(s, i)) for s in (0, 1) for i in (0, 1, 2)}
    assert len({tuple(v.tolist()) for v in draws.values()}) == 6


def test_chunked_statistics_do_not_depend_on_the_chunk_size(tiny):
    ckpt, _, _ = tiny
    spec = {"name": "pixels"}
    common = dict(extractor=spec, seed=1, checkpoint=str(ckpt), sampler={"steps": 4})

    def stats(size):
        return merge_results([run_chunk(Chunk("g", "generation", idx, **common))
                              for idx in split_indices(12, size)]).stats["samples"]

    a, b = stats(12), stats(5)
    assert a.n == b.n == 12
    torch.testing.assert_close(torch.from_numpy(a.outer), torch.from_numpy(b.outer), atol=1e-6, rtol=1e-6)


def test_bad_chunks_are_refused():
    with pytest.raises(ValueError, match="kind"):
        Chunk("k", "bogus", [0], {"name": "pixels"}, checkpoint="x")
    with pytest.raises(ValueError, match="real image"):
        Chunk("k", "recon", [0, 1], {"name": "pixels"}, checkpoint="x")
    with pytest.raises(ValueError, match="checkpoint"):
        Chunk("k", "generation", [0], {"name": "pixels"})
    with pytest.raises(ValueError, match="chunk_size"):
        split_indices(4, 0)


def test_high_probability_leaf_draws_come_from_the_leaf_itself(tiny):
    from treediff.diffusion.model import leaf_condition
    from treediff.eval.generate import generate_leaf

    _, denoiser, tree_model = tiny
    leaf = 6
    g = sample_generator(0, 0)
    cond, p = leaf_condition(tree_model, leaf, g, min_prob=0.3, draws=64)
    # the kept draw is one of 64 prior draws (same generator state), the first routed to the leaf with p >= 0.3
    out = tree_model.generate(64, generator=sample_generator(0, 0))
    probs = out.leaf_probs[:, out.leaves.index(leaf)]
    above = (probs >= 0.3).nonzero(as_tuple=True)[0]
    row = int(above[0]) if len(above) else int(probs.argmax())
    assert p == pytest.approx(float(probs[row]))
    torch.testing.assert_close(cond.x_hat, out.images[leaf][row:row + 1])
    path = tree_model.tree.path(leaf)
    n = int(cond.mask.sum())
    for k in range(n):  # the path latents are that draw's prior samples
        node = int(cond.node_ids[0, k])
        torch.testing.assert_close(cond.z_path[0, k], out.z[node][row].flatten())
    assert [int(i) for i in cond.node_ids[0, :n]] == path
    with pytest.raises(ValueError, match="not a leaf"):
        leaf_condition(tree_model, 0, g)
    x, x_hat, leaves, kept = generate_leaf(denoiser, tree_model, SamplerConfig(steps=3), 0, [0, 1, 2], leaf, 0.3, 16)
    assert leaves.tolist() == [leaf] * 3 and x.shape == (3, 1, 8, 8) and kept.shape == (3,)
    # an impossible threshold keeps the most probable draw instead
    _, p_max = leaf_condition(tree_model, leaf, sample_generator(0, 0), min_prob=1.0, draws=64)
    assert p_max == pytest.approx(float(probs.max()))
