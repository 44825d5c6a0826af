"""The estimator contract of otgen._base: parameters, clone, NotFittedError, safe atomic files, seeds."""

import os
import pickle

import numpy as np
import pytest
import sklearn.base
import torch

from otgen import NotFittedError
from otgen._base import BaseEstimator, atomic_torch_save, check_seed, denormals_flushed, flush_denormals, spawn_seed


class Toy(BaseEstimator):
    """A toy estimator.

    Parameters
    ----------
    alpha : float, default 1.0
    inner : Toy or None
    """

    _FITTED_ATTR = "coef_"

    def __init__(self, alpha=1.0, inner=None):
        self.alpha = alpha
        self.inner = inner

    def fit(self, x):
        self.coef_ = np.asarray(x, dtype=np.float64) * self.alpha
        return self

    def predict(self):
        self._check_fitted()
        return self.coef_

    def _get_state(self):
        return {"coef": self.coef_, "names": np.array(["a", "b"]), "n": np.int64(3)}

    def _set_state(self, state, device=None):
        self.coef_ = state["coef"]
        self.names_ = state["names"]


class Other(Toy):
    """Another toy.

    Parameters
    ----------
    alpha : float, default 1.0
    inner : Toy or None
    """


def test_params_clone_and_repr():
    est = Toy(alpha=2.0, inner=Toy(alpha=3.0))
    assert est.get_params(deep=False) == {"alpha": 2.0, "inner": est.inner}
    assert est.get_params()["inner__alpha"] == 3.0
    twin = sklearn.base.clone(est)
    assert twin is not est and twin.alpha == 2.0 and twin.inner.alpha == 3.0 and twin.inner is not est.inner
    est.set_params(alpha=5.0, inner__alpha=7.0)
    assert est.alpha == 5.0 and est.inner.alpha == 7.0
    with pytest.raises(ValueError, match="invalid parameter 'beta'"):
        est.set_params(beta=1)
    assert repr(Toy()) == "Toy()" and repr(Toy(alpha=2.0)) == "Toy(alpha=2.0)"


def test_not_fitted_is_value_and_attribute_error():
    with pytest.raises(NotFittedError, match="not fitted"):
        Toy().predict()
    assert issubclass(NotFittedError, ValueError) and issubclass(NotFittedError, AttributeError)
    with pytest.raises(NotFittedError):
        Toy().save("never-written.pt")
    assert not os.path.exists("never-written.pt")


def test_save_load_round_trip_and_refusals(tmp_path):
    path = tmp_path / "toy.pt"
    Toy(alpha=2.0).fit([1.0, 2.0]).save(path)
    back = Toy.load(path)
    assert back.alpha == 2.0 and np.array_equal(back.predict(), [2.0, 4.0]) and list(back.names_) == ["a", "b"]
    with pytest.raises(ValueError, match="holds a Toy, not a Other"):
        Other.load(path)
    payload = torch.load(path, weights_only=True)
    payload["version"] = 99
    torch.save(payload, path)
    with pytest.raises(ValueError, match="version 99"):
        Toy.load(path)
    (tmp_path / "junk.pt").write_bytes(b"not a torch file")
    with pytest.raises(ValueError, match="cannot be read"):
        Toy.load(tmp_path / "junk.pt")
    with pytest.raises(FileNotFoundError):
        Toy.load(tmp_path / "missing.pt")


class _Payload:
    """Unpickling this writes a marker file: loading it must never run it."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_a_crafted_pickle_is_not_executed(tmp_path):
    marker = tmp_path / "ran"
    path = tmp_path / "evil.pt"
    torch.save({"format": "otgen", "class": "Toy", "version": 1, "params": {}, "state": _Payload(str(marker))}, path)
    with pytest.raises(ValueError, match="weights_only"):
        Toy.load(path)
    assert not marker.exists()
    pickle.loads(pickle.dumps(_Payload(str(marker))))    # the payload is real: plain unpickling runs it
    assert marker.exists()


def test_an_interrupted_save_keeps_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "toy.pt"
    Toy(alpha=2.0).fit([1.0]).save(path)

    def dies_half_way(obj, f, *a, **kw):
        f.write(b"partial bytes")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", dies_half_way)
    with pytest.raises(KeyboardInterrupt):
        Toy(alpha=9.0).fit([1.0]).save(path)
    monkeypatch.undo()
    assert Toy.load(path).alpha == 2.0
    assert [p.name for p in tmp_path.iterdir()] == ["toy.pt"]        # no temporary file left behind


def test_atomic_save_replaces(tmp_path):
    atomic_torch_save({"a": 1}, tmp_path / "x.pt")
    atomic_torch_save({"a": 2}, tmp_path / "x.pt")
    assert torch.load(tmp_path / "x.pt", weights_only=True) == {"a": 2}


def test_seeds():
    assert check_seed(3) == 3
    for bad, exc in ((-1, ValueError), (1.5, TypeError), (True, TypeError), ("1", TypeError)):
        with pytest.raises(exc):
            check_seed(bad)
    a, b, c = spawn_seed(0, "x"), spawn_seed(0, "x"), spawn_seed(0, "y")
    assert a == b != c and spawn_seed(1, "x") != a and spawn_seed(0, "x", 1) != spawn_seed(0, "x", 2)
    assert all(0 <= s < 2**63 for s in (a, c))
    # streams from spawned seeds are not correlated like offset seeds could be
    u = np.random.default_rng(spawn_seed(0, "x")).random(10000)
    v = np.random.default_rng(spawn_seed(0, "y")).random(10000)
    assert abs(np.corrcoef(u, v)[0, 1]) < 0.05


#: The CPU can flush subnormals (x86 with SSE3, recent ARM); elsewhere flush_denormals changes nothing.
_CAN_FLUSH = torch.set_flush_denormal(False)


@pytest.mark.skipif(not _CAN_FLUSH, reason="this CPU cannot flush subnormal floats")
def test_flush_denormals_flushes_inside_and_restores_after():
    subnormal = torch.tensor([1e-40], dtype=torch.float32)
    torch.set_flush_denormal(False)                    # a known start, whatever ran before in this process
    assert float(subnormal * 1.0) > 0 and not denormals_flushed()
    with flush_denormals():
        assert denormals_flushed() and float(subnormal * 1.0) == 0.0
        with flush_denormals():
            pass
        assert denormals_flushed()                     # a nested block keeps the outer mode
    assert not denormals_flushed() and float(subnormal * 1.0) > 0
    with pytest.raises(RuntimeError), flush_denormals():
        raise RuntimeError("inside")
    assert not denormals_flushed()                     # restored after an error too

    @flush_denormals()
    def probe():
        return denormals_flushed()
    assert probe() and not denormals_flushed()
