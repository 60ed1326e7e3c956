"""Measuring .tflite files the way TFLite's benchmark_model does, each model in its own child process.

Runtime side only: nothing here imports TensorFlow.
"""
from edgecompress.measure.harness import Measurement, MeasureOptions, measure
from edgecompress.measure.stats import LatencyStats, latency_stats

__all__ = ["Measurement", "MeasureOptions", "measure", "LatencyStats", "latency_stats"]
