"""A loaded ONNX model with everything needed to answer requests: session, receivers, frame, features.

Models come from an ONNX file, the model store (by name and version, latest by default) or the MLflow
registry (by alias, `champion` by default), always through heimdall.release. Before a session is created the
bytes pass the source's TrustPolicy (integrity against the manifest, a pinned sha256, a signature:
heimdall.manifest) and the external-data refusal (heimdall.onnx_guard); then the model card written by
`heimdall export` is parsed and checked field by field (heimdall.train.model_card), so a model that cannot be
served fails to load, naming the field, instead of failing requests.
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from heimdall.errors import ModelLoadError
from heimdall.features import FeatureParams
from heimdall.geo import LocalFrame
from heimdall.manifest import TrustPolicy, decode_manifest, sidecar_path
from heimdall.metrics import COVERAGE_1SIGMA_IDEAL, COVERAGE_2SIGMA_IDEAL
from heimdall.onnx_guard import check_model_size, require_self_contained
from heimdall.release import CHAMPION, MODEL_NAME
from heimdall.serve.hybrid_answers import ServedMap, load_map
from heimdall.train.model_card import ModelCard

INPUTS = ("features", "rx_position_m", "present")
OUTPUTS = ("mean_m", "cov_m2")
AREA_EDGE_POINTS = 16  # per side of the area's outline


@dataclass
class ServedModel:
    """A model ready to answer: its ONNX Runtime session and its card."""

    name: str
    version: str
    sha256: str
    session: ort.InferenceSession
    card: ModelCard
    rx_position_m: np.ndarray  # float32 [R, 2], the card's receiver table
    radio_map: ServedMap | None = None  # answers are the map × network hybrid when the model carries a map

    @property
    def params(self) -> FeatureParams:
        """The feature parameters requests are computed with."""
        return self.card.feature_params

    @property
    def n_features(self) -> int:
        """Feature columns per receiver."""
        return self.params.n_features

    @property
    def receiver_ids(self) -> list[str]:
        """Ids of the model's receiver table, in order."""
        return self.card.receiver_ids

    @property
    def frame(self) -> LocalFrame:
        """The model's local east/north frame."""
        return self.card.frame

    @property
    def full_scale_dbm(self) -> float:
        """DBm of a full-scale signal when a recording brings no calibration."""
        return self.card.full_scale_dbm

    @property
    def min_receivers(self) -> int:
        """Receivers a transmission needs."""
        return self.card.min_receivers

    @property
    def frequency_hz(self) -> float:
        """The channel the model's features are computed on."""
        return self.card.frequency_hz

    def predict(
        self, features: np.ndarray, rx_position_m: np.ndarray, present: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Mean [B, 2] m and covariance [B, 2, 2] m² for float32 inputs [B, R, F], [B, R, 2], [B, R]."""
        mean, cov = self.session.run(
            ["mean_m", "cov_m2"],
            {
                "features": features.astype(np.float32, copy=False),
                "rx_position_m": rx_position_m.astype(np.float32, copy=False),
                "present": present.astype(np.float32, copy=False),
            },
        )
        return mean.astype(np.float64), cov.astype(np.float64)

    def describe(self) -> dict:
        """What GET /v1/model answers."""
        card, receivers = self.card, self.card.receivers
        names = {r.id: r.name for r in card.scenario.receivers}
        return {
            "name": self.name,
            "version": self.version,
            "sha256": self.sha256,
            "heimdall_version": card.heimdall_version or None,
            "source_revision": card.source_revision or None,
            "scenario_sha256": card.scenario_sha256 or None,
            "frame_origin": {"lat": self.frame.origin_lat, "lon": self.frame.origin_lon},
            "feature_params": dataclasses.asdict(self.params),
            "feature_columns": {
                "power_dbm": self.params.power_index,
                "noise_dbm": self.params.noise_index,
                "snr_db": self.params.snr_index,
            },
            "receivers": [
                {"id": i, "name": names.get(i, i), "lat": la, "lon": lo}
                for i, la, lo in zip(receivers["id"], receivers["lat"], receivers["lon"], strict=True)
            ],
            "metrics": card.metrics,
            "calibration_ideal": {"coverage_1sigma": COVERAGE_1SIGMA_IDEAL, "coverage_2sigma": COVERAGE_2SIGMA_IDEAL},
            "min_receivers": self.min_receivers,
            "scenario": {"name": card.scenario.name, "frequency_hz": card.frequency_hz},
            "dataset_sha256": card.dataset_sha256 or None,
            "mlflow_run_id": card.mlflow_run_id or None,
            "area": self.area_geojson(),
        } | ({"radio_map": self.radio_map.describe()} if self.radio_map is not None else {})

    def area_geojson(self) -> dict:
        """The scenario's transmitter area as a GeoJSON Polygon ([lon, lat]; edges sampled, the frame is not
        lat/lon-aligned)."""
        e0, n0, e1, n1 = self.card.scenario.area_bounds_m()
        t = np.linspace(0.0, 1.0, AREA_EDGE_POINTS, endpoint=False)[:, None]
        corners = np.array([[e0, n0], [e1, n0], [e1, n1], [e0, n1], [e0, n0]])
        ring = np.concatenate([a + t * (b - a) for a, b in zip(corners[:-1], corners[1:], strict=True)])
        lat_lon = self.frame.to_geodetic(np.concatenate([ring, ring[:1]]))
        return {"type": "Polygon", "coordinates": [[[round(lo, 6), round(la, 6)] for la, lo in lat_lon.tolist()]]}


def from_bytes(data: bytes, name: str, version: str, threads: int = 1) -> ServedModel:
    """Build a ServedModel from ONNX bytes exported by Heimdall (refused if they hold external data)."""
    where = f"{name} {version}"
    proto = require_self_contained(data, where)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    try:
        session = ort.InferenceSession(data, opts, providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise ModelLoadError(f"{where}: not a loadable ONNX model ({type(exc).__name__}: {exc})") from None
    card = ModelCard.from_onnx_metadata(session.get_modelmeta().custom_metadata_map, where, ModelLoadError)
    _check_graph_io(session, where)
    params = card.feature_params
    dims = {i.name: i.shape for i in session.get_inputs()}["features"]
    if len(dims) != 3:
        raise ModelLoadError(f"{where}: input 'features' has shape {dims}; expected [batch, receivers, features]")
    if isinstance(dims[-1], int) and dims[-1] != params.n_features:
        raise ModelLoadError(
            f"{where}: input 'features' takes {dims[-1]} values per receiver, metadata "
            f"'feature_params' gives {params.n_features}"
        )
    metadata = session.get_modelmeta().custom_metadata_map
    return ServedModel(
        name=name,
        version=version,
        sha256=hashlib.sha256(data).hexdigest(),
        session=session,
        card=card,
        rx_position_m=card.rx_position_m.astype(np.float32),
        radio_map=load_map(proto, metadata, card.receiver_ids, card.frame, where),
    )


def _check_graph_io(session: ort.InferenceSession, where: str) -> None:
    """The graph's inputs and outputs are the ones the service feeds and reads."""
    inputs = [i.name for i in session.get_inputs()]
    outputs = [o.name for o in session.get_outputs()]
    for kind, names, expected in (("inputs", inputs, INPUTS), ("outputs", outputs, OUTPUTS)):
        if not set(expected) <= set(names):
            raise ModelLoadError(f"{where}: graph {kind} {names}; a Heimdall model has {', '.join(expected)}")


