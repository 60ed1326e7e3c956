"""Measuring on the device itself: over SSH (the device runs edgecompress's own harness) and over adb
(TFLite's benchmark_model on an Android phone). Runtime side only: nothing here imports TensorFlow.
"""
