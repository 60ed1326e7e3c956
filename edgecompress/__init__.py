"""edgecompress: compress Keras models, export them to TFLite, and know how they run on edge devices.

The CLI (edgecompress.cli) is a thin shell over the functions in these modules; nothing at this level
imports TensorFlow, so the runtime-only install (numpy, click, ai-edge-litert) can import the package.
"""
__version__ = "0.1.0"
