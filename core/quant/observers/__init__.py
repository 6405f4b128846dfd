"""Calibration observers: registered plugins, one file each (minmax, percentile, entropy, mse) over
the shared histogram (histogram.py); :func:`build_observer` makes one from the recipe's settings."""

from slimkit.quant.observers.base import OBSERVERS, Range, build_observer, make_observer
from slimkit.quant.observers.minmax import MinMaxObserver
from slimkit.quant.observers.histogram import HistogramObserver, HistogramOptions
from slimkit.quant.observers.percentile import PercentileObserver
from slimkit.quant.observers.entropy import EntropyObserver, kl_threshold_index
from slimkit.quant.observers.mse import MSEObserver, MSEOptions

__all__ = ["OBSERVERS", "EntropyObserver", "HistogramObserver", "HistogramOptions", "MSEObserver", "MSEOptions",
           "MinMaxObserver", "PercentileObserver", "Range", "build_observer", "kl_threshold_index", "make_observer"]
