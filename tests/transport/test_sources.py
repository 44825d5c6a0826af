"""Source measures: every name (otgen's and POT's) draws the measure it names -- POT's names the
measure POT's own built-in samplers draw -- aliases are one measure, a callable sampler is checked
at every draw, and what the solver reads of a source (mean, spread, radius, support, 2-D polygon)
is right."""

import math

import numpy as np
import pytest
import torch
from scipy import stats

from otgen.transport import SOURCES, CallableSource, Source, SourceSampler, as_source, sample_source, source_std

N_POINTS = 20000      # points per moment comparison: the standard error of a mean is ~0.007 sigma
D = 3


@pytest.fixture(scope="module")
def pot_sampler():
    """POT's built-in sampler of a name (``ot.semidiscrete``'s own resolution of ``sampler_source``)."""
    sd = pytest.importorskip("ot.semidiscrete")
    backend = pytest.importorskip("ot.backend")
    resolve = getattr(sd, "_resolve_sampler", None)
    if resolve is None:
        pytest.skip("this POT resolves sampler_source differently")
    nx = backend.NumpyBackend()
    nx.seed(0)
    return lambda name, n, d: resolve(name, np.zeros((2, d)), nx)(n)


@pytest.mark.parametrize("name", ["unif", "unif_cube", "ball", "unif_ball", "normal"])
def test_pot_names_draw_the_measure_pot_draws(name, pot_sampler):
    ours = sample_source(name, N_POINTS, D, seed=1).double().numpy()
    theirs = pot_sampler(name, N_POINTS, D)
    se = theirs.std(0) / math.sqrt(N_POINTS)
    np.testing.assert_array_less(np.abs(ours.mean(0) - theirs.mean(0)), 6 * math.sqrt(2) * se)
    np.testing.assert_allclose(ours.std(0), theirs.std(0), rtol=0.03)
    # the same law of the first coordinate and of the norm (two-sample Kolmogorov-Smirnov)
    assert stats.ks_2samp(ours[:, 0], theirs[:, 0]).pvalue > 1e-4
    assert stats.ks_2samp(np.linalg.norm(ours, axis=1), np.linalg.norm(theirs, axis=1)).pvalue > 1e-4
    # the same support: the cube [0, 1]^d, the unit ball
    if name.startswith("unif") and "ball" not in name:
        assert ours.min() >= 0 and ours.max() <= 1 and theirs.min() >= 0 and theirs.max() <= 1
    if "ball" in name:
        assert np.linalg.norm(ours, axis=1).max() <= 1 + 1e-6


def test_otgen_uniform_is_not_pots_unif(pot_sampler):
    """``"uniform"`` is [-1, 1]^d, POT's ``'unif'`` is [0, 1]^d: distinct measures."""
    x = sample_source("uniform", N_POINTS, D, seed=1).numpy()
    assert x.min() < -0.99 and x.max() > 0.99 and abs(x.mean()) < 0.02
    assert abs(pot_sampler("unif", N_POINTS, D).mean() - 0.5) < 0.02


@pytest.mark.parametrize("alias, canonical", [("uniform", "uniform"), ("unif", "unif"), ("unif_cube", "unif"),
                                              ("ball", "ball"), ("unif_ball", "ball"), ("gaussian", "gaussian"),
                                              ("normal", "gaussian")])
def test_aliases_name_one_measure(alias, canonical):
    assert as_source(alias) == Source(canonical) and as_source(alias).name == canonical
    torch.testing.assert_close(sample_source(alias, 64, D, seed=2, qmc=True),
                               sample_source(canonical, 64, D, seed=2, qmc=True), atol=0, rtol=0)
    assert set(SOURCES) >= {alias, canonical}


@pytest.mark.parametrize("name", ["uniform", "unif", "ball", "gaussian"])
def test_stated_moments_and_support_match_the_draws(name):
    src = as_source(name)
    x = sample_source(src, N_POINTS, D, seed=3, qmc=True).double()
    torch.testing.assert_close(x.mean(0), src.mean(D), atol=0.02, rtol=0)
    assert abs(float(x.std(0).mean()) - src.std(D)) < 0.02 and source_std(name, D) == src.std(D)
    assert float(x.norm(dim=1).max()) <= src.radius(D)
    assert bool(src.contains(x).all()) and bool((src.depth(x) >= -1e-6).all())
    assert src.bounded == (name != "gaussian")


@pytest.mark.parametrize("name, inside, outside, depth", [
    ("uniform", [-0.9, 0.5], [1.1, 0.0], 0.1),
    ("unif", [0.1, 0.5], [-0.1, 0.5], 0.1),
    ("ball", [0.0, 0.9], [0.8, 0.8], 0.1),
])
def test_support_membership_and_depth(name, inside, outside, depth):
    src = as_source(name)
    P = torch.tensor([inside, outside], dtype=torch.float64)
    assert src.contains(P).tolist() == [True, False]
    assert float(src.depth(P[:1])[0]) == pytest.approx(depth)


@pytest.mark.parametrize("name, area, centre", [("uniform", 4.0, 0.0), ("unif", 1.0, 0.5), ("ball", math.pi, 0.0)])
def test_2d_polygons(name, area, centre):
    D2 = as_source(name).domain2d()
    x, y = D2[:, 0], D2[:, 1]
    shoelace = 0.5 * float(np.dot(x, np.roll(y, -1)) - np.dot(np.roll(x, -1), y))
    assert shoelace == pytest.approx(area, rel=1e-3) and np.allclose(D2.mean(0), centre)
    assert as_source("gaussian").domain2d() is None


def test_callable_source_draws_its_own_points():
    rng = np.random.default_rng(4)
    src = as_source(lambda n: rng.uniform(-1, 1, size=(n, D)))
    assert isinstance(src, CallableSource) and src.name == "callable" and not src.bounded
    x = SourceSampler(src, D, seed=0, qmc=True, dtype=torch.float64).draw(1000)
    assert x.shape == (1000, D) and x.dtype == torch.float64 and float(x.abs().max()) <= 1
    assert abs(src.std(D) - 1 / math.sqrt(3)) < 0.02 and float(src.mean(D).abs().max()) < 0.05
    assert math.sqrt(D) <= src.radius(D) <= 2 * math.sqrt(D)
    assert src.domain2d() is None and bool(src.contains(10 * x).all()) and bool(torch.isinf(src.depth(x)).all())


def test_callable_source_may_return_torch():
    gen = torch.Generator().manual_seed(5)
    x = sample_source(lambda n: torch.randn(n, D, generator=gen, dtype=torch.float64), 50, D)
    assert x.shape == (50, D) and x.dtype == torch.float32


@pytest.mark.parametrize("sampler, match", [
    (lambda n: np.zeros((n, D + 1)), r"shape \(n, d\) = \(64, 3\)"),
    (lambda n: np.zeros((n + 1, D)), r"shape \(n, d\) = \(64, 3\)"),
    (lambda n: np.zeros(n), r"shape \(N, d\)"),
    (lambda n: np.full((n, D), np.nan), "NaN"),
])
def test_callable_returning_bad_points_is_refused(sampler, match):
    with pytest.raises(ValueError, match=match):
        sample_source(sampler, 64, D)


@pytest.mark.parametrize("source, error, match", [("cube", ValueError, "source must be one of"),
                                                  ("Uniform", ValueError, "source must be one of"),
                                                  (3, TypeError, "callable sampler"),
                                                  (None, TypeError, "callable sampler")])
def test_bad_sources_are_refused(source, error, match):
    with pytest.raises(error, match=match):
        as_source(source)
