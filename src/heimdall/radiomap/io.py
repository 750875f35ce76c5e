"""A radio map inside an ONNX file, so it travels like every Heimdall model (one self-contained file with its
metadata, the same model store, registry, signatures and refusal rules).

The map's arrays are initializers named `radiomap.<name>`, each exposed by an Identity node as a graph
output of the same name (so the file is a valid, loadable ONNX model on its own); the scalars and small
lists are one JSON metadata entry, `radiomap`. A network model can carry a map too (`attach`): then the
file holds both the network's graph and these tensors.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import numpy as np

from heimdall.radiomap.fading import FadingKernel
from heimdall.radiomap.grid import MapGrid
from heimdall.radiomap.model import RadioMap
from heimdall.radiomap.noise import PowerNoise

if TYPE_CHECKING:  # onnx is imported where a map is written or read
    import onnx

PREFIX = "radiomap."
METADATA_KEY = "radiomap"
MAP_FORMAT = "heimdall-radiomap/1"
OPSET = 18
MAX_RECEIVERS = 256


class RadioMapFormatError(ValueError):
    """The map inside a model is missing, malformed or inconsistent; names the field."""


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
    }


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
    """The map inside an onnx.ModelProto; RadioMapFormatError naming the field when it is not whole."""
    from onnx import numpy_helper

    meta = {p.key: p.value for p in model.metadata_props}
    try:
        d = json.loads(meta[METADATA_KEY])
    except (KeyError, json.JSONDecodeError) as exc:
        raise RadioMapFormatError(f"metadata {METADATA_KEY}: missing or not JSON ({type(exc).__name__})") from None
    if not isinstance(d, dict) or d.get("format") != MAP_FORMAT:
        raise RadioMapFormatError(f"metadata {METADATA_KEY}.format: expected {MAP_FORMAT!r}")
    arrays = {t.name[len(PREFIX) :]: t for t in model.graph.initializer if t.name.startswith(PREFIX)}
    try:
        ids = [str(i) for i in d["receiver_ids"]]
        g = d["grid"]
        grid = MapGrid(
            float(g["east0_m"]),
            float(g["north0_m"]),
            float(g["spacing_m"]),
            int(g["nx"]),
            int(g["ny"]),
            int(g["coarse_factor"]),
        )
        n = d["noise"]
        noise = PowerNoise(float(n["c_noise"]), float(n["c_signal"]), float(n["floor_snr_db"]))
        kernels = tuple(
            FadingKernel(
                float(k["start_db"]),
                float(k["step_db"]),
                numpy_helper.to_array(arrays[f"kernel_{i}"]).astype(np.float64),
            )
            for i, k in enumerate(d["kernels"])
        )
        values = {
            k: numpy_helper.to_array(arrays[k])
            for k in ("mean_dbm", "spread_db", "rx_position_m", "component_log_weight", "power_log_prior")
        }
        power_start = float(d["power_start_dbm"])
    except (KeyError, TypeError, ValueError) as exc:
        raise RadioMapFormatError(f"metadata {METADATA_KEY} or tensors {PREFIX}*: incomplete ({exc})") from None
    r = len(ids)
    shapes = {
        "mean_dbm": (grid.n_cells, r),
        "spread_db": (grid.n_cells, r),
        "rx_position_m": (r, 2),
        "component_log_weight": (len(kernels),),
    }
    if not 1 <= r <= MAX_RECEIVERS or not 1 <= len(kernels) <= 4:
        raise RadioMapFormatError(f"metadata {METADATA_KEY}: {r} receivers and {len(kernels)} fading components")
    for name, shape in shapes.items():
        if values[name].shape != shape:
            raise RadioMapFormatError(f"tensor {PREFIX}{name}: shape {values[name].shape}, expected {shape}")
    if not (grid.spacing_m > 0 and all(np.isfinite(v).all() for v in values.values())):
        raise RadioMapFormatError(f"tensors {PREFIX}*: non-finite values or a grid spacing ≤ 0")
    return RadioMap(
        grid=grid,
        receiver_ids=tuple(ids),
        rx_position_m=values["rx_position_m"].astype(np.float64),
        mean_dbm=values["mean_dbm"].astype(np.float32),
        spread_db=values["spread_db"].astype(np.float32),
        noise=noise,
        kernels=kernels,
        component_log_weight=values["component_log_weight"],
        power_start_dbm=power_start,
        power_log_prior=values["power_log_prior"].astype(np.float64),
        n_labels=int(d.get("n_labels", 0)),
        info=d.get("info") or {},
    )
