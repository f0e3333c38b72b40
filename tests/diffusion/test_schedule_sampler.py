"""Diffusion maths: schedules, q_sample, loss, EMA, guidance, timestep spacing, DDIM/DDPM."""
import math

import pytest
import torch
from torch import nn

from treediff.diffusion.guidance import guided_eps, guided_eps_fn, reference_to_ours
from treediff.diffusion.sampler import ddim_invert, ddim_sample, ddim_step, ddpm_sample, timesteps
from treediff.diffusion.schedule import EMA, NoiseSchedule, cosine_betas, epsilon_loss, linear_betas


@pytest.fixture(scope="module")
def sched():
    return NoiseSchedule.from_name("linear", 1000)


def oracle(schedule, x0):
    """eps_fn returning the exact noise that produced x_t from the fixed x0."""
    return lambda x_t, t: schedule.predict_eps(x_t, t, x0)


def gaussian_eps(schedule, var=0.25):
    """Exact E[eps | x_t] when the data are N(0, var I): smooth, linear in x_t."""

    def fn(x_t, t):
        ab = schedule.gather("alpha_bars", t, x_t)
        return (1 - ab).sqrt() * x_t / (ab * var + 1 - ab)

    return fn


# ---------------------------------------------------------------- schedules
def test_linear_betas_and_alpha_bar(sched):
    b = linear_betas(1000)
    assert b.dtype == torch.float64 and b.shape == (1000,)
    assert b[0].item() == pytest.approx(1e-4) and b[-1].item() == pytest.approx(0.02)
    assert torch.allclose(b, torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64))
    assert torch.allclose(sched.alpha_bars, torch.cumprod(1 - b, 0))
    assert sched.alpha_bars.dtype == torch.float64 and sched.T == 1000
    assert (sched.alpha_bars[1:] < sched.alpha_bars[:-1]).all()
    # values quoted in the reference notes
    assert sched.alpha_bars[999].item() == pytest.approx(4.0e-5, rel=0.02)
    assert sched.alpha_bars[800].item() == pytest.approx(1.5e-3, rel=0.02)
    assert torch.allclose(sched.sqrt_alpha_bars**2 + sched.sqrt_one_minus_alpha_bars**2,
                          torch.ones(1000, dtype=torch.float64))
    # posterior variance closed form, 0 at t = 0
    t = torch.arange(1, 1000)
    pv = b[t] * (1 - sched.alpha_bars[t - 1]) / (1 - sched.alpha_bars[t])
    assert torch.allclose(sched.posterior_variance[1:], pv) and sched.posterior_variance[0] == 0


def test_cosine_schedule_matches_formula():
    T, s = 200, 0.008
    b = cosine_betas(T, s=s)
    assert b.dtype == torch.float64 and b.shape == (T,)
    assert (b > 0).all() and (b <= 0.999).all()
    f = lambda t: math.cos(((t / T) + s) / (1 + s) * math.pi / 2) ** 2
    ab = NoiseSchedule(b).alpha_bars
    for i in [0, 1, 50, 100, 150, 190]:
        assert ab[i].item() == pytest.approx(f(i + 1) / f(0), rel=1e-9)
    assert (ab[1:] < ab[:-1]).all()
    assert b[-1].item() == pytest.approx(0.999)  # the last ratio is clipped


def test_from_name_errors():
    assert NoiseSchedule.from_name("cosine", 10).T == 10
    with pytest.raises(ValueError, match="diffusion.schedule"):
        NoiseSchedule.from_name("sigmoid", 10)


# ---------------------------------------------------------------- forward process
def test_q_sample_statistics(sched):
    g = torch.Generator().manual_seed(0)
    x0 = torch.tensor([0.8, -0.5, 0.1])
    n = 40000
    for t_int in [10, 500, 999]:
        t = torch.full((n,), t_int, dtype=torch.long)
        noise = torch.randn(n, 3, generator=g)
        xt = sched.q_sample(x0.expand(n, 3), t, noise)
        assert xt.dtype == torch.float32
        ab = sched.alpha_bars[t_int].item()
        assert torch.allclose(xt.mean(0), math.sqrt(ab) * x0, atol=4 * math.sqrt((1 - ab) / n) + 1e-6)
        assert torch.allclose(xt.var(0), torch.full((3,), 1 - ab), rtol=0.05, atol=1e-6)


def test_predict_x0_and_eps_invert_q_sample(sched):
    g = torch.Generator().manual_seed(1)
    x0 = torch.rand(6, 2, 4, 4, generator=g) * 2 - 1
    noise = torch.randn(x0.shape, generator=g)
    t = torch.tensor([0, 1, 100, 500, 900, 999])
    xt = sched.q_sample(x0, t, noise)
    assert torch.allclose(sched.predict_x0(xt, t, noise), x0, atol=1e-4)
    assert torch.allclose(sched.predict_eps(xt, t, x0), noise, atol=1e-3)
    x64 = x0.double()
    xt64 = sched.q_sample(x64, t, noise.double())
    assert xt64.dtype == torch.float64
    assert torch.allclose(sched.predict_x0(xt64, t, noise.double()), x64, atol=1e-10)


