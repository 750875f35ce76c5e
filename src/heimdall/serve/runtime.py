"""A loaded ONNX model with everything needed to answer requests: session, receivers, frame, features.

Models come from an ONNX file, the model store (by name and version, latest by default) or the MLflow
registry (by alias, `champion` by default). Before a session is created the bytes pass the source's
TrustPolicy (integrity against the manifest, a pinned sha256, a signature: heimdall.manifest) and the
external-data refusal (heimdall.onnx_guard); then the metadata written by `heimdall export` is checked
field by field, so a model that cannot be served fails to load, naming the field, instead of failing
requests.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from heimdall.errors import HeimdallError, ModelLoadError
from heimdall.features import FeatureParams
from heimdall.geo import LocalFrame
from heimdall.manifest import TrustPolicy, decode_manifest, sidecar_path
from heimdall.onnx_guard import check_model_size, require_self_contained
from heimdall.scenario import scenario_from_text

INPUTS = ("features", "rx_position_m", "present")
OUTPUTS = ("mean_m", "cov_m2")
RECEIVER_COLUMNS = ("id", "lat", "lon", "east_m", "north_m")


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
    """Build a ServedModel from ONNX bytes exported by Heimdall (refused if they hold external data)."""
    where = f"{name} {version}"
    require_self_contained(data, where)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    try:
        session = ort.InferenceSession(data, opts, providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise ModelLoadError(f"{where}: not a loadable ONNX model ({type(exc).__name__}: {exc})") from None
    meta = session.get_modelmeta().custom_metadata_map
    if meta.get("format") != "heimdall-onnx/1":
        raise ModelLoadError(f"{where}: not a Heimdall model (metadata format={meta.get('format')!r:.80})")
    _check_graph_io(session, where)
    receivers = _receivers(meta, where)
    params = _feature_params(meta, where)
    dims = {i.name: i.shape for i in session.get_inputs()}["features"]
    if len(dims) != 3:
        raise ModelLoadError(f"{where}: input 'features' has shape {dims}; expected [batch, receivers, features]")
    if isinstance(dims[-1], int) and dims[-1] != params.n_features:
        raise ModelLoadError(f"{where}: input 'features' takes {dims[-1]} values per receiver, metadata "
                             f"'feature_params' gives {params.n_features}")
    _json_metadata(meta, "metrics", where, required=False)
    try:
        scenario = scenario_from_text(meta.get("scenario_yaml"), "metadata 'scenario_yaml'")
    except (HeimdallError, KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ModelLoadError(f"{where}: {str(exc)[:300]}") from None
    return ServedModel(
        name=name,
        version=version,
        sha256=hashlib.sha256(data).hexdigest(),
        session=session,
        metadata=meta,
        params=params,
        receiver_ids=list(receivers["id"]),
        rx_position_m=np.stack([receivers["east_m"], receivers["north_m"]], -1).astype(np.float32),
        frame=scenario.frame,
        full_scale_dbm=scenario.receiver_chain.full_scale_dbm,
        min_receivers=scenario.receiver_chain.min_receivers,
        frequency_hz=scenario.frequency_hz,
    )


def _check_graph_io(session: ort.InferenceSession, where: str) -> None:
    """The graph's inputs and outputs are the ones the service feeds and reads."""
    inputs = [i.name for i in session.get_inputs()]
    outputs = [o.name for o in session.get_outputs()]
    for kind, names, expected in (("inputs", inputs, INPUTS), ("outputs", outputs, OUTPUTS)):
        if not set(expected) <= set(names):
            raise ModelLoadError(f"{where}: graph {kind} {names}; a Heimdall model has {', '.join(expected)}")


def _json_metadata(meta: dict[str, str], key: str, where: str, required: bool = True) -> Any:
    """The JSON object in metadata `key` ({} when optional and absent or empty)."""
    if not meta.get(key):
        if required:
            raise ModelLoadError(f"{where}: metadata {key!r} is missing")
        return {}
    try:
        value = json.loads(meta[key])
    except json.JSONDecodeError as exc:
        raise ModelLoadError(f"{where}: metadata {key!r} is not valid JSON ({exc.msg})") from None
    if not isinstance(value, dict):
        raise ModelLoadError(f"{where}: metadata {key!r}: expected a JSON object, found {type(value).__name__}")
    return value


