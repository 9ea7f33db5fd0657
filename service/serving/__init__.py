"""Serving: repository scan, model checks, onnxruntime sessions, batching, admission, the registry of
loaded versions, inference end to end and Triton's statistics. Imports protocol, ops, errors, settings.
"""
