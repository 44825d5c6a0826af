"""Resume you can trust: a checkpoint is read before any warm start and refused, naming the file and
what differs, unless it belongs to the same targets, weights, source, dtype and solution-changing
settings; ``otgen fit-ot --restart`` starts afresh."""

import warnings

import numpy as np
import pytest
import torch

from otgen import ConvergenceWarning
from otgen.cli import main
from otgen.transport import SemiDiscreteOT


def _run(Y, weights=None, resume=False, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return SemiDiscreteOT(**kw).fit(Y, weights, resume=resume)


@pytest.fixture
def problem(rng):
    return rng.normal(size=(40, 3))


@pytest.fixture
def checkpoint(tmp_path, problem):
    ck = tmp_path / "ck.pt"
    _run(problem, tol=1e-4, max_iter=1, checkpoint=ck)
    return ck


@pytest.mark.parametrize("change, match", [
    (dict(source="ball"), "source='ball' here, source='uniform' in the checkpoint"),
    (dict(seed=1), "seed=1 here, seed=0 in the checkpoint"),
    (dict(dtype=torch.float64), "dtype='float64' here, dtype='float32' in the checkpoint"),
    (dict(qmc=False), "qmc=False here, qmc=True in the checkpoint"),
])
def test_other_settings_are_refused_saying_what_differs(problem, checkpoint, change, match):
    with pytest.raises(ValueError, match=f"{checkpoint}.*{match}.*refusing to resume.*--restart"):
        SemiDiscreteOT(tol=1e-4, checkpoint=checkpoint, **change).fit(problem, resume=True)
    # raising max_iter or tol continues the same problem
    assert _run(problem, resume=True, tol=1e-3, max_iter=2, checkpoint=checkpoint).n_iter_ == 2


@pytest.mark.parametrize("change", ["reversed weights", "one target moved by 1 ulp", "permuted targets"])
def test_other_data_with_the_same_summary_is_refused(problem, tmp_path, change):
    """The old fingerprint (shape, sums, sum of squares, Σν²) let each of these through."""
    nu = np.linspace(1, 2, len(problem))
    nu /= nu.sum()
    ck = tmp_path / "ck.pt"
    _run(problem, nu, tol=1e-4, max_iter=1, checkpoint=ck)
    Y2, nu2 = problem.copy(), nu.copy()
    if change == "reversed weights":
        nu2 = nu[::-1].copy()
    elif change == "permuted targets":
        Y2, nu2 = problem[::-1].copy(), nu[::-1].copy()
    else:
        Y2[3, 1] = np.nextafter(Y2[3, 1], np.inf)
    with pytest.raises(ValueError, match="targets or weights differ.*refusing to resume"):
        SemiDiscreteOT(tol=1e-4, checkpoint=ck).fit(Y2, nu2, resume=True)


@pytest.mark.parametrize("content", [b"", b"not a checkpoint at all", b"PK\x03\x04 truncated zip"])
def test_a_corrupt_checkpoint_is_a_clear_error_naming_the_file(problem, tmp_path, content):
    ck = tmp_path / "bad.pt"
    ck.write_bytes(content)
    with pytest.raises(ValueError, match=f"cannot resume from checkpoint {ck}.*--restart"):
        SemiDiscreteOT(checkpoint=ck).fit(problem, resume=True)


def test_a_checkpoint_without_fingerprint_is_refused(problem, checkpoint):
    payload = torch.load(checkpoint, weights_only=True)
    del payload["state"]["fingerprint"]
    torch.save(payload, checkpoint)
    with pytest.raises(ValueError, match=f"{checkpoint} has no fingerprint.*--restart"):
        SemiDiscreteOT(checkpoint=checkpoint).fit(problem, resume=True)


def test_a_finished_fit_is_not_a_checkpoint(problem, tmp_path):
    fitted = _run(problem, tol=0.05)
    fitted.save(tmp_path / "ot.pt")
    with pytest.raises(ValueError, match="not a checkpoint"):
        SemiDiscreteOT(tol=0.05, checkpoint=tmp_path / "ot.pt").fit(problem, resume=True)


def test_the_checkpoint_is_read_before_the_warm_start(problem, checkpoint, monkeypatch):
    def no_warm_start(*a, **kw):
        raise AssertionError("the warm start ran although the checkpoint has heights")

    monkeypatch.setattr(SemiDiscreteOT, "_warm_start", no_warm_start)
    assert _run(problem, resume=True, tol=1e-4, max_iter=2, checkpoint=checkpoint).n_iter_ == 2
    monkeypatch.undo()
    (checkpoint.parent / "junk.pt").write_bytes(b"junk")
    monkeypatch.setattr(SemiDiscreteOT, "_warm_start", no_warm_start)
    with pytest.raises(ValueError, match="cannot resume"):      # refused before any warm start is computed
        SemiDiscreteOT(checkpoint=checkpoint.parent / "junk.pt").fit(problem, resume=True)


# ----------------------------------------------------------------------------- otgen fit-ot

@pytest.fixture
def codes(tmp_path, problem):
    path = tmp_path / "codes.npy"
    np.save(path, problem)
    return path


def test_fit_ot_refuses_a_changed_source_and_restart_starts_afresh(tmp_path, codes, capsys):
    out = tmp_path / "r.pt"
    base = ["fit-ot", str(codes), "--out", str(out), "--max-iter", "1", "--tol", "1e-4", "--allow-unconverged",
            "--quiet"]
    assert main(base + ["--resume"]) == 0 and (tmp_path / "r.pt.ckpt").exists()
    capsys.readouterr()
    assert main(base + ["--resume", "--source", "gaussian"]) == 2
    err = capsys.readouterr().err
    assert "r.pt.ckpt" in err and "source='gaussian' here, source='uniform' in the checkpoint" in err
    assert "--restart" in err
    assert main(base + ["--restart", "--source", "gaussian", "--max-iter", "2"]) == 0
    ot = SemiDiscreteOT.load(str(out) + ".ckpt")
    assert ot.source == "gaussian" and ot.n_iter_ == 2
    assert main(base + ["--resume", "--source", "gaussian", "--max-iter", "3"]) == 0   # now resumes the new run
    assert SemiDiscreteOT.load(out).n_iter_ == 3
