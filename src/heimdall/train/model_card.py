"""The model card: what a trained model is, in one typed place.

Training writes it into the checkpoint (its ``heimdall`` section), export writes it into the ONNX metadata, and
export, publishing, evaluation and serving read it back through `ModelCard.from_checkpoint` /
`ModelCard.from_onnx_metadata`, which check it field by field (raising the given error naming the field) and
parse the scenario text once, as untrusted text. Readers take the frame, the receiver positions, the channel
and the feature parameters from the card; nobody reads the entries by string or parses the scenario again.

Entries (checkpoint and ONNX metadata alike): ``feature_params`` (JSON), ``receivers`` (the receiver table as
columns, at least RECEIVER_COLUMNS), ``scenario_yaml``, ``scenario_sha256``, ``dataset_sha256``,
``mlflow_run_id``; export adds ``format``, ``heimdall_version``, ``source_revision``, ``net_config``,
``normalisation``, ``weights_sha256`` and ``metrics``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from heimdall.errors import DatasetError, HeimdallError
from heimdall.features import FeatureParams
from heimdall.geo import LocalFrame
from heimdall.scenario.domain import MAX_RECEIVERS, Scenario
from heimdall.scenario.schema import scenario_from_text

ONNX_FORMAT = "heimdall-onnx/1"
RECEIVER_COLUMNS = ("id", "lat", "lon", "east_m", "north_m")
if TYPE_CHECKING:
    from heimdall.datasets.loader import StoreMeta

_TEXT_ENTRIES = ("scenario_sha256", "dataset_sha256", "mlflow_run_id")
_EXPORT_TEXT_ENTRIES = ("heimdall_version", "source_revision", "net_config", "normalisation", "weights_sha256")


@dataclass(frozen=True)
class ModelCard:
    """A model's facts: its features, receivers, scenario (parsed) and provenance."""

    feature_params: FeatureParams
    receivers: dict[str, list]  # the receiver table as equally long columns (RECEIVER_COLUMNS at least)
    scenario: Scenario  # parsed from scenario_yaml
    scenario_yaml: str
    scenario_sha256: str
    dataset_sha256: str = ""
    mlflow_run_id: str = ""
    # written by export
    heimdall_version: str = ""
    source_revision: str = ""
    net_config: str = ""  # JSON of the network's configuration
    normalisation: str = ""  # JSON of the input normalisation
    weights_sha256: str = ""
    metrics: dict[str, Any] = field(default_factory=dict)

    @property
    def frame(self) -> LocalFrame:
        """The local east/north frame every position of the model is in."""
        return self.scenario.frame

    @property
    def receiver_ids(self) -> list[str]:
        """Receiver ids, in the order of the table."""
        return list(self.receivers["id"])

    @property
    def rx_position_m(self) -> np.ndarray:
        """float64 [R, 2] receiver east/north in the model's frame."""
        return np.stack([self.receivers["east_m"], self.receivers["north_m"]], axis=-1).astype(np.float64)

    @property
    def frequency_hz(self) -> float:
        """The channel the model's features are computed on."""
        return self.scenario.frequency_hz

    @property
    def full_scale_dbm(self) -> float:
        """DBm of a full-scale signal when a recording brings no calibration of its own."""
        return self.scenario.receiver_chain.full_scale_dbm

    @property
    def min_receivers(self) -> int:
        """Receivers a transmission needs to be localised."""
        return self.scenario.receiver_chain.min_receivers

    def to_checkpoint(self) -> dict[str, Any]:
        """The entries of a checkpoint's ``heimdall`` section (plain data)."""
        return {
            "scenario_sha256": self.scenario_sha256,
            "scenario_yaml": self.scenario_yaml,
            "feature_params": self.feature_params.to_json(),
            "receivers": self.receivers,
            "dataset_sha256": self.dataset_sha256,
            "mlflow_run_id": self.mlflow_run_id,
        }

    def to_onnx_metadata(self) -> dict[str, str]:
        """The metadata_props of the exported ONNX model (text)."""
        return {
            "heimdall_version": self.heimdall_version,
            "source_revision": self.source_revision,
            "format": ONNX_FORMAT,
            "net_config": self.net_config,
            "feature_params": self.feature_params.to_json(),
            "scenario_sha256": self.scenario_sha256,
            "scenario_yaml": self.scenario_yaml,
            "dataset_sha256": self.dataset_sha256,
            "receivers": json.dumps(self.receivers),
            "normalisation": self.normalisation,
            "weights_sha256": self.weights_sha256,
            "metrics": json.dumps(self.metrics),
            "mlflow_run_id": self.mlflow_run_id,
        }

    @classmethod
    def from_store(cls, meta: StoreMeta, where: str) -> ModelCard:
        """The card of a model trained on a store (`where` names it): its scenario, features and receiver table."""
        return cls(
            feature_params=meta.params,
            receivers=_receiver_table(
                {k: v.tolist() for k, v in meta.receivers.items()}, f"{where}: receivers", DatasetError
            ),
            scenario=_scenario(meta.scenario_yaml, where, "attribute scenario_yaml", DatasetError),
            scenario_yaml=meta.scenario_yaml,
            scenario_sha256=meta.scenario_sha256,
        )

    @classmethod
    def from_checkpoint(cls, meta: dict[str, Any], where: str, error: type[HeimdallError]) -> ModelCard:
        """The card of a checkpoint's ``heimdall`` section; raises `error` naming `where` and the entry."""
        for key in (*_TEXT_ENTRIES, "scenario_yaml", "feature_params"):
            if not isinstance(meta.get(key) or "", str):
                raise error(f"{where}: heimdall.{key} must be text, got {type(meta[key]).__name__}")
        texts: dict[str, Any] = {key: meta.get(key) or "" for key in _TEXT_ENTRIES}
        return cls(
            feature_params=_feature_params(meta.get("feature_params"), f"{where}: heimdall.feature_params", error),
            receivers=_receiver_table(meta.get("receivers"), f"{where}: heimdall.receivers", error),
            scenario=_scenario(meta.get("scenario_yaml"), where, "heimdall.scenario_yaml", error),
            scenario_yaml=meta.get("scenario_yaml") or "",
            **texts,
        )

    @classmethod
    def from_onnx_metadata(cls, meta: dict[str, str], where: str, error: type[HeimdallError]) -> ModelCard:
        """The card of an exported model's metadata; raises `error` naming `where` and the metadata entry."""
        if meta.get("format") != ONNX_FORMAT:
            raise error(f"{where}: not a Heimdall model (metadata format={meta.get('format')!r:.80})")
        receivers = _receiver_table(
            _json_object(meta, "receivers", where, error), f"{where}: metadata 'receivers'", error
        )
        if not meta.get("feature_params"):
            raise error(f"{where}: metadata 'feature_params' is missing")
        params = _feature_params(meta["feature_params"], f"{where}: metadata 'feature_params'", error)
        metrics = _json_object(meta, "metrics", where, error, required=False)
        return cls(
            feature_params=params,
            receivers=receivers,
            scenario=_scenario(meta.get("scenario_yaml"), where, "metadata 'scenario_yaml'", error),
            scenario_yaml=meta.get("scenario_yaml") or "",
            metrics=metrics,
            **{key: meta.get(key) or "" for key in (*_TEXT_ENTRIES, *_EXPORT_TEXT_ENTRIES)},
        )


