"""The experiments' cache: keyed by settings and code version; a hit loads, a miss fits and stores."""

import numpy as np

from otgen.experiments import Cache, code_version
from otgen.latent import LatentSpace


def test_fit_once_then_load(tmp_path, rng):
    codes = rng.normal(size=(30, 3))
    calls = []

    def fit():
        calls.append(1)
        return LatentSpace().fit(codes)

    a = Cache(tmp_path).get_or_fit("latent", {"n": 30}, fit, LatentSpace)
    cache = Cache(tmp_path)
    b = cache.get_or_fit("latent", {"n": 30}, fit, LatentSpace)
    assert len(calls) == 1 and cache.hits == {"latent": True} and np.allclose(a.mean_, b.mean_)
    cache.get_or_fit("latent", {"n": 31}, fit, LatentSpace)            # other settings: fitted again
    assert len(calls) == 2 and cache.hits["latent"] is False
    assert Cache(None).get_or_fit("latent", {"n": 30}, fit, LatentSpace) is not None and len(calls) == 3


def test_key_depends_on_code_version(tmp_path):
    c = Cache(tmp_path)
    k = c.key({"a": 1})
    c.version = "another-code"
    assert c.key({"a": 1}) != k and len(code_version()) == 12


def test_a_loaded_estimator_takes_this_runs_verbosity(tmp_path, rng):
    """A model fitted by a run with progress bars and loaded by a --quiet run shows none (and vice versa)."""
    from otgen.diffusion import LatentDiffusion

    codes = rng.normal(size=(40, 2)).astype(np.float32)
    fit = lambda: LatentDiffusion(n_steps=5, hidden=8, depth=1, verbose=True, device="cpu").fit(codes)   # noqa: E731
    Cache(tmp_path).get_or_fit("diffusion", {"n": 40}, fit, LatentDiffusion, "cpu", verbose=True)
    quiet = Cache(tmp_path).get_or_fit("diffusion", {"n": 40}, fit, LatentDiffusion, "cpu", verbose=False)
    assert quiet.get_params()["verbose"] is False
    kept = Cache(tmp_path).get_or_fit("diffusion", {"n": 40}, fit, LatentDiffusion, "cpu")   # None: as stored
    assert kept.get_params()["verbose"] is True
