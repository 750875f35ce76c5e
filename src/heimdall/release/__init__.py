"""Release: a calibrated checkpoint → a validated ONNX file → the model store (folder or S3) → the MLflow registry,
and reading published models back (docs/MODELS.md)."""

MODEL_NAME = "heimdall-localizer"  # the name models are stored and registered under unless told otherwise
CHAMPION = "champion"  # the registry alias of the model to serve
CHALLENGER = "challenger"  # the alias of a registered model that did not beat the champion
