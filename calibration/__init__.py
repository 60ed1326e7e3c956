"""Calibration and evaluation data: .npy, .npz and image folders, checked against a model's inputs
and streamed sample by sample (no TensorFlow here)."""
from edgecompress.calibration.dataset import SampleSet, load_samples
from edgecompress.calibration.sources import IMAGE_SCALES, Source, open_source, select_indices
from edgecompress.calibration.stats import InputStats

__all__ = ["IMAGE_SCALES", "InputStats", "SampleSet", "Source", "load_samples", "open_source", "select_indices"]