def _receivers(meta: dict[str, str], where: str) -> dict[str, list]:
    """The receiver table: equally long columns RECEIVER_COLUMNS, unique string ids, finite coordinates."""
    table = _json_metadata(meta, "receivers", where)
    columns = [table.get(c) for c in RECEIVER_COLUMNS]
    if not all(isinstance(c, list) for c in columns) or not 1 <= len(columns[0]) == min(map(len, columns)) \
            == max(map(len, columns)):
        raise ModelLoadError(f"{where}: metadata 'receivers': expected equally long, non-empty lists "
                             f"{', '.join(RECEIVER_COLUMNS)}")
    ids, *numbers = columns
    if not all(isinstance(i, str) and i for i in ids) or len(set(ids)) != len(ids):
        raise ModelLoadError(f"{where}: metadata 'receivers': 'id' must hold distinct, non-empty strings")
    for column, values in zip(RECEIVER_COLUMNS[1:], numbers):
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in values):
            raise ModelLoadError(f"{where}: metadata 'receivers': {column!r} must hold finite numbers")
    return table


def _feature_params(meta: dict[str, str], where: str) -> FeatureParams:
    if not meta.get("feature_params"):
        raise ModelLoadError(f"{where}: metadata 'feature_params' is missing")
    try:
        return FeatureParams.from_json(meta["feature_params"])
    except ValueError as exc:  # JSON syntax errors included
        raise ModelLoadError(f"{where}: metadata 'feature_params': {str(exc)[:300]}") from None


@dataclass(frozen=True)
class ModelSource:
    """Where the service takes its model from and how it is trusted; `load()` resolves it again (hot reload)."""

    file: str | None = None
    store: str | None = None
    name: str = "heimdall-localizer"
    version: int | None = None
    registry_uri: str | None = None  # default: heimdall.workspace.default_tracking_uri()
    alias: str = "champion"
    threads: int = 1
    s3_options: dict[str, Any] = field(default_factory=dict)
    trust: TrustPolicy = TrustPolicy()

    def load(self) -> ServedModel:
        if self.file:
            return self._from_file(Path(self.file))
        if self.store:
            from heimdall.store import ModelStore

            store = ModelStore.open(self.store, **self.s3_options)
            stored = store.fetch(self.name, self.version)
            self.trust.check(stored.data, stored.manifest, f"{store.backend.description} {self.name} version "
                             f"{stored.version}", self.name, stored.version)
            return from_bytes(stored.data, self.name, str(stored.version), self.threads)
        return self._from_registry()

    def _from_file(self, path: Path) -> ServedModel:
        if not path.is_file():
            raise ModelLoadError(f"{path}: model file not found")
        check_model_size(path.stat().st_size, str(path))
        data = path.read_bytes()
        manifest = None
        if sidecar_path(path).is_file():
            try:
                manifest = decode_manifest(sidecar_path(path).read_bytes())
            except ValueError as exc:
                raise ModelLoadError(f"{sidecar_path(path)}: {exc}") from None
        self.trust.check(data, manifest, str(path))
        return from_bytes(data, path.stem, "file", self.threads)

    def _from_registry(self) -> ServedModel:
        from mlflow.exceptions import MlflowException

        from heimdall.manifest import MANIFEST_TAG
        from heimdall.registry import download_version, registry_client
        from heimdall.workspace import default_tracking_uri

        uri = self.registry_uri or default_tracking_uri()
        if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).is_file():
            raise ModelLoadError(f"registry {uri}: no MLflow database there (train or export a model first, or give "
                                 "--registry-uri, --store or --model-file)")
        try:
            mv = registry_client(uri).get_model_version_by_alias(self.name, self.alias)
        except MlflowException as exc:
            raise ModelLoadError(f"registry {uri}: no {self.name}@{self.alias} ({exc.message[:200]})") from None
        where = f"registry {uri} {self.name} version {mv.version}"
        data = download_version(uri, self.name, mv.version, where)
        manifest = None
        if MANIFEST_TAG in mv.tags:
            try:
                manifest = decode_manifest(mv.tags[MANIFEST_TAG])
            except ValueError as exc:
                raise ModelLoadError(f"{where}: tag {MANIFEST_TAG}: {exc}") from None
        self.trust.check(data, manifest, where, self.name, mv.version)
        return from_bytes(data, self.name, str(mv.version), self.threads)
