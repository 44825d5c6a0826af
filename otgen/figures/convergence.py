"""Convergence of the semi-discrete solver: one fit's history (``otgen fit-ot --plot``), and TV error
against time for otgen and POT (the curves of ``benchmarks/bench_semidiscrete.py``).

One panel per problem size: the TV error ½ Σ |μ(W_i) − ν_i| of each solver's heights,
measured by the benchmark with its own independent points, against the wall time it took
to get them (log-log), with the target and the evaluation floor 0.4 sqrt(N / M_eval).
"""

from __future__ import annotations

import numpy as np

from otgen.figures._common import new_figure, save_figure

__all__ = ["convergence_figure", "history_curve", "history_figure", "draw_history"]


def history_curve(history) -> list:
    """``[[seconds, estimated TV, noise], ...]`` from a fitted ``SemiDiscreteOT.history_`` (accepted iterations)."""
    return [[e["time"], e["tv"], e["noise"]] for e in history if e["accepted"]]


def convergence_figure(problems, out_dir, name: str = "convergence") -> dict:
    """TV against seconds for otgen and POT, one panel per problem.

    Parameters
    ----------
    problems : list of dict
        As in ``semidiscrete.json``: ``N``, ``d``, ``target_tv``, ``eval_points``, and the
        curves ``otgen_curve`` / ``pot_curve`` of ``[seconds, TV, noise]`` rows.
    out_dir : str or path
    name : str, default "convergence"

    Returns
    -------
    dict
        The numbers drawn, with the paths of the PNG and JSON written.
    """
    fig, axes = new_figure(len(problems))
    numbers = {}
    for ax, prob in zip(axes, problems):
        key = f"{prob['N']}x{prob['d']}"
        numbers[key] = {}
        for label, curve, style in (("otgen", prob.get("otgen_curve"), "o-"), ("POT", prob.get("pot_curve"), "s--")):
            if not curve:
                continue
            c = np.asarray(curve, dtype=np.float64)
            ax.loglog(c[:, 0], c[:, 1], style, label=label, ms=4)
            numbers[key][label] = dict(seconds=c[:, 0].tolist(), tv=c[:, 1].tolist())
        ax.axhline(prob["target_tv"], color="k", lw=0.8, ls=":", label=f"target {prob['target_tv']}")
        floor = 0.4 * np.sqrt(prob["N"] / prob["eval_points"])
        ax.axhline(floor, color="0.6", lw=0.8, label=f"evaluation floor {floor:.3f}")
        ax.set(xlabel="seconds", ylabel="TV error (independent points)", title=f"N = {prob['N']}, d = {prob['d']}")
        ax.legend(fontsize=7)
        numbers[key].update(target_tv=prob["target_tv"], eval_floor=float(floor))
    return save_figure(fig, out_dir, name, numbers)


NOISE_FLOOR = 1e-6     # a zero noise (exact 2-D solves) is drawn here, so the log axis stays finite
HISTORY_AXES = {"iteration": "iter", "seconds": "time"}


def draw_history(ax, history, *, tol: float, x: str = "iteration") -> dict:
    """Draw one fit's estimated TV error and its noise on ``ax`` against ``x`` ("iteration" or
    "seconds"), with the tolerance dotted. Returns the numbers drawn: ``x``, ``tv``, ``noise``, ``tol``."""
    if x not in HISTORY_AXES:
        raise ValueError(f"x must be one of {sorted(HISTORY_AXES)}, got {x!r}")
    xs = np.array([e.get(HISTORY_AXES[x], np.nan) for e in history], dtype=np.float64)
    tv = np.array([e["tv"] for e in history], dtype=np.float64)
    noise = np.array([e.get("noise", 0.0) for e in history], dtype=np.float64)
    ax.semilogy(xs, tv, "o-", ms=3, label="estimated TV error")
    if noise.any():
        ax.semilogy(xs, np.maximum(noise, NOISE_FLOOR), "--", label="noise of the estimate")
    ax.axhline(tol, color="k", ls=":", lw=0.8, label=f"tol {tol}")
    ax.set(xlabel=x, ylabel="total-variation error")
    ax.legend(fontsize=7)
    return dict(x=xs.tolist(), tv=tv.tolist(), noise=noise.tolist(), tol=tol)


def history_figure(history, out_dir, name: str = "convergence", *, tol: float) -> dict:
    """One fit's estimated TV error and the noise of that estimate, against iteration and against
    seconds (``SemiDiscreteOT.history_``): where the solve stalled, and whether the estimate was still
    above its own noise when it stopped.

    Parameters
    ----------
    history : list of dict
        ``SemiDiscreteOT.history_`` (``iter``, ``tv``, ``noise``, ``time`` per iteration).
    out_dir : str or path
    name : str, default "convergence"
    tol : float
        The fit's tolerance (a dotted line).

    Returns
    -------
    dict
        ``iter``, ``seconds``, ``tv``, ``noise``, ``tol``, with the paths of the PNG and JSON written.
    """
    if not len(history):
        raise ValueError("history is empty: the fit ran no iteration, so there is no convergence to draw")
    fig, axes = new_figure(2)
    by_iter = draw_history(axes[0], history, tol=tol, x="iteration")
    by_time = draw_history(axes[1], history, tol=tol, x="seconds")
    axes[0].set_title(f"{len(history)} iterations", fontsize=9)
    numbers = dict(iter=by_iter["x"], seconds=by_time["x"], tv=by_iter["tv"], noise=by_iter["noise"], tol=tol)
    return save_figure(fig, out_dir, name, numbers)
