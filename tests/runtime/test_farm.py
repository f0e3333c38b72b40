"""The evaluation farm on a local Ray cluster: the same FID with 1 and 2 workers, in one process,
and from torch-fidelity's own calculate_metrics on the same images."""
import numpy as np
import pytest
import torch
import torch_fidelity

from cluster.farm import run_farm
from cluster.loop import StageFailed
from treediff.diffusion.config import SamplerConfig
from treediff.diffusion.trainer import load_denoiser
from treediff.eval.chunks import Chunk, merge_results, split_indices
from treediff.eval.generate import generate
from treediff.metrics.features import Extractor, to_uint8_rgb
from treediff.metrics.fid import FeatureStats, frechet_distance

from eval_helpers import Images, tiny_run

N, SEED = 40, 7
SAMPLER = {"steps": 4, "eta": 0.5}



@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return tiny_run(tmp_path_factory.mktemp("farm") / "run")["path"]


def chunks(ckpt):
    return [Chunk("gen", "generation", idx, {"name": "pixels"}, seed=SEED, checkpoint=str(ckpt), sampler=SAMPLER)
            for idx in split_indices(N, 8)]


def reference():
    x = torch.rand(60, 1, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1
    return to_uint8_rgb(x)


def test_fid_is_the_same_for_1_and_2_workers_and_equals_torch_fidelity(local_ray, ckpt):
    ref_images = reference()
    ref = FeatureStats.of(Extractor("pixels")(ref_images))
    one = merge_results(run_farm(chunks(ckpt), workers=1)).stats["samples"]
    results = run_farm(chunks(ckpt), workers=2)
    two = merge_results(results).stats["samples"]
    # each worker process loaded the denoiser once and served its later chunks from its cache
    last = {}
    for r in results:
        last[r.process] = r.loads
    assert sum(len([r for r in results if r.process == p]) for p in last) == len(results)
    assert any(len([r for r in results if r.process == p]) > 1 for p in last)
    assert all("denoiser" in loads and set(loads.values()) == {1} for loads in last.values()), last
    here = merge_results(run_farm(chunks(ckpt), workers=1, runtime="inprocess")).stats["samples"]
    assert one.n == two.n == here.n == N
    fid_one, fid_two, fid_here = (frechet_distance(s, ref) for s in (one, two, here))
    assert fid_one == pytest.approx(fid_two, rel=1e-9, abs=1e-9)  # same chunks, same order: same sums
    assert fid_here == pytest.approx(fid_one, rel=1e-5)  # another process, another thread count
    # the same images, generated in one batch here, through torch-fidelity's own pipeline
    denoiser, tree_model = load_denoiser(ckpt)
    x, _, _ = generate(denoiser, tree_model, SamplerConfig(**SAMPLER), SEED, list(range(N)))
    theirs = torch_fidelity.calculate_metrics(input1=Images(to_uint8_rgb(x)), input2=Images(ref_images), fid=True,
                                              batch_size=16, save_cpu_ram=True,
                                              **Extractor("pixels").kwargs())["frechet_inception_distance"]
    assert fid_one == pytest.approx(theirs, rel=1e-4)
    assert fid_one > 0


def test_gpu_chunk_tasks_keep_their_process():
    # Ray ends a GPU task's process after one call unless told otherwise (max_calls=1 by default)
    from cluster.farm import _remote
    assert _remote(1, 1)._default_options["max_calls"] == 0


def test_a_failing_chunk_names_itself(local_ray, tmp_path):
    bad = [Chunk("gen", "generation", [0, 1], {"name": "pixels"}, checkpoint=str(tmp_path / "missing"),
                 sampler=SAMPLER)]
    with pytest.raises(StageFailed, match=r"chunk gen \[0\.\.1\].*missing"):
        run_farm(bad, workers=1)
