"""Export: fitted pipelines to ONNX, proven equal to the native model before they may ship."""
