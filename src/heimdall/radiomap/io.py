"""A radio map inside an ONNX file, so it travels like every Heimdall model (one self-contained file with its
metadata, the same model store, registry, signatures and refusal rules).

The map's arrays are initializers named `radiomap.<name>`, each exposed by an Identity node as a graph
output of the same name (so the file is a valid, loadable ONNX model on its own); the scalars and small
lists are one JSON metadata entry, `radiomap`. A network model can carry a map too (`attach`): then the
file holds both the network's graph and these tensors.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import numpy as np

from heimdall.errors import RadioMapFormatError
from heimdall.features import SNR_FLOOR_DB
from heimdall.geo import LatLonLattice
from heimdall.memory import over_budget
from heimdall.radiomap.fading_kernel import FadingKernel
from heimdall.radiomap.grid import MAX_CELLS, MapGrid
from heimdall.radiomap.likelihood import STEP_DB
from heimdall.radiomap.log_distance import LOG_DISTANCE_WEIGHTS, LogDistancePartner, LogDistanceSearch
from heimdall.radiomap.measurement_noise import PowerNoise
from heimdall.radiomap.model import RadioMap

if TYPE_CHECKING:  # onnx is imported where a map is written or read
    import onnx

PREFIX = "radiomap."
METADATA_KEY = "radiomap"
MAP_FORMAT = "heimdall-radiomap/1"
OPSET = 18
# what `heimdall map fit` can make, far from any real map's values: a file outside them is refused at load
MAX_RECEIVERS = 256
MAX_COMPONENTS = 4  # fading components (scenario_fading makes two)
MAX_KERNEL_POINTS = 2048  # 512 dB of window gain at STEP_DB
MAX_POWER_STEPS = 512  # transmit power prior values, one per dB
MAX_COARSE_FACTOR = 16  # cells per block side: REFINED_BLOCKS · factor² cells are scored per transmission
MAX_LEVEL_DB = 1000.0  # |dB| or |dBm| of any level, gain or power
MAX_EXTENT_M = 1e7  # grid origin and spacing, m
MIN_SPACING_M = 1.0
MAX_NOISE = 1e3  # the measurement noise constants (linear SNR units)
MAX_LABELS = 10**9
MAX_EXPONENT = 100.0  # |path-loss exponent| of a log-distance partner


def _arrays(m: RadioMap) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {
        "mean_dbm": m.mean_dbm.astype(np.float32),
        "spread_db": m.spread_db.astype(np.float32),
        "rx_position_m": m.rx_position_m.astype(np.float64),
        "component_log_weight": np.asarray(m.component_log_weight, np.float64),
        "power_log_prior": np.asarray(m.power_log_prior, np.float64),
    }
    for i, k in enumerate(m.kernels):
        out[f"kernel_{i}"] = np.asarray(k.log_weight, np.float64)
    return out


def _description(m: RadioMap) -> dict:
    g = m.grid
    return {
        "format": MAP_FORMAT,
        "receiver_ids": list(m.receiver_ids),
        "grid": {
            "east0_m": g.east0_m,
            "north0_m": g.north0_m,
            "spacing_m": g.spacing_m,
            "nx": g.nx,
            "ny": g.ny,
            "coarse_factor": g.coarse_factor,
        },
        "noise": {"c_noise": m.noise.c_noise, "c_signal": m.noise.c_signal, "floor_snr_db": m.noise.floor_snr_db},
        "kernels": [{"start_db": k.start_db, "step_db": k.step_db} for k in m.kernels],
        "power_start_dbm": m.power_start_dbm,
        "n_labels": m.n_labels,
        "info": m.info,
        **({} if m.log_distance is None else {"log_distance": _partner_description(m.log_distance)}),
    }


def _partner_description(partner: LogDistancePartner) -> dict:
    return {
        "exponent": partner.exponent,
        "offsets_db": [float(v) for v in partner.offsets_db],
        "sigma_db": partner.sigma_db,
        "weight": partner.weight,
    }


def _partner(d: dict, n_receivers: int) -> LogDistancePartner | None:
    """The map's log-distance partner as described (absent: None); RadioMapFormatError naming the field."""
    if "log_distance" not in d:
        return None
    p = _field(d, "log_distance", dict)
    offsets = _field(p, "log_distance.offsets_db", list)
    numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in offsets)
    if len(offsets) != n_receivers or not numbers or not all(abs(v) <= MAX_LEVEL_DB for v in offsets):
        raise RadioMapFormatError(
            f"metadata {METADATA_KEY}.log_distance.offsets_db: expected {n_receivers} numbers within "
            f"±{MAX_LEVEL_DB:g} dB, got {offsets!r:.60}"
        )
    return LogDistancePartner(
        _number(p, "log_distance.exponent", -MAX_EXPONENT, MAX_EXPONENT),
        np.array(offsets, np.float64),
        _number(p, "log_distance.sigma_db", 1e-6, MAX_LEVEL_DB),
        _number(p, "log_distance.weight", 0.0, max(LOG_DISTANCE_WEIGHTS)),
    )


