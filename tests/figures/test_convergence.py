"""The TV-against-time figure draws what it is given and writes the numbers beside the PNG."""

import json

import pytest

from otgen.figures._common import new_figure
from otgen.figures.convergence import convergence_figure, draw_history, history_curve, history_figure


def test_convergence_figure_writes_png_and_numbers(tmp_path):
    problems = [dict(N=100, d=4, target_tv=0.02, eval_points=2**20,
                     otgen_curve=[[0.5, 0.3, 0.01], [2.0, 0.015, 0.005]],
                     pot_curve=[[1.0, 0.4, 0.01], [8.0, 0.05, 0.01]]),
                dict(N=200, d=8, target_tv=0.02, eval_points=2**20, otgen_curve=[[1.0, 0.2, 0.01]], pot_curve=[])]
    out = convergence_figure(problems, tmp_path, "conv")
    assert (tmp_path / "conv.png").stat().st_size > 0
    numbers = json.loads((tmp_path / "conv.json").read_text())
    assert numbers["100x4"]["POT"]["tv"] == [0.4, 0.05] and "POT" not in numbers["200x8"]
    assert abs(numbers["100x4"]["eval_floor"] - 0.4 * (100 / 2**20) ** 0.5) < 1e-12
    assert out["png"].endswith("conv.png")


def test_history_curve_keeps_accepted_iterations():
    hist = [dict(time=1.0, tv=0.3, noise=0.01, accepted=True), dict(time=2.0, tv=0.5, noise=0.01, accepted=False),
            dict(time=3.0, tv=0.1, noise=0.01, accepted=True)]
    assert history_curve(hist) == [[1.0, 0.3, 0.01], [3.0, 0.1, 0.01]]


def test_history_figure_refuses_an_empty_history(tmp_path):
    with pytest.raises(ValueError, match="history is empty"):
        history_figure([], tmp_path, tol=0.1)


def test_draw_history_names_its_axes(tmp_path):
    fig, axes = new_figure(1)
    history = [dict(iter=1, tv=0.3, noise=0.01, time=0.5), dict(iter=2, tv=0.05, noise=0.0, time=1.0)]
    drawn = draw_history(axes[0], history, tol=0.1, x="seconds")
    assert drawn["x"] == [0.5, 1.0] and drawn["tv"] == [0.3, 0.05] and drawn["tol"] == 0.1
    with pytest.raises(ValueError, match="x must be one of"):
        draw_history(axes[0], history, tol=0.1, x="steps")