@dataclass(frozen=True)
class ModelSource:
    """Where the service takes its model from and how it is trusted; `load()` resolves it again (hot reload)."""

    file: str | None = None
    store: str | None = None
    name: str = MODEL_NAME
    version: int | None = None
    registry_uri: str | None = None  # default: heimdall.workspace.default_tracking_uri()
    alias: str = CHAMPION
    threads: int = 1
    s3_options: dict[str, Any] = field(default_factory=dict)
    trust: TrustPolicy = TrustPolicy()

    def unchecked_writers(self) -> str | None:
        """Who picks the model this source serves when nothing checks its authenticity: the writers of its registry
        or model store (None for a file, or when a verify key or a pinned sha256 is given)."""
        if self.file or self.trust.verify_key is not None or self.trust.sha256 is not None:
            return None
        if self.store:
            return f"any writer of the model store {self.store}"
        from heimdall.workspace import default_tracking_uri

        return f"any writer of the registry {self.registry_uri or default_tracking_uri()} (or of its artifact store)"

    def load(self) -> ServedModel:
        """The model the source names now, verified and loaded (ModelLoadError naming what failed)."""
        data, name, version = self.fetch()
        return from_bytes(data, name, version, self.threads)

    def fetch(self) -> tuple[bytes, str, str]:
        """(bytes, name, version — "file" for a file) of the model the source names now, its integrity and
        signature checked against its manifest as the trust policy asks (ModelLoadError naming what failed)."""
        if self.file:
            return self._from_file(Path(self.file))
        if self.store:
            from heimdall.release.model_store import ModelStore

            store = ModelStore.open(self.store, **self.s3_options)
            stored = store.fetch(self.name, self.version)
            self.trust.check(
                stored.data,
                stored.manifest,
                f"{store.backend.description} {self.name} version {stored.version}",
                self.name,
                stored.version,
            )
            return stored.data, self.name, str(stored.version)
        return self._from_registry()

    def _from_file(self, path: Path) -> tuple[bytes, str, str]:
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
        return data, path.stem, "file"

    def _from_registry(self) -> tuple[bytes, str, str]:
        from mlflow.exceptions import MlflowException

        from heimdall.manifest import MANIFEST_TAG
        from heimdall.release.registry import download_version, registry_client
        from heimdall.workspace import default_tracking_uri

        uri = self.registry_uri or default_tracking_uri()
        if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).is_file():
            raise ModelLoadError(
                f"registry {uri}: no MLflow database there (train or export a model first, or give "
                "--registry-uri, --store or --model-file)"
            )
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
        return data, self.name, str(mv.version)