def test_epsilon_loss(sched):
    x0 = torch.zeros(3, 1, 2, 2)
    t = torch.tensor([0, 5, 9])
    noise = torch.ones_like(x0)
    perfect = lambda x_t, tt, **c: sched.predict_eps(x_t, tt, x0)
    assert sched.epsilon_loss(perfect, x0, t, noise).item() == pytest.approx(0.0, abs=1e-8)
    seen = {}

    def model(x_t, tt, z=None):
        seen["z"] = z
        return torch.zeros_like(x_t)

    loss = epsilon_loss(sched, model, x0, t, noise, z="cond")
    assert loss.dim() == 0 and loss.item() == pytest.approx(1.0) and seen["z"] == "cond"


# ---------------------------------------------------------------- EMA
def test_ema_update_math():
    m = nn.Linear(1, 1, bias=False)
    m.register_buffer("count", torch.tensor(0.0))
    with torch.no_grad():
        m.weight.fill_(1.0)
    ema = EMA(m, decay=0.9)
    with torch.no_grad():
        m.weight.fill_(3.0)
        m.count.fill_(7.0)
    ema.update(m)
    assert ema.shadow["weight"].item() == pytest.approx(0.9 * 1 + 0.1 * 3)
    ema.update(m)
    assert ema.shadow["weight"].item() == pytest.approx(0.9 * 1.2 + 0.1 * 3)
    target = nn.Linear(1, 1, bias=False)
    target.register_buffer("count", torch.tensor(0.0))
    ema.copy_to(target)
    assert target.weight.item() == pytest.approx(1.38) and target.count.item() == 7.0
    # state dict round trip
    ema2 = EMA(target, decay=0.5)
    ema2.load_state_dict(ema.state_dict())
    assert ema2.decay == 0.9 and ema2.num_updates == 2
    assert ema2.shadow["weight"].item() == pytest.approx(1.38)
    # warm-up: d = min(decay, (1 + n) / (10 + n)), n = 1 on the first update
    w = EMA(nn.Linear(1, 1, bias=False), decay=0.9999, warmup=True)
    w.shadow["weight"].fill_(0.0)
    src = nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        src.weight.fill_(1.0)
    w.update(src)
    assert w.shadow["weight"].item() == pytest.approx(1 - 2 / 11)
    assert EMA(src, decay=0.5, warmup=True).current_decay() == pytest.approx(2 / 11)


# ---------------------------------------------------------------- guidance
def test_guided_eps():
    c, u = torch.tensor([1.0, 2.0]), torch.tensor([-1.0, 0.5])
    assert torch.equal(guided_eps(c, u, 0.0), u)
    assert torch.equal(guided_eps(c, u, 1.0), c)
    assert torch.allclose(guided_eps(c, u, 3.0), u + 3 * (c - u))
    w_ref = 2.0  # reference: (1 + w) c - w u
    assert torch.allclose(guided_eps(c, u, reference_to_ours(w_ref)), (1 + w_ref) * c - w_ref * u)
    fn = guided_eps_fn(lambda x, t: c, lambda x, t: u, 0.5)
    assert torch.allclose(fn(None, None), (c + u) / 2)


# ---------------------------------------------------------------- timesteps
@pytest.mark.parametrize("spacing", ["uniform", "quad"])
@pytest.mark.parametrize("T,steps", [(1000, 100), (1000, 50), (1000, 1000), (1000, 999), (10, 7), (50, 2)])
def test_timesteps_properties(spacing, T, steps):
    ts = timesteps(T, steps, spacing)
    assert ts.dtype == torch.long and len(ts) == steps
    assert ts[0] == 0 and ts[-1] == T - 1
    rev = ts.flip(0)
    assert (rev[1:] < rev[:-1]).all()


def test_timesteps_shapes_and_errors():
    assert timesteps(1000, 5, "uniform").tolist() == [0, 250, 500, 749, 999]
    q = timesteps(1000, 100, "quad")
    assert (q[1:] - q[:-1])[-10:].min() > (q[1:] - q[:-1])[:10].max()  # dense near 0
    assert q[50].item() == round(999 * (50 / 99) ** 2)
    assert timesteps(10, 1, "quad").tolist() == [9]
    with pytest.raises(ValueError, match="sampler.steps"):
        timesteps(10, 11, "uniform")
    with pytest.raises(ValueError, match="sampler.steps"):
        timesteps(10, 0, "quad")
    with pytest.raises(ValueError, match="sampler.spacing"):
        timesteps(10, 5, "log")


# ---------------------------------------------------------------- DDIM
def test_ddim_step_to_minus_one_returns_x0_hat(sched):
    g = torch.Generator().manual_seed(2)
    x = torch.randn(2, 3, generator=g) * 3
    eps = torch.randn(2, 3, generator=g)
    out = ddim_step(sched, x, 400, -1, eps, eta=1.0, clip_x0=True)
    assert torch.allclose(out, sched.predict_x0(x, 400, eps).clamp(-1, 1))
    out = ddim_step(sched, x, 400, -1, eps, eta=0.0, clip_x0=False)
    assert torch.allclose(out, sched.predict_x0(x, 400, eps))


