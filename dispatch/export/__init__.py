"""Deployment of trained students: ONNX export with parity and speed checks, streaming, model cards."""
