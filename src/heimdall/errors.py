"""Exception types, one per failure kind; messages name the file/field, what was found and what was expected."""


class HeimdallError(Exception):
    """Base class of every error Heimdall reports to a user (the CLI prints these without a traceback)."""


class ScenarioError(HeimdallError):
    """A scenario file or value is invalid."""


class DatasetError(HeimdallError):
    """A training store is missing, corrupt or inconsistent."""


class FeatureError(HeimdallError):
    """IQ given to the feature extractor does not fit its parameters."""


class RecordingError(HeimdallError):
    """A SigMF recording or collection is invalid; names the file and the field."""

    def __init__(self, path: object, field: str, message: str):
        super().__init__(f"{path}: {field}: {message}")
        self.path = str(path)
        self.field = field
        self.message = message


class ModelLoadError(HeimdallError):
    """A model cannot be found, verified or understood (names the source and what failed)."""


class SigningKeyError(HeimdallError):
    """A signing or verification key file is missing or not a key Heimdall can use."""
