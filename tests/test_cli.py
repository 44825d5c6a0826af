"""The otgen command: help, version, demo, fit-ot, figure, and clear errors."""

import json

import numpy as np
import pytest

import otgen
from otgen.cli import main
from otgen.transport import SemiDiscreteOT


def test_help_and_version(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0 and otgen.__version__ in capsys.readouterr().out
    assert main([]) == 0
    assert "demo" in capsys.readouterr().out


def test_python_dash_m_otgen(tmp_path):
    """``python -m otgen`` is the CLI (what ``torchrun -m otgen`` runs); errors exit 2."""
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-m", "otgen", "--version"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and otgen.__version__ in r.stdout
    np.save(tmp_path / "bad.npy", np.zeros(5))
    r = subprocess.run([sys.executable, "-m", "otgen", "fit-ot", str(tmp_path / "bad.npy"), "--out",
                        str(tmp_path / "x.pt")], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "fit-ot: error" in r.stderr


def test_demo_writes_png_and_json(tmp_path):
    assert main(["demo", "--out", str(tmp_path), "--n-targets", "100", "--n-samples", "200", "--tol", "0.03",
                 "--quiet"]) == 0
    summary = json.loads((tmp_path / "demo.json").read_text())
    assert (tmp_path / "demo.png").read_bytes()[:4] == b"\x89PNG"
    assert summary["converged"] and summary["tv_exact"] < 0.05 and summary["n_targets"] == 100


def test_fit_ot_round_trip(tmp_path):
    Y = np.random.default_rng(0).normal(size=(50, 3))
    np.save(tmp_path / "codes.npy", Y)
    out = tmp_path / "pot.pt"
    assert main(["fit-ot", str(tmp_path / "codes.npy"), "--out", str(out), "--tol", "0.05", "--quiet"]) == 0
    sd = SemiDiscreteOT.load(out, device="cpu")
    assert sd.heights_.shape == (50,) and sd.converged_


def test_fit_ot_bad_input(tmp_path, capsys):
    np.save(tmp_path / "bad.npy", np.zeros(5))
    assert main(["fit-ot", str(tmp_path / "bad.npy"), "--out", str(tmp_path / "x.pt"), "--quiet"]) == 2
    assert "shape (N, d)" in capsys.readouterr().err
    with pytest.raises(SystemExit, match="does not exist"):
        main(["fit-ot", str(tmp_path / "missing.npy"), "--out", str(tmp_path / "x.pt")])
