"""Every exception type of Heimdall, one per failure kind; messages name the file/field, what was found and what
was expected. Each declares the HTTP status that answers it (`http_status`), so the service maps an error to its
answer by lookup."""

from __future__ import annotations

from typing import Any


class HeimdallError(Exception):
    """Base class of every error Heimdall reports to a user (the CLI prints these without a traceback)."""

    http_status = 500


class ScenarioError(HeimdallError):
    """A scenario file or value is invalid."""

    http_status = 422


class ConfigError(HeimdallError):
    """A training configuration file or value is invalid."""

    http_status = 422


class DatasetError(HeimdallError):
    """A training store is missing, corrupt or inconsistent."""

    http_status = 422


class NothingImported(DatasetError):
    """No collection could be imported; `summary` (an ImportSummary) says why for each."""

    def __init__(self, message: str, summary: Any) -> None:
        super().__init__(message)
        self.summary = summary


class FeatureError(HeimdallError):
    """IQ given to the feature extractor does not fit its parameters."""

    http_status = 422


class RecordingError(HeimdallError):
    """A SigMF recording or collection is invalid; names the file and the field."""

    http_status = 422

    def __init__(self, path: object, field: str, message: str) -> None:
        super().__init__(f"{path}: {field}: {message}")
        self.path = str(path)
        self.field = field
        self.message = message


class ConformError(HeimdallError):
    """A recording cannot give a feature window; `field` is the SigMF field at fault (the caller adds the file)."""

    http_status = 422

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


class ReceiverError(HeimdallError):
    """A recording's or request's receiver contradicts the receiver table or another receiver; `field` names where
    the receiver was given, `claim` which of the receivers claimed (the caller adds the file or the request)."""

    http_status = 422

    def __init__(self, field: str, message: str, claim: int = -1) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message
        self.claim = claim


class CheckpointError(HeimdallError):
    """A checkpoint is missing, unreadable or not a Heimdall checkpoint."""

    http_status = 422


class ExportError(HeimdallError):
    """An export failed validation or could not be written."""

    http_status = 500


class ModelStoreError(HeimdallError):
    """The model store cannot be reached, refuses the request, or holds an inconsistent model."""

    http_status = 502


class RadioMapFormatError(ValueError):
    """The map inside a model is missing, malformed or inconsistent; names the field. Its readers report it as the
    error of what they were loading (ModelLoadError, ExportError) with the model named."""


class ModelLoadError(HeimdallError):
    """A model cannot be found, verified or understood (names the source and what failed)."""

    http_status = 503


class SigningKeyError(HeimdallError):
    """A signing or verification key file is missing or not a key Heimdall can use."""

    http_status = 500


class ServeError(HeimdallError):
    """A request the service does not answer; `field` names where (e.g. iq[2].samples_base64).

    The answer's body is `{"detail": [{"field": ..., "message": ...}, ...]}` (`detail`).
    """

    http_status = 422
    headers: dict[str, str] | None = None

    def __init__(self, field: str, message: str, more: list[dict[str, str]] | None = None) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message
        self.detail = [{"field": field, "message": message}, *(more or [])]


class InputError(ServeError):
    """Bad input (422)."""


class TooLarge(ServeError):
    """More than the service takes in one request, whenever it is sent (413)."""

    http_status = 413


class TooSlow(ServeError):
    """The request did not arrive in time (408)."""

    http_status = 408


class Busy(ServeError):
    """The service is at its limit now; the same request may succeed later (429)."""

    http_status = 429
    headers = {"Retry-After": "1"}


class Unauthorized(ServeError):
    """No credentials (401)."""

    http_status = 401


class Forbidden(ServeError):
    """Wrong credentials, or the endpoint is disabled (403)."""

    http_status = 403


class Unavailable(ServeError):
    """The service cannot do it now, for a reason the detail gives (503)."""

    http_status = 503