def attach(model: onnx.ModelProto, m: RadioMap) -> None:
    """Add the map's tensors, Identity outputs and metadata to an onnx.ModelProto (in place)."""
    from onnx import helper, numpy_helper

    graph = model.graph
    for name, array in _arrays(m).items():
        full = PREFIX + name
        graph.initializer.append(numpy_helper.from_array(array, full))
        graph.node.append(helper.make_node("Identity", [full], [full + ".out"], name=full + ".identity"))
        graph.output.append(
            helper.make_tensor_value_info(
                full + ".out", helper.np_dtype_to_tensor_dtype(array.dtype), list(array.shape)
            )
        )
    entry = model.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, json.dumps(_description(m))


def detach(model: onnx.ModelProto) -> None:
    """Remove what `attach` added (the map's tensors, Identity nodes, outputs and metadata) from an
    onnx.ModelProto, in place: the model it was attached to is left."""
    graph = model.graph
    for container, name_of in (
        (graph.initializer, lambda t: t.name),
        (graph.node, lambda n: n.name),
        (graph.output, lambda o: o.name),
    ):
        kept = [item for item in container if not name_of(item).startswith(PREFIX)]
        del container[:]
        container.extend(kept)
    kept_meta = [p for p in model.metadata_props if p.key != METADATA_KEY]
    del model.metadata_props[:]
    model.metadata_props.extend(kept_meta)


def to_onnx(m: RadioMap, metadata: dict[str, str]) -> onnx.ModelProto:
    """A map-only model: onnx.ModelProto holding the map and `metadata` (as metadata_props)."""
    from onnx import helper

    model = helper.make_model(
        helper.make_graph([], "heimdall-radiomap", [], []),
        opset_imports=[helper.make_opsetid("", OPSET)],
        producer_name="heimdall",
    )
    attach(model, m)
    for key, value in metadata.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    return model


def has_map(model: onnx.ModelProto) -> bool:
    """Whether an onnx.ModelProto carries a map (its metadata entry; from_onnx checks the rest)."""
    return any(p.key == METADATA_KEY for p in model.metadata_props)


