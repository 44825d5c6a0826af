"""Matplotlib figures (Agg), each written as PNG + JSON of the numbers behind it."""

from otgen.figures.mnist_mode_mixture import mnist_mode_mixture_figure
from otgen.figures.mode_mixture_2d import mode_mixture_2d_figure, off_support_rate
from otgen.figures.singular_set import detector_precision_recall, singular_set_figure
from otgen.figures.video_critical_states import video_critical_states_figure

__all__ = ["mnist_mode_mixture_figure", "singular_set_figure", "detector_precision_recall", "mode_mixture_2d_figure",
           "off_support_rate", "video_critical_states_figure"]
