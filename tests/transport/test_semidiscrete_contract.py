"""SemiDiscreteOT keeps the estimator contract: parameters and clone, NotFittedError,
numpy in -> numpy out, one save format (atomic, versioned, read with weights_only) and
checkpoints that refuse to resume another problem."""

import inspect
import os
import warnings

import numpy as np
import pytest
import torch
from sklearn.base import clone

from otgen import ConvergenceWarning, NotFittedError
from otgen._base import BaseEstimator
from otgen.transport import SemiDiscreteOT
from otgen.transport._dist import Local
from otgen.transport.semidiscrete import SolverState


@pytest.fixture(scope="module")
def fitted():
    Y = np.random.default_rng(3).normal(size=(25, 2))
    return SemiDiscreteOT(tol=0.05).fit(Y)


def _unconverged(Y, resume=False, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return SemiDiscreteOT(**kw).fit(Y, resume=resume)


# ----------------------------------------------------------------------------- parameters

def test_docstring_first_and_names_every_parameter_with_its_default():
    doc = SemiDiscreteOT.__doc__
    assert doc is not None and doc.startswith("Semi-discrete optimal transport solver")
    params = doc.split("Parameters\n    ----------")[1].split("Attributes\n")[0]
    for name in inspect.signature(SemiDiscreteOT.__init__).parameters:
        if name != "self":
            assert f"\n    {name} :" in params, name
    assert 'default "multiscale"' in params and "verbose : bool, default False" in params
    assert SemiDiscreteOT().verbose is False and SemiDiscreteOT().init == "multiscale"


def test_get_set_params_and_clone():
    sd = SemiDiscreteOT("ball", tol=0.05, dtype=torch.float64, seed=4, checkpoint="ck.pt")
    p = sd.get_params()
    assert p["source"] == "ball" and p["dtype"] is torch.float64 and p["seed"] == 4 and p["verbose"] is False
    assert set(p) == set(inspect.signature(SemiDiscreteOT.__init__).parameters) - {"self"}
    c = clone(sd)
    assert c is not sd and c.get_params() == p
    assert sd.set_params(max_iter=7, init="zero") is sd and sd.max_iter == 7 and sd.init == "zero"
    with pytest.raises(ValueError, match="invalid parameter"):
        sd.set_params(bogus=1)
    assert "source='ball'" in repr(sd) and "tol=0.05" in repr(sd)


def test_clone_of_a_fitted_solver_is_unfitted(fitted):
    c = clone(fitted)
    assert c.get_params() == fitted.get_params()
    with pytest.raises(NotFittedError):
        c.assign(np.zeros((1, 2)))


@pytest.mark.parametrize("use", [
    lambda sd, p: sd.assign(np.zeros((2, 2))),
    lambda sd, p: sd.transform(np.zeros((2, 2))),
    lambda sd, p: sd.potential(torch.zeros(2, 2)),
    lambda sd, p: sd.topk(np.zeros((2, 2))),
    lambda sd, p: sd.sample(4),
    lambda sd, p: sd.cell_masses(64),
    lambda sd, p: sd.save(p),
], ids=["assign", "transform", "potential", "topk", "sample", "cell_masses", "save"])
def test_not_fitted(use, tmp_path):
    with pytest.raises(NotFittedError, match="not fitted"):
        use(SemiDiscreteOT(), tmp_path / "x.pt")
    assert not (tmp_path / "x.pt").exists()
    assert issubclass(NotFittedError, ValueError) and issubclass(NotFittedError, AttributeError)


# ----------------------------------------------------------------------------- numpy in, numpy out

def test_numpy_in_numpy_out_torch_in_torch_out(fitted):
    Xn = np.random.default_rng(0).uniform(-1, 1, size=(50, 2)).astype(np.float32)
    Xt = torch.from_numpy(Xn)
    idx = fitted.assign(Xn)
    assert isinstance(idx, np.ndarray) and idx.dtype == np.int64 and idx.shape == (50,)
    np.testing.assert_array_equal(idx, fitted.assign(Xt).numpy())
    T = fitted.transform(Xn)
    assert isinstance(T, np.ndarray) and T.shape == (50, 2)
    np.testing.assert_array_equal(T, fitted.targets_.numpy()[idx])
    u = fitted.potential(Xn)
    assert isinstance(u, np.ndarray) and u.dtype == np.float64
    np.testing.assert_array_equal(u, fitted.potential(Xt).numpy())
    vals, top = fitted.topk(Xn, 3)
    assert isinstance(vals, np.ndarray) and isinstance(top, np.ndarray) and top.shape == (50, 3)
    np.testing.assert_array_equal(top[:, 0], idx)
    assert all(isinstance(o, torch.Tensor) for o in (fitted.assign(Xt), fitted.transform(Xt), *fitted.topk(Xt)))
    masses = fitted.cell_masses(2**12)
    assert isinstance(masses, np.ndarray) and masses.dtype == np.float64


def test_sample_returns_float32_points_and_cells():
    Y = np.random.default_rng(1).normal(size=(12, 3))
    sd = SemiDiscreteOT(tol=0.1, dtype=torch.float64, seed=5).fit(Y)
    pts = sd.sample(40)
    assert isinstance(pts, np.ndarray) and pts.dtype == np.float32 and pts.shape == (40, 3)
    pts2, info = sd.sample(40, seed=5, return_info=True)        # seed=None means self.seed
    np.testing.assert_array_equal(pts, pts2)
    assert set(info) == {"cells"} and info["cells"].dtype == np.int64 and info["cells"].shape == (40,)
    np.testing.assert_array_equal(pts2, Y[info["cells"]].astype(np.float32))
    with pytest.raises(ValueError, match="seed"):
        sd.sample(4, seed=-1)


# ----------------------------------------------------------------------------- files

def test_save_is_read_with_weights_only_and_keeps_settings(fitted, tmp_path):
    fitted.set_params(checkpoint=tmp_path / "unused.pt")        # a Path setting must still be readable
    try:
        fitted.save(tmp_path / "ot.pt")
    finally:
        fitted.set_params(checkpoint=None)
    payload = torch.load(tmp_path / "ot.pt", weights_only=True)
    assert payload["class"] == "SemiDiscreteOT" and payload["version"] == SemiDiscreteOT._SAVE_VERSION
    sd = SemiDiscreteOT.load(tmp_path / "ot.pt", device="cpu")
    assert sd.dtype is torch.float32 and sd.checkpoint == str(tmp_path / "unused.pt")
    assert torch.equal(sd.heights_, fitted.heights_) and sd.history_ == fitted.history_
    assert sd.result_.tv_error == fitted.result_.tv_error


def test_crafted_pickle_is_not_executed(tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    torch.save({"format": "otgen", "payload": Evil()}, tmp_path / "evil.pt")
    assert not marker.exists()
    with pytest.raises(ValueError, match="weights_only"):
        SemiDiscreteOT.load(tmp_path / "evil.pt")
    assert not marker.exists()


def test_corrupt_and_foreign_files_give_a_clear_error(fitted, tmp_path):
    (tmp_path / "junk.pt").write_bytes(os.urandom(300))
    with pytest.raises(ValueError, match="cannot be read"):
        SemiDiscreteOT.load(tmp_path / "junk.pt")
    fitted.save(tmp_path / "ot.pt")
    data = (tmp_path / "ot.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="cannot be read"):
        SemiDiscreteOT.load(tmp_path / "cut.pt")
    torch.save({"heights": torch.zeros(3)}, tmp_path / "foreign.pt")
    with pytest.raises(ValueError, match="not a file written"):
        SemiDiscreteOT.load(tmp_path / "foreign.pt")
    with pytest.raises(FileNotFoundError):
        SemiDiscreteOT.load(tmp_path / "missing.pt")


class Other(BaseEstimator):
    """Another estimator (for the wrong-class check).

    Parameters
    ----------
    a : int, default 1
    """

    _FITTED_ATTR = "b_"

    def __init__(self, a=1):
        self.a = a

    def _get_state(self):
        return {"b": self.b_}


def test_a_file_of_another_class_is_refused(tmp_path):
    other = Other()
    other.b_ = torch.ones(2)
    other.save(tmp_path / "other.pt")
    with pytest.raises(ValueError, match="holds a Other, not a SemiDiscreteOT"):
        SemiDiscreteOT.load(tmp_path / "other.pt")


def test_save_interrupted_mid_write_leaves_the_old_file(fitted, tmp_path, monkeypatch):
    path = tmp_path / "ot.pt"
    fitted.save(path)
    before = path.read_bytes()

    def broken_save(obj, f, *args, **kwargs):
        f.write(b"PARTIAL PICKLE")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        fitted.save(path)
    monkeypatch.undo()
    assert path.read_bytes() == before and os.listdir(tmp_path) == ["ot.pt"]    # no temporary left behind
    assert torch.equal(SemiDiscreteOT.load(path, "cpu").heights_, fitted.heights_)


# ----------------------------------------------------------------------------- checkpoints

def test_checkpoint_is_loadable_with_weights_only_and_holds_the_state(tmp_path, rng):
    Y = rng.normal(size=(40, 3))
    ck = tmp_path / "ck.pt"
    _unconverged(Y, tol=1e-4, max_iter=3, checkpoint=ck, checkpoint_every=1)
    payload = torch.load(ck, weights_only=True)
    assert payload["state"]["kind"] == "checkpoint"
    SolverState(**payload["state"]["solver"])                     # exactly the solver state's fields
    partial = SemiDiscreteOT.load(ck, "cpu")
    assert partial.n_iter_ == 3 and not partial.converged_ and partial.heights_.shape == (40,)
    assert partial.tol == 1e-4 and partial.max_iter == 3


def test_interrupted_checkpoint_write_keeps_the_last_good_checkpoint(tmp_path, rng, monkeypatch):
    Y = rng.normal(size=(40, 3))
    ck = tmp_path / "ck.pt"
    real_save, calls = torch.save, []

    def save_twice_then_fail(obj, f, *args, **kwargs):
        calls.append(1)
        if len(calls) > 2:
            f.write(b"PARTIAL")
            raise KeyboardInterrupt
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", save_twice_then_fail)
    with pytest.raises(KeyboardInterrupt):
        _unconverged(Y, tol=1e-4, max_iter=10, checkpoint=ck, checkpoint_every=1)
    monkeypatch.undo()
    assert SemiDiscreteOT.load(ck, "cpu").n_iter_ == 2 and os.listdir(tmp_path) == ["ck.pt"]


def test_step_by_step_equals_fit(rng):
    """``step`` is the whole iteration: driving it by hand reproduces ``fit``'s heights."""
    Y = rng.normal(size=(30, 2))
    sd = _unconverged(Y, tol=1e-4, max_iter=4, init="linear", method="stochastic")
    problem_sd = SemiDiscreteOT(tol=1e-4, max_iter=4, init="linear", method="stochastic")
    device = problem_sd._check_settings()
    nu = torch.full((30,), 1 / 30, dtype=torch.float64)
    setup = problem_sd._setup(torch.as_tensor(Y, dtype=torch.float64), nu)
    problem = problem_sd._problem(setup.merged.to(torch.float32), setup.merged_weights, Local(), device)
    state = SolverState(n_samples=2**16, heights=problem_sd._warm_start(problem, None))
    for _ in range(4):
        state = problem_sd.step(state, problem)
    h = state.accepted_heights                          # in the solve's frame: heights / scale
    torch.testing.assert_close(sd.heights_, setup.frame.scale * (h - h.mean()), atol=0, rtol=0)
    assert state.it == 4 and state.last["n_samples"] == sd.history_[-1]["n_samples"]