def from_onnx(model: onnx.ModelProto) -> RadioMap:
    """The map inside an onnx.ModelProto, every value within what `heimdall map fit` makes and its likelihood table
    built (a map that could not answer is refused at load, not on its first request); RadioMapFormatError naming the
    field when it is not whole, out of range, or too large for the memory budget (heimdall.memory)."""
    from onnx import numpy_helper

    meta = {p.key: p.value for p in model.metadata_props}
    try:
        d = json.loads(meta[METADATA_KEY])
    except (KeyError, json.JSONDecodeError, RecursionError) as exc:
        raise RadioMapFormatError(f"metadata {METADATA_KEY}: missing or not JSON ({type(exc).__name__})") from None
    if not isinstance(d, dict) or d.get("format") != MAP_FORMAT:
        raise RadioMapFormatError(f"metadata {METADATA_KEY}.format: expected {MAP_FORMAT!r}")
    arrays = {t.name[len(PREFIX) :]: t for t in model.graph.initializer if t.name.startswith(PREFIX)}

    def array(name: str) -> np.ndarray:
        if name not in arrays:
            raise RadioMapFormatError(f"tensor {PREFIX}{name}: missing")
        try:
            value = numpy_helper.to_array(arrays[name])
        except (ValueError, TypeError) as exc:
            raise RadioMapFormatError(f"tensor {PREFIX}{name}: not readable ({exc})") from None
        if value.dtype.kind not in "fiu" or not np.isfinite(value).all():
            raise RadioMapFormatError(f"tensor {PREFIX}{name}: expected finite numbers, got {value.dtype}")
        return value

    ids = _field(d, "receiver_ids", list)
    if not 1 <= len(ids) <= MAX_RECEIVERS or not all(isinstance(i, str) for i in ids):
        raise RadioMapFormatError(
            f"metadata {METADATA_KEY}.receiver_ids: expected 1 to {MAX_RECEIVERS} receiver ids, got {len(ids)}"
        )
    g = _field(d, "grid", dict)
    nx, ny = _int(g, "grid.nx", 1, MAX_CELLS), _int(g, "grid.ny", 1, MAX_CELLS)
    if nx * ny > MAX_CELLS:
        raise RadioMapFormatError(f"metadata {METADATA_KEY}.grid.nx, ny: {nx} × {ny} cells, at most {MAX_CELLS}")
    grid = MapGrid(
        _number(g, "grid.east0_m", -MAX_EXTENT_M, MAX_EXTENT_M),
        _number(g, "grid.north0_m", -MAX_EXTENT_M, MAX_EXTENT_M),
        _number(g, "grid.spacing_m", MIN_SPACING_M, MAX_EXTENT_M),
        nx,
        ny,
        _int(g, "grid.coarse_factor", 1, MAX_COARSE_FACTOR),
    )
    n = _field(d, "noise", dict)
    floor = _number(n, "noise.floor_snr_db", SNR_FLOOR_DB, SNR_FLOOR_DB)
    noise = PowerNoise(
        _number(n, "noise.c_noise", 1e-9, MAX_NOISE), _number(n, "noise.c_signal", 0.0, MAX_NOISE), floor
    )
    described = _field(d, "kernels", list)
    if not 1 <= len(described) <= MAX_COMPONENTS or not all(isinstance(k, dict) for k in described):
        raise RadioMapFormatError(
            f"metadata {METADATA_KEY}.kernels: expected 1 to {MAX_COMPONENTS} fading components, got {len(described)}"
        )
    kernels = []
    for i, k in enumerate(described):
        weights = array(f"kernel_{i}").astype(np.float64)
        if weights.ndim != 1 or not 1 <= len(weights) <= MAX_KERNEL_POINTS:
            raise RadioMapFormatError(
                f"tensor {PREFIX}kernel_{i}: shape {weights.shape}, expected 1 to {MAX_KERNEL_POINTS} values"
            )
        start = _number(k, f"kernels[{i}].start_db", -MAX_LEVEL_DB, MAX_LEVEL_DB)
        kernels.append(FadingKernel(start, _number(k, f"kernels[{i}].step_db", STEP_DB, STEP_DB), weights))
    r, c = len(ids), len(kernels)
    values = {}
    for name, shape in (
        ("mean_dbm", (grid.n_cells, r)),
        ("spread_db", (grid.n_cells, r)),
        ("rx_position_m", (r, 2)),
        ("component_log_weight", (c,)),
    ):
        values[name] = array(name)
        if values[name].shape != shape:
            raise RadioMapFormatError(f"tensor {PREFIX}{name}: shape {values[name].shape}, expected {shape}")
    prior = array("power_log_prior").astype(np.float64)
    if prior.ndim != 1 or not 1 <= len(prior) <= MAX_POWER_STEPS:
        raise RadioMapFormatError(
            f"tensor {PREFIX}power_log_prior: shape {prior.shape}, expected 1 to {MAX_POWER_STEPS} values"
        )
    for name, low, high in (("mean_dbm", -MAX_LEVEL_DB, MAX_LEVEL_DB), ("spread_db", 0.0, MAX_LEVEL_DB)):
        if not (values[name].min() >= low and values[name].max() <= high):
            raise RadioMapFormatError(f"tensor {PREFIX}{name}: values outside {low:g} … {high:g} dB")
    m = RadioMap(
        grid=grid,
        receiver_ids=tuple(ids),
        rx_position_m=values["rx_position_m"].astype(np.float64),
        mean_dbm=values["mean_dbm"].astype(np.float32),
        spread_db=values["spread_db"].astype(np.float32),
        noise=noise,
        kernels=tuple(kernels),
        component_log_weight=values["component_log_weight"].astype(np.float64),
        power_start_dbm=_number(d, "power_start_dbm", -MAX_LEVEL_DB, MAX_LEVEL_DB),
        power_log_prior=prior,
        n_labels=_int(d, "n_labels", 0, MAX_LABELS, default=0),
        info=_field(d, "info", dict, default={}),
        log_distance=_partner(d, len(ids)),
    )
    if "spread_floor_db" in m.info:  # read back by the service (GET /v1/model): a number or refused here
        m.info["spread_floor_db"] = _number(m.info, "info.spread_floor_db", 0.0, MAX_LEVEL_DB)
    # what answering takes besides the file's arrays: their float32 copies, the spread index, the tables, the lat/lon
    # of the cells the service draws regions on (heimdall.geo.LatLonLattice, a border of one cell)
    lattice = LatLonLattice.BYTES_PER_NODE * (m.grid.nx + 2) * (m.grid.ny + 2)
    # and where a log-distance partner is weighed in, its model's means at its search points
    points = len(LogDistanceSearch.search_grid(m.grid).points()) if m.log_distance_weight > 0 else 0
    partner = (LogDistanceSearch.BYTES_PER_VALUE * m.n_receivers + LogDistanceSearch.BYTES_PER_POINT) * points
    need = m.mean_dbm.nbytes + m.spread_db.nbytes + m.spread_db.size + m.table_bytes + lattice + partner
    why = over_budget(need)
    if why is not None:
        raise RadioMapFormatError(f"metadata {METADATA_KEY}: a map too large for the memory budget: it needs {why}")
    m.table  # noqa: B018  (built now, once: the first request would otherwise pay for it)
    return m


