"""Serving ONNX models over HTTP: MLflow's scoring protocol and our own, on onnxruntime."""
