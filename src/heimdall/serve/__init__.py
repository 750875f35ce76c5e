"""The inference service: FastAPI + one ONNX Runtime session. Nothing here imports torch."""
