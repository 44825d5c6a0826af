"""Matplotlib figures, each written as PNG + JSON of the numbers behind it.

A figure function takes fitted objects or an experiment's results and draws; it never fits.
``otgen figure NAME`` runs the experiment stages a figure needs, then draws it.
"""

from otgen.figures.demo import categorical_colours, demo_figure
from otgen.figures.mnist_mode_mixture import comparison_figures as mnist_comparison_figures
from otgen.figures.mnist_mode_mixture import image_grid, mixed_mask, mnist_mode_mixture_figure
from otgen.figures.mode_mixture_2d import mode_mixture_2d_figure
from otgen.figures.singular_set import detector_precision_recall, singular_set_figure
from otgen.figures.video_critical_states import comparison_figures as video_comparison_figures
from otgen.figures.video_critical_states import filmstrip, latent_map, video_critical_states_figure

__all__ = ["demo_figure", "categorical_colours", "mnist_mode_mixture_figure", "mnist_comparison_figures", "image_grid", "mixed_mask", "singular_set_figure",
           "detector_precision_recall", "mode_mixture_2d_figure", "video_critical_states_figure",
           "video_comparison_figures", "filmstrip", "latent_map"]
