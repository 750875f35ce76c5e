"""A loaded ONNX model with everything needed to answer requests: session, receivers, frame, features.

Models come from an ONNX file, the model store (by name and version, latest by default) or the MLflow
registry (by alias, `champion` by default). Loading verifies the store's sha256 and reads the metadata
written by `heimdall export`.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from heimdall.errors import HeimdallError
from heimdall.features import FeatureParams
from heimdall.geo import LocalFrame
from heimdall.scenario import scenario_from_text


class ModelLoadError(HeimdallError):
    """The model cannot be found, verified or understood."""


@dataclass
class ServedModel:
    name: str
    version: str
    sha256: str
    session: ort.InferenceSession
    metadata: dict[str, str]
    params: FeatureParams
    receiver_ids: list[str]
    rx_position_m: np.ndarray  # float32 [R, 2]
    frame: LocalFrame
    full_scale_dbm: float
    min_receivers: int
    frequency_hz: float  # the channel the model's features are computed on

    @property
    def n_features(self) -> int:
        return self.params.n_features

    def predict(self, features: np.ndarray, rx_position_m: np.ndarray, present: np.ndarray
                ) -> tuple[np.ndarray, np.ndarray]:
        """mean [B, 2] m and covariance [B, 2, 2] m² for float32 inputs [B, R, F], [B, R, 2], [B, R]."""
        mean, cov = self.session.run(["mean_m", "cov_m2"], {
            "features": features.astype(np.float32, copy=False),
            "rx_position_m": rx_position_m.astype(np.float32, copy=False),
            "present": present.astype(np.float32, copy=False)})
        return mean.astype(np.float64), cov.astype(np.float64)

    def describe(self) -> dict:
        receivers = json.loads(self.metadata.get("receivers", "{}"))
        return {
            "name": self.name,
            "version": self.version,
            "sha256": self.sha256,
            "heimdall_version": self.metadata.get("heimdall_version"),
            "source_revision": self.metadata.get("source_revision"),
            "scenario_sha256": self.metadata.get("scenario_sha256"),
            "frame_origin": {"lat": self.frame.origin_lat, "lon": self.frame.origin_lon},
            "feature_params": json.loads(self.metadata.get("feature_params", "{}")),
            "receivers": [{"id": i, "lat": la, "lon": lo} for i, la, lo in
                          zip(receivers.get("id", []), receivers.get("lat", []), receivers.get("lon", []))],
            "metrics": json.loads(self.metadata.get("metrics", "{}") or "{}"),
            "min_receivers": self.min_receivers,
        }


def from_bytes(data: bytes, name: str, version: str, threads: int = 1) -> ServedModel:
    """Build a ServedModel from ONNX bytes exported by Heimdall."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    try:
        session = ort.InferenceSession(data, opts, providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise ModelLoadError(f"{name} {version}: not a loadable ONNX model ({type(exc).__name__}: {exc})") from None
    meta = session.get_modelmeta().custom_metadata_map
    if meta.get("format") != "heimdall-onnx/1":
        raise ModelLoadError(f"{name} {version}: not a Heimdall model (metadata format={meta.get('format')!r})")
    receivers = json.loads(meta["receivers"])
    scenario = scenario_from_text(meta.get("scenario_yaml"), f"{name} {version}: metadata scenario_yaml")
    return ServedModel(
        name=name,
        version=version,
        sha256=hashlib.sha256(data).hexdigest(),
        session=session,
        metadata=meta,
        params=FeatureParams.from_json(meta["feature_params"]),
        receiver_ids=list(receivers["id"]),
        rx_position_m=np.stack([receivers["east_m"], receivers["north_m"]], -1).astype(np.float32),
        frame=scenario.frame,
        full_scale_dbm=scenario.receiver_chain.full_scale_dbm,
        min_receivers=scenario.receiver_chain.min_receivers,
        frequency_hz=scenario.frequency_hz,
    )


@dataclass(frozen=True)
class ModelSource:
    """Where the service takes its model from; `load()` resolves it again (for hot reload)."""

    file: str | None = None
    store: str | None = None
    name: str = "heimdall-localizer"
    version: int | None = None
    tracking_uri: str | None = None
    alias: str = "champion"
    threads: int = 1

    def load(self) -> ServedModel:
        if self.file:
            p = Path(self.file)
            if not p.is_file():
                raise ModelLoadError(f"{p}: model file not found")
            return from_bytes(p.read_bytes(), p.stem, "file", self.threads)
        if self.store:
            from heimdall.store import ModelStore

            stored = ModelStore.open(self.store).fetch(self.name, self.version)
            return from_bytes(stored.data, self.name, str(stored.version), self.threads)
        return self._from_registry()

    def _from_registry(self) -> ServedModel:
        import mlflow
        from mlflow.exceptions import MlflowException
        from mlflow.tracking import MlflowClient

        uri = self.tracking_uri
        if uri is None:
            from heimdall.workspace import workspace

            uri = f"sqlite:///{(workspace() / 'mlflow.db').resolve()}"
        try:
            client = MlflowClient(uri)
            mv = client.get_model_version_by_alias(self.name, self.alias)
            path = Path(mlflow.artifacts.download_artifacts(artifact_uri=f"models:/{self.name}@{self.alias}",
                                                            tracking_uri=uri))
        except MlflowException as exc:
            raise ModelLoadError(f"registry {uri}: no {self.name}@{self.alias} ({exc.message[:200]})") from None
        files = sorted(path.rglob("*.onnx"))
        if not files:
            raise ModelLoadError(f"registry {uri}: {self.name}@{self.alias} has no .onnx file")
        return from_bytes(files[0].read_bytes(), self.name, str(mv.version), self.threads)