def _json_object(
    meta: dict[str, str], key: str, where: str, error: type[HeimdallError], required: bool = True
) -> dict[str, Any]:
    """The JSON object in metadata `key` ({} when optional and absent or empty)."""
    if not meta.get(key):
        if required:
            raise error(f"{where}: metadata {key!r} is missing")
        return {}
    try:
        value = json.loads(meta[key])
    except json.JSONDecodeError as exc:
        raise error(f"{where}: metadata {key!r} is not valid JSON ({exc.msg})") from None
    if not isinstance(value, dict):
        raise error(f"{where}: metadata {key!r}: expected a JSON object, found {type(value).__name__}")
    return value


def _receiver_table(table: Any, where: str, error: type[HeimdallError]) -> dict[str, list]:
    """The receiver table: equally long columns RECEIVER_COLUMNS (1 to MAX_RECEIVERS rows), unique string ids,
    finite coordinates."""
    columns: list[Any] = [table.get(c) for c in RECEIVER_COLUMNS] if isinstance(table, dict) else [None]
    if (
        not all(isinstance(c, list) for c in columns)
        or not 1 <= len(columns[0]) == min(map(len, columns)) == max(map(len, columns)) <= MAX_RECEIVERS
    ):
        raise error(
            f"{where}: expected equally long, non-empty lists {', '.join(RECEIVER_COLUMNS)} "
            f"(at most {MAX_RECEIVERS} receivers)"
        )
    ids, *numbers = columns
    if not all(isinstance(i, str) and i for i in ids) or len(set(ids)) != len(ids):
        raise error(f"{where}: 'id' must hold distinct, non-empty strings")
    for column, values in zip(RECEIVER_COLUMNS[1:], numbers, strict=True):
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in values):
            raise error(f"{where}: {column!r} must hold finite numbers")
    return table


def _feature_params(text: Any, where: str, error: type[HeimdallError]) -> FeatureParams:
    try:
        return FeatureParams.from_json(text)
    except (ValueError, TypeError) as exc:  # JSON syntax errors included
        raise error(f"{where}: {str(exc)[:300]}") from None


def _scenario(text: Any, where: str, entry: str, error: type[HeimdallError]) -> Scenario:
    try:
        return scenario_from_text(text, entry)
    except (HeimdallError, KeyError, TypeError, ValueError, AttributeError) as exc:
        raise error(f"{where}: {str(exc)[:300]}") from None
