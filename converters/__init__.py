"""Keras -> TFLite conversion in every quantization mode, with validation against the original.

TensorFlow is imported only when a conversion runs; running a .tflite lives in edgecompress.runner.
"""
from edgecompress.converters.convert import ConversionResult, convert_model, fixed_batch_function, flex_ops, to_tflite
from edgecompress.converters.modes import QUANTIZE_MODES
from edgecompress.converters.quantize import IO_TYPES
from edgecompress.converters.validate import Validation, validate

__all__ = [
    "IO_TYPES", "QUANTIZE_MODES", "ConversionResult", "Validation",
    "convert_model", "fixed_batch_function", "flex_ops", "to_tflite", "validate",
]