def test_ddim_eta0_deterministic(sched):
    x_T = torch.randn(2, 1, 4, 4, generator=torch.Generator().manual_seed(3))
    f = gaussian_eps(sched)
    a = ddim_sample(f, x_T.shape, sched, steps=20, eta=0.0, generator=torch.Generator().manual_seed(0), x_T=x_T)
    b = ddim_sample(f, x_T.shape, sched, steps=20, eta=0.0, generator=torch.Generator().manual_seed(99), x_T=x_T)
    assert torch.equal(a, b)
    assert a.abs().max() <= 1.0


@pytest.mark.parametrize("spacing", ["uniform", "quad"])
def test_ddim_oracle_recovers_x0(sched, spacing):
    g = torch.Generator().manual_seed(4)
    x0 = torch.rand(3, 2, 4, 4, generator=g) * 2 - 1
    for seed in [0, 1]:
        for eta in [0.0, 1.0]:
            out = ddim_sample(oracle(sched, x0), x0.shape, sched, steps=25, eta=eta, spacing=spacing,
                              generator=torch.Generator().manual_seed(seed))
            assert torch.allclose(out, x0, atol=1e-4)
    x_T = torch.randn(x0.shape, generator=g) * 5  # any start point
    out = ddim_sample(oracle(sched, x0), x0.shape, sched, steps=10, x_T=x_T)
    assert torch.allclose(out, x0, atol=1e-4)


def test_ddim_invert_then_sample_roundtrip(sched):
    g = torch.Generator().manual_seed(5)
    x0 = (torch.rand(2, 3, 4, 4, generator=g) * 2 - 1) * 0.5
    # data ~ N(0, 0.25 I): the probability-flow map x_0 -> x_T is a non-trivial scaling (~2x)
    f = gaussian_eps(sched, var=0.25)
    x_T = ddim_invert(f, x0, sched, steps=500, spacing="quad")
    assert torch.allclose(x_T, 2 * x0, rtol=0.05)
    rec = ddim_sample(f, x0.shape, sched, steps=500, eta=0.0, spacing="quad", x_T=x_T, clip_x0=False)
    assert torch.allclose(rec, x0, atol=5e-3)

    # DDIM inversion is first order: the round-trip error shrinks ~1/steps
    errs = []
    for steps in (25, 100):
        x_T = ddim_invert(f, x0, sched, steps=steps, spacing="uniform")
        rec = ddim_sample(f, x0.shape, sched, steps=steps, spacing="uniform", x_T=x_T, clip_x0=False)
        errs.append((rec - x0).abs().max().item())
    assert errs[1] < errs[0] / 2.5 and errs[1] < 0.03


def test_ddim_eta_positive_stochastic_but_reproducible(sched):
    x_T = torch.randn(2, 1, 4, 4, generator=torch.Generator().manual_seed(6))
    f = gaussian_eps(sched)
    run = lambda seed: ddim_sample(f, x_T.shape, sched, steps=20, eta=1.0, x_T=x_T,
                                   generator=torch.Generator().manual_seed(seed))
    a, b, c = run(0), run(0), run(1)
    assert torch.equal(a, b)
    assert not torch.allclose(a, c, atol=1e-3)
    # without x_T the start point also comes from the generator
    d = ddim_sample(f, (2, 1, 4, 4), sched, steps=5, generator=torch.Generator().manual_seed(7))
    e = ddim_sample(f, (2, 1, 4, 4), sched, steps=5, generator=torch.Generator().manual_seed(7))
    assert torch.equal(d, e) and d.abs().max() <= 1.0


# ---------------------------------------------------------------- DDPM
@pytest.mark.parametrize("variance", ["fixedlarge", "fixedsmall"])
def test_ddpm_oracle(variance):
    s = NoiseSchedule.from_name("linear", 100, beta_1=1e-3, beta_T=0.2)
    g = torch.Generator().manual_seed(8)
    x0 = torch.rand(2, 1, 3, 3, generator=g) * 2 - 1
    out = ddpm_sample(oracle(s, x0), x0.shape, s, generator=torch.Generator().manual_seed(0), variance=variance)
    assert torch.allclose(out, x0, atol=1e-4)
    a = ddpm_sample(gaussian_eps(s), x0.shape, s, generator=torch.Generator().manual_seed(1), variance=variance)
    b = ddpm_sample(gaussian_eps(s), x0.shape, s, generator=torch.Generator().manual_seed(1), variance=variance)
    c = ddpm_sample(gaussian_eps(s), x0.shape, s, generator=torch.Generator().manual_seed(2), variance=variance)
    assert torch.equal(a, b) and not torch.allclose(a, c) and a.abs().max() <= 1.0
    with pytest.raises(ValueError, match="sampler.variance"):
        ddpm_sample(gaussian_eps(s), x0.shape, s, variance="learned")
