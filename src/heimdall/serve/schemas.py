"""Request and response bodies of the HTTP API (pydantic; NaN/Inf are refused everywhere)."""

from __future__ import annotations

from typing import Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from heimdall.datasets.sigmf_files import DATATYPES

MAX_RECEIVERS = 256  # per transmission
MAX_TRANSMISSIONS = 1024  # per batch request
MAX_FEATURES = 4096  # values per feature vector


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


_Model = TypeVar("_Model", bound=BaseModel)


def _exactly_one(model: _Model, a: str, b: str) -> _Model:
    """The model, if exactly one of its fields a and b is given; else a validation error naming both."""
    if (getattr(model, a) is None) == (getattr(model, b) is None):
        raise ValueError(f"give exactly one of '{a}' or '{b}'")
    return model


class ReceiverRef(_Strict):
    """A receiver by id from the model's receiver table, or ad hoc by position (both: the position must be the
    table's, within the service's match tolerance)."""

    id: str | None = Field(None, max_length=128, description="receiver id in the model's table")
    lat: float | None = Field(None, ge=-90, le=90, description="ad-hoc receiver latitude (degrees)")
    lon: float | None = Field(None, ge=-180, le=180, description="ad-hoc receiver longitude (degrees)")

    @model_validator(mode="after")
    def _one_identity(self) -> ReceiverRef:
        if (self.lat is None) != (self.lon is None):
            raise ValueError("give both lat and lon, or neither")
        if self.id is None and self.lat is None:
            raise ValueError("give the receiver's id, or both lat and lon")
        return self


class IQRecording(ReceiverRef):
    """One receiver's raw recording: base64 of interleaved I/Q samples."""

    datatype: str = Field(
        description="SigMF sample type: cf32_le (float32 I,Q, full scale 1.0), ci16_le (int16, "
        "full scale 32768), ci8 (int8, full scale 128) or cu8 (uint8, offset 127.5)",
        json_schema_extra={"enum": list(DATATYPES)},
    )
    sample_rate_hz: float = Field(gt=0, description="must equal the model's sample rate")
    center_frequency_hz: float = Field(gt=0)
    samples_base64: str = Field(min_length=4)
    full_scale_dbm: float | None = Field(
        None, ge=-200, le=100, description="dBm of a full-scale signal (default: the model's)"
    )

    @field_validator("datatype")
    @classmethod
    def _known_datatype(cls, value: str) -> str:
        if value not in DATATYPES:
            raise ValueError(f"expected one of {', '.join(DATATYPES)}")
        return value


class FeatureVector(ReceiverRef):
    """One receiver's features: the full vector of heimdall.features.feature_matrix (dBm, dB), or only the
    measured in-band power (a power reading: optionally its noise power, and whether the receiver heard)."""

    features: list[float] | None = Field(
        None,
        min_length=1,
        max_length=MAX_FEATURES,
        description="the model's feature vector (GET /v1/model: feature_names)",
    )
    power_dbm: float | None = Field(
        None,
        ge=-250,
        le=100,
        description="measured in-band power only, dBm (in the receiver's own dB where the model's map learned its "
        "offset); with status not_heard the receiver's floor: its power was at or below it",
    )
    noise_dbm: float | None = Field(
        None,
        ge=-250,
        le=100,
        description="power readings only: the noise power of the reading (same unit as power_dbm)",
    )
    status: Literal["heard", "not_heard"] = Field(
        "heard", description="power readings only: not_heard, the receiver recorded but its power was at its floor"
    )

    @model_validator(mode="after")
    def _features_or_power(self) -> FeatureVector:
        _exactly_one(self, "features", "power_dbm")
        if self.features is not None and (self.noise_dbm is not None or self.status != "heard"):
            raise ValueError("noise_dbm and status go with power_dbm (a power reading), not with features")
        return self


class LocalizeRequest(_Strict):
    """One transmission: raw IQ per receiver, or features per receiver (not both)."""

    iq: list[IQRecording] | None = Field(None, max_length=MAX_RECEIVERS)
    features: list[FeatureVector] | None = Field(None, max_length=MAX_RECEIVERS)

    @model_validator(mode="after")
    def _iq_or_features(self) -> LocalizeRequest:
        return _exactly_one(self, "iq", "features")


class BatchRequest(_Strict):
    """Several transmissions in one request."""

    transmissions: list[LocalizeRequest] = Field(min_length=1, max_length=MAX_TRANSMISSIONS)


class Ellipse(BaseModel):
    """The uncertainty ellipse holding `probability` of the position: semi-axes (m), bearing of the major axis (°)."""

    probability: float
    semi_major_m: float
    semi_minor_m: float
    orientation_deg: float = Field(description="bearing of the major axis, degrees clockwise from north")


class ReceiverReport(BaseModel):
    """What one receiver of the request measured: its SNR in the channel and whether that is a detection."""

    id: str = Field(description="the receiver's id in the model's table, or 'lat,lon' for an ad-hoc receiver")
    snr_db: float | None = Field(
        description="SNR in the channel (dB), from the feature vector sent or computed from the raw IQ by the "
        "service's feature extractor; null for a receiver sent as power_dbm only"
    )
    heard: bool | None = Field(
        description="snr_db ≥ the model's detection threshold (GET /v1/model: feature_params.detection_snr_db); "
        "null where snr_db is"
    )


class Mode(BaseModel):
    """A connected part of the radio map's 95 % region: its probability mass and most probable cell."""

    probability: float
    lat: float
    lon: float


class LocalizeResponse(BaseModel):
    """Where one transmission came from: position (lat/lon and local east/north m), covariance and ellipses; from a
    model that carries a radio map also `map`, `modes` and `regions`."""

    lat: float
    lon: float
    east_m: float
    north_m: float
    covariance_m2: list[list[float]] = Field(description="[[ee, en], [ne, nn]] in the local east/north frame")
    ellipses: list[Ellipse]
    geojson: dict = Field(description="GeoJSON Feature: the 95 % ellipse as a Polygon")
    receivers_used: list[str]
    receivers: list[ReceiverReport] = Field(description="per receiver of the request, in the order of receivers_used")
    model: dict
    cached: bool
    latency_ms: float
    map: str | None = Field(
        None,
        description="radio map only: 'used' (the hybrid of map and network), 'used alone: ' and why (power readings "
        "a network that reads spectral features does not answer, no proper answer from the network, or the "
        "network's answer and the map's disagree beyond both their spreads), or 'not used: ' and why",
    )
    modes: list[Mode] | None = Field(None, description="radio map only: the 95 % region's parts, most probable first")
    regions: dict[str, dict] | None = Field(
        None, description="radio map only: {'0.5': …, '0.95': …}, GeoJSON Polygon or MultiPolygon (lon/lat)"
    )


class BatchResponse(BaseModel):
    """The answers of a batch request, in request order."""

    results: list[LocalizeResponse]