_MISSING = object()


def _field(d: dict, name: str, kind: type | tuple[type, ...], default: Any = _MISSING) -> Any:  # noqa: ANN401
    """d[name] (the last part of a dotted name) of the given JSON type; RadioMapFormatError naming the field."""
    value = d.get(name.rpartition(".")[2], default)
    if value is _MISSING or not isinstance(value, kind) or isinstance(value, bool):
        expected = "a number" if isinstance(kind, tuple) else f"a JSON {kind.__name__}"
        raise RadioMapFormatError(f"metadata {METADATA_KEY}.{name}: expected {expected}, got {value!r:.60}")
    return value


def _number(d: dict, name: str, low: float, high: float) -> float:
    """A finite JSON number low ≤ x ≤ high; RadioMapFormatError naming the field and the range otherwise."""
    value = _field(d, name, (int, float))
    if not low <= value <= high:  # NaN compares false: refused too
        where = f"{low:g}" if low == high else f"{low:g} … {high:g}"
        raise RadioMapFormatError(f"metadata {METADATA_KEY}.{name}: {value!r:.40}, expected {where}")
    return float(value)


def _int(d: dict, name: str, low: int, high: int, default: Any = _MISSING) -> int:  # noqa: ANN401
    """A JSON integer low ≤ n ≤ high (Infinity and fractions refused); RadioMapFormatError naming the field."""
    value = _field(d, name, int, default)
    if not low <= value <= high:
        raise RadioMapFormatError(f"metadata {METADATA_KEY}.{name}: {value!r:.40}, expected {low} … {high}")
    return value
