"""POT interop: ``to_pot`` / ``from_pot`` give the same cells, the same small problem solved by
POT's ``solve_semidiscrete`` and by otgen lands on maps with the same cell masses, and numpy and
string dtypes are accepted."""

import numpy as np
import pytest
import torch

from otgen.transport import SemiDiscreteOT

ot_sd = pytest.importorskip("ot.semidiscrete")


@pytest.fixture(scope="module")
def fitted():
    Y = np.random.default_rng(0).normal(size=(40, 3))
    return Y, SemiDiscreteOT(tol=0.03).fit(Y)


def test_to_pot_gives_pots_cells(fitted):
    Y, ot = fitted
    g = ot.to_pot()
    X = np.random.default_rng(1).uniform(-1, 1, size=(20000, 3))
    pot_cells = (((X[:, None, :] - Y[None]) ** 2).sum(2) - g[None]).argmin(1)   # POT's rule
    assert isinstance(g, np.ndarray) and g.shape == (40,) and abs(g.mean()) < 1e-12
    assert (pot_cells == ot.assign(X)).mean() > 0.999         # float32 scoring: rounding ties aside


def test_from_pot_round_trip(fitted):
    Y, ot = fitted
    back = SemiDiscreteOT.from_pot(ot.targets_.numpy(), ot.to_pot())    # g is of the stored (float32) targets
    np.testing.assert_allclose(back.heights_.numpy(), ot.heights_.numpy(), atol=1e-9)
    X = np.random.default_rng(2).uniform(-1, 1, size=(20000, 3))
    assert (back.assign(X) == ot.assign(X)).mean() > 0.999
    assert back.n_iter_ == 0 and not back.converged_ and back.history_ == []
    with pytest.raises(ValueError, match="g must have length 40"):
        SemiDiscreteOT.from_pot(Y, ot.to_pot()[:5])


def test_the_same_problem_solved_by_pot_and_by_otgen():
    rng = np.random.default_rng(3)
    Y = rng.normal(size=(8, 2))
    nu = rng.uniform(0.5, 1.5, size=8)
    nu /= nu.sum()
    cube = np.random.default_rng(4)
    g = ot_sd.solve_semidiscrete(Y, lambda b: cube.uniform(-1, 1, size=(b, 2)), a_target=nu, max_iter=20000,
                                 batch_size=64)
    pot = SemiDiscreteOT.from_pot(Y, g, nu)
    ours = SemiDiscreteOT(tol=1e-4).fit(Y, nu)                   # exact 2-D
    m_pot, m_ours = pot.cell_masses(2**18, seed=5), ours.cell_masses(2**18, seed=5)
    assert 0.5 * np.abs(m_ours - nu).sum() < 0.01                # exact, up to the QMC estimate
    assert 0.5 * np.abs(m_pot - nu).sum() < 0.1                  # POT's SGD after 20000 steps
    assert 0.5 * np.abs(m_pot - m_ours).sum() < 0.1


@pytest.mark.parametrize("dtype", [np.float64, np.dtype("float64"), "float64", "torch.float64", torch.float64])
def test_numpy_and_string_dtypes_are_accepted(dtype):
    Y = np.random.default_rng(6).normal(size=(30, 3))
    ot = SemiDiscreteOT(tol=0.05, dtype=dtype).fit(Y)
    assert ot.targets_.dtype == torch.float64 and ot.get_params()["dtype"] is dtype   # the setting is kept as given
    assert ot._saved_params()["dtype"] == "float64"
    assert isinstance(ot.assign(Y[:4]), np.ndarray)                                    # numpy in, numpy out


@pytest.mark.parametrize("dtype", ["float16", np.int32, "double precision", 3])
def test_other_dtypes_are_refused(dtype):
    with pytest.raises(TypeError, match="dtype must be float32 or float64"):
        SemiDiscreteOT(dtype=dtype).fit(np.random.default_rng(6).normal(size=(30, 3)))


def test_pots_unif_source_is_otgens_unif():
    """``source="unif"`` solves the problem POT solves with ``sampler_source='unif'`` (the cube [0, 1]^d);
    the same potential on otgen's ``"uniform"`` cube [-1, 1]^d is another map."""
    backend = pytest.importorskip("ot.backend")
    rng = np.random.default_rng(3)
    Y = rng.normal(size=(8, 2))
    nu = rng.uniform(0.5, 1.5, size=8)
    nu /= nu.sum()
    backend.get_backend(Y).seed(0)                               # POT's built-in samplers draw from its backend
    g = ot_sd.solve_semidiscrete(Y, "unif", a_target=nu, max_iter=5000, batch_size=64)
    ours = SemiDiscreteOT(source="unif", tol=1e-4).fit(Y, nu)   # exact 2-D on [0, 1]^2
    pot = SemiDiscreteOT.from_pot(Y, g, nu, source="unif")
    m_ours, m_pot = ours.cell_masses(2**18, seed=5), pot.cell_masses(2**18, seed=5)
    assert 0.5 * np.abs(m_ours - nu).sum() < 0.01
    assert 0.5 * np.abs(m_pot - m_ours).sum() < 0.05             # POT's SGD after 5000 steps: ~0.02
    on_uniform = SemiDiscreteOT.from_pot(Y, g, nu, source="uniform").cell_masses(2**18, seed=5)
    assert 0.5 * np.abs(on_uniform - nu).sum() > 0.3             # measured 0.55


def test_pots_callable_convention_is_accepted():
    """The callable POT takes, ``f(batch_size) -> (batch_size, d)``, is a source here too."""
    Y = np.random.default_rng(6).normal(size=(10, 3))
    rng = np.random.default_rng(7)
    ours = SemiDiscreteOT(source=lambda n: rng.standard_normal((n, 3)), tol=0.05).fit(Y)
    ref = SemiDiscreteOT(source="normal", tol=0.05).fit(Y)
    assert 0.5 * np.abs(SemiDiscreteOT.from_pot(Y, ours.to_pot(), source="normal").cell_masses(2**17) - 0.1).sum() < 0.07
    assert 0.5 * np.abs(ref.cell_masses(2**17) - 0.1).sum() < 0.07
