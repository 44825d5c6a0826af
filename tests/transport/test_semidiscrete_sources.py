"""SemiDiscreteOT with POT's source names and with a callable sampler: ``source`` stays the user's
setting, ``source_`` is the canonical measure every draw reads; aliases give the same solve and
resume each other's checkpoints; a callable solves the problem of the measure it draws, is refused
where a name is needed (exact 2-D, checkpoints, parallel, save) and can be rebuilt with from_pot."""

import numpy as np
import pytest

from otgen.transport import CallableSource, SemiDiscreteOT, Source


@pytest.fixture(scope="module")
def problem():
    rng = np.random.default_rng(0)
    Y = rng.normal(size=(20, 3))
    nu = rng.uniform(0.5, 1.5, size=20)
    return Y, nu / nu.sum()


def _tv(masses, nu):
    return 0.5 * float(np.abs(masses - nu).sum())


def cube_sampler(seed, d=3):
    """A seeded POT-style sampler of the cube [-1, 1]^d."""
    rng = np.random.default_rng(seed)
    return lambda n: rng.uniform(-1, 1, size=(n, d))


def test_normal_gives_the_gaussian_solve(problem):
    Y, nu = problem
    a = SemiDiscreteOT(source="normal", tol=0.05).fit(Y, nu)
    b = SemiDiscreteOT(source="gaussian", tol=0.05).fit(Y, nu)
    np.testing.assert_array_equal(a.heights_.numpy(), b.heights_.numpy())
    assert a.source == "normal" and a.get_params()["source"] == "normal" and a.source_ == Source("gaussian")


def test_unif_is_the_cube_0_1(problem):
    """POT's [0, 1]^d: the cells are the [-1, 1]^d cells moved by x -> (x + 1) / 2, heights (h - <1, y>) / 2."""
    Y, nu = problem
    ours = SemiDiscreteOT(source="unif", tol=0.02).fit(Y, nu)
    assert ours.source_ == Source("unif") and ours.converged_
    assert _tv(ours.cell_masses(2**16, seed=1), nu) < 0.03
    h = 2 * ours.heights_.numpy() + Y.sum(1)                             # the same cells on [-1, 1]^d
    moved = SemiDiscreteOT.from_pot(Y, 2 * h + (Y * Y).sum(1), nu)
    assert _tv(moved.cell_masses(2**16, seed=1), nu) < 0.03
    on_wrong_cube = SemiDiscreteOT.from_pot(Y, ours.to_pot(), nu, source="uniform")
    assert _tv(on_wrong_cube.cell_masses(2**16, seed=1), nu) > 0.2


def test_callable_cube_matches_the_uniform_solve(problem):
    Y, nu = problem
    call = SemiDiscreteOT(source=cube_sampler(1), tol=0.02).fit(Y, nu)
    ref = SemiDiscreteOT(source="uniform", tol=0.02).fit(Y, nu)
    assert isinstance(call.source_, CallableSource) and call.converged_
    on_cube = SemiDiscreteOT.from_pot(Y, call.to_pot(), nu, source="uniform")      # its cells, QMC-measured
    assert _tv(on_cube.cell_masses(2**18, seed=2), nu) < 0.03            # tol + the estimates' noise
    assert _tv(on_cube.cell_masses(2**18, seed=2), ref.cell_masses(2**18, seed=2)) < 0.04


def test_callable_2d_uses_the_stochastic_solver():
    Y = np.random.default_rng(3).normal(size=(12, 2))
    call = SemiDiscreteOT(source=cube_sampler(4, d=2), tol=0.05).fit(Y)
    assert call._method(2) == "stochastic" and call.history_[0]["n_samples"] > 0
    assert SemiDiscreteOT(source="unif", tol=0.05).fit(Y).history_[0]["n_samples"] == 0     # exact 2-D


def test_callable_zero_weight_targets_get_empty_cells():
    Y = np.random.default_rng(5).normal(size=(10, 3))
    nu = np.r_[np.zeros(2), np.full(8, 1 / 8)]
    call = SemiDiscreteOT(source=cube_sampler(6), tol=0.05).fit(Y, nu)
    assert (call.cell_masses(2**16)[:2] == 0).all()


@pytest.mark.parametrize("settings, match", [
    (dict(method="exact2d"), "source with a polygon"),
    (dict(checkpoint="x.ckpt"), "checkpoint needs a named source"),
    (dict(parallel="samples"), "parallel needs a named source"),
])
def test_callable_is_refused_where_a_name_is_needed(settings, match):
    Y = np.random.default_rng(7).normal(size=(10, 2))
    with pytest.raises(ValueError, match=match):
        SemiDiscreteOT(source=cube_sampler(8, d=2), **settings).fit(Y)


def test_callable_of_the_wrong_dimension_is_refused_at_fit():
    with pytest.raises(ValueError, match=r"shape \(n, d\) = \(4096, 3\)"):
        SemiDiscreteOT(source=cube_sampler(9, d=2)).fit(np.random.default_rng(9).normal(size=(10, 3)))


def test_alias_round_trips_through_save(problem, tmp_path):
    Y, nu = problem
    ot = SemiDiscreteOT(source="unif_ball", tol=0.05).fit(Y, nu)
    ot.save(tmp_path / "a.pt")
    back = SemiDiscreteOT.load(tmp_path / "a.pt")
    assert back.get_params()["source"] == "unif_ball" and back.source_ == Source("ball")
    X = back.sample(100, seed=1)
    np.testing.assert_array_equal(X, ot.sample(100, seed=1))


def test_a_source_object_is_saved_by_name(problem, tmp_path):
    Y, nu = problem
    SemiDiscreteOT(source=Source("normal"), tol=0.05).fit(Y, nu).save(tmp_path / "b.pt")
    assert SemiDiscreteOT.load(tmp_path / "b.pt").source == "gaussian"


def test_callable_save_is_refused_and_from_pot_rebuilds(problem, tmp_path):
    Y, nu = problem
    sampler = cube_sampler(10)
    ot = SemiDiscreteOT(source=sampler, tol=0.05).fit(Y, nu)
    with pytest.raises(ValueError, match="callable source cannot be saved.*from_pot"):
        ot.save(tmp_path / "c.pt")
    assert not (tmp_path / "c.pt").exists()
    back = SemiDiscreteOT.from_pot(ot.targets_.numpy(), ot.to_pot(), ot.weights_.numpy(), source=sampler)
    X = np.random.default_rng(11).uniform(-1, 1, size=(5000, 3))
    assert (back.assign(X) == ot.assign(X)).mean() > 0.999


def test_checkpoint_fingerprint_uses_the_canonical_name(problem, tmp_path):
    Y, nu = problem
    path = tmp_path / "r.ckpt"
    first = SemiDiscreteOT(source="normal", tol=1e-4, max_iter=2, checkpoint=path, init="zero")
    with pytest.warns(UserWarning, match="stopped after max_iter=2"):
        first.fit(Y, nu)
    resumed = SemiDiscreteOT(source="gaussian", tol=1e-4, max_iter=3, checkpoint=path, init="zero")
    with pytest.warns(UserWarning, match="stopped after max_iter=3"):
        resumed.fit(Y, nu, resume=True)
    assert resumed.n_iter_ == 3 and resumed.history_[:2] == first.history_     # continued: the same timings too
    with pytest.raises(ValueError, match="source='unif' here, source='gaussian' in the checkpoint"):
        SemiDiscreteOT(source="unif_cube", tol=1e-4, max_iter=3, checkpoint=path).fit(Y, nu, resume=True)
