"""Keras -> TFLite conversion in every quantization mode, with validation against the original.

The .tflite side (runner) needs no TensorFlow; convert imports it only when called.
"""
from .convert import ConversionResult, convert_model, fixed_batch_function, flex_ops, to_tflite
from .quantize import IO_TYPES, QUANTIZE_MODES
from .runner import TFLiteRunner
from .validate import Validation, validate

__all__ = [
    "IO_TYPES", "QUANTIZE_MODES", "ConversionResult", "TFLiteRunner", "Validation",
    "convert_model", "fixed_batch_function", "flex_ops", "to_tflite", "validate",
]
