"""The otgen command: help, exit codes, demo, fit-ot's checks, compare options from the settings."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

import otgen
from otgen.cli import main
from otgen.experiments import mnist, video
from otgen.transport import SemiDiscreteOT


def test_help_version_and_no_command(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0 and otgen.__version__ in capsys.readouterr().out
    assert main([]) == 2                                         # no command is a usage error
    assert "demo" in capsys.readouterr().err


def test_python_dash_m_otgen(tmp_path):
    """``python -m otgen`` is the CLI (what ``torchrun -m otgen`` runs); errors exit 2."""
    r = subprocess.run([sys.executable, "-m", "otgen", "--version"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and otgen.__version__ in r.stdout
    np.save(tmp_path / "bad.npy", np.zeros(5))
    r = subprocess.run([sys.executable, "-m", "otgen", "fit-ot", str(tmp_path / "bad.npy"), "--out",
                        str(tmp_path / "x.pt")], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "fit-ot: error" in r.stderr
    r = subprocess.run([sys.executable, "-m", "otgen"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2


def test_demo_writes_png_and_json(tmp_path):
    assert main(["demo", "--out", str(tmp_path), "--n-targets", "100", "--n-samples", "200", "--tol", "0.03",
                 "--quiet"]) == 0
    summary = json.loads((tmp_path / "demo.json").read_text())
    assert (tmp_path / "demo.png").read_bytes()[:4] == b"\x89PNG"
    assert summary["converged"] and summary["tv_exact"] < 0.05 and summary["n_targets"] == 100


@pytest.fixture
def codes(tmp_path, rng):
    path = tmp_path / "codes.npy"
    np.save(path, rng.normal(size=(50, 3)))
    return path


def test_fit_ot_round_trip(tmp_path, codes):
    out = tmp_path / "pot.pt"
    assert main(["fit-ot", str(codes), "--out", str(out), "--tol", "0.05", "--quiet"]) == 0
    sd = SemiDiscreteOT.load(out, device="cpu")
    assert sd.heights_.shape == (50,) and sd.converged_
    assert not (tmp_path / "pot_convergence.png").exists()          # drawn only when asked


def test_fit_ot_plot_draws_the_history(tmp_path, codes):
    out = tmp_path / "pot.pt"
    assert main(["fit-ot", str(codes), "--out", str(out), "--tol", "0.05", "--plot", "--quiet"]) == 0
    sd = SemiDiscreteOT.load(out, device="cpu")
    js = json.loads((tmp_path / "pot_convergence.json").read_text())
    assert (tmp_path / "pot_convergence.png").read_bytes()[:4] == b"\x89PNG"
    assert js["tv"] == [e["tv"] for e in sd.history_] and js["tol"] == 0.05
    assert len(js["noise"]) == len(js["seconds"]) == sd.n_iter_


def test_fit_ot_bad_input(tmp_path, capsys):
    np.save(tmp_path / "bad.npy", np.zeros(5))
    assert main(["fit-ot", str(tmp_path / "bad.npy"), "--out", str(tmp_path / "x.pt"), "--quiet"]) == 2
    assert "shape (N, d)" in capsys.readouterr().err
    assert main(["fit-ot", str(tmp_path / "missing.npy"), "--out", str(tmp_path / "x.pt")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_fit_ot_checks_out_before_fitting(tmp_path, codes, capsys, monkeypatch):
    fitted = []
    monkeypatch.setattr(SemiDiscreteOT, "fit", lambda self, *a, **kw: fitted.append(1) or self)
    before = codes.read_bytes()
    assert main(["fit-ot", str(codes), "--out", str(codes), "--quiet"]) == 2        # the input itself
    assert "input file" in capsys.readouterr().err and codes.read_bytes() == before
    assert main(["fit-ot", str(codes), "--out", str(tmp_path), "--quiet"]) == 2      # a folder
    assert "folder" in capsys.readouterr().err
    assert main(["fit-ot", str(codes), "--out", str(tmp_path / "no" / "x.pt"), "--quiet"]) == 2
    assert "does not exist" in capsys.readouterr().err
    if os.geteuid() != 0:                                                              # root writes anywhere
        ro = tmp_path / "ro"
        ro.mkdir(mode=0o500)
        assert main(["fit-ot", str(codes), "--out", str(ro / "x.pt"), "--quiet"]) == 2
    assert not fitted


def test_fit_ot_unconverged_exits_1_unless_allowed(tmp_path, codes, capsys):
    args = ["fit-ot", str(codes), "--out", str(tmp_path / "p.pt"), "--tol", "1e-4", "--max-iter", "2", "--quiet"]
    assert main(args) == 1
    assert "not converged" in capsys.readouterr().err and (tmp_path / "p.pt").exists()
    assert main(args + ["--allow-unconverged"]) == 0


def test_ctrl_c_ends_with_one_line_and_keeps_the_checkpoint(tmp_path, codes, capsys, monkeypatch):
    real_fit = SemiDiscreteOT.fit

    def interrupted(self, *a, **kw):
        self.max_iter = 2
        real_fit(self, *a, **kw)                       # writes OUT.ckpt, then the user presses Ctrl-C
        raise KeyboardInterrupt

    monkeypatch.setattr(SemiDiscreteOT, "fit", interrupted)
    out = tmp_path / "p.pt"
    code = main(["fit-ot", str(codes), "--out", str(out), "--resume", "--checkpoint-every", "1", "--quiet"])
    err = capsys.readouterr().err
    assert code == 130 and err.count("\n") == 1 and "interrupted" in err and "p.pt.ckpt" in err
    assert SemiDiscreteOT.load(str(out) + ".ckpt").n_iter_ >= 1


def test_compare_options_come_from_the_settings(monkeypatch, tmp_path):
    seen = {}
    monkeypatch.setattr(mnist, "run", lambda s, out, **kw: seen.update(settings=s, out=out) or (_ for _ in ()).throw(
        ValueError("stop here")))
    assert main(["compare", "mnist", "--quiet"]) == 2 and seen["settings"] == mnist.MNISTSettings()
    assert seen["out"] == "otgen-out/compare-mnist"
    assert main(["compare", "mnist", "--quiet", "--n-samples", "50", "--angle-quantile", "0.7", "--blend-rule",
                 "facet", "--taus", "0.2", "0.3", "--tau", "0.2", "--out", str(tmp_path)]) == 2
    s = seen["settings"]
    assert (s.n_samples, s.angle_quantile, s.blend_rule, s.taus) == (50, 0.7, "facet", (0.2, 0.3))
    monkeypatch.setattr(video, "run", lambda s, out, **kw: seen.update(settings=s, out=out) or (_ for _ in ()).throw(
        ValueError("stop here")))
    assert main(["compare", "video", "--quiet"]) == 2
    assert seen["settings"] == video.VideoSettings() and seen["out"] == "otgen-out/compare-video-bistable"
    assert main(["compare", "video", "--clips", "moving-digits", "--angle-threshold", "0.4", "--quiet"]) == 2
    assert seen["settings"].dataset == "moving-digits" and seen["settings"].angle_threshold == 0.4


@pytest.mark.skipif(not __import__("torch").set_flush_denormal(False), reason="this CPU cannot flush subnormal floats")
def test_a_command_runs_with_subnormals_flushed_and_restores_the_mode(monkeypatch):
    from otgen._base import denormals_flushed
    seen, before = [], denormals_flushed()
    monkeypatch.setattr(video, "run", lambda s, out, **kw: seen.append(denormals_flushed()) or (_ for _ in ()).throw(
        ValueError("stop here")))
    assert main(["compare", "video", "--quiet"]) == 2
    assert seen == [True] and denormals_flushed() == before


def test_options_that_do_not_apply_are_refused(capsys):
    for argv in (["compare", "mnist", "--clips", "bistable"], ["compare", "video", "--latent-dim", "8"],
                 ["compare", "video", "--data-dir", "x"], ["compare", "video", "--clf-epochs", "3"],
                 ["compare", "bistable"], ["figure", "singular-set", "--latent-dim", "2"]):
        with pytest.raises(SystemExit) as e:
            main(argv)
        assert e.value.code == 2, argv
    capsys.readouterr()


def test_bad_settings_are_usage_errors(capsys):
    assert main(["compare", "mnist", "--taus", "0.1", "0.3", "--quiet"]) == 2
    assert "tau" in capsys.readouterr().err
    assert main(["compare", "video", "--angle-threshold", "0.4", "--angle-quantile", "0.5", "--quiet"]) == 2
    assert "not both" in capsys.readouterr().err


def test_help_shows_defaults_from_the_settings(capsys):
    with pytest.raises(SystemExit):
        main(["compare", "mnist", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--diffusion-steps" in text and "(default: 10000)" in text and "--latent-dim" in text
