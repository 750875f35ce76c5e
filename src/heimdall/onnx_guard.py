"""Untrusted ONNX bytes, checked before ONNX Runtime sees them: bounded size, no external data anywhere.

A tensor stored as external data names a file that ONNX Runtime opens when it builds the session. A model
from a store or a registry is not trusted to choose files on the serving host, so a Heimdall model must be
one self-contained file: the bytes are parsed as a ModelProto (nothing is loaded) and every tensor is
walked — initializers and sparse initializers of the graph and of every subgraph (If/Loop/Scan bodies),
tensor attributes of nodes, local functions and training graphs.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from heimdall.errors import ModelLoadError

if TYPE_CHECKING:  # onnx is imported where a model is checked
    import onnx

MAX_MODEL_BYTES = 512 * 1024 * 1024  # far above any Heimdall model; below protobuf's 2 GiB ceiling


def check_model_size(size_bytes: object, where: str, error: type[Exception] = ModelLoadError) -> None:
    """Raise `error` for a declared or actual model size outside 1 … MAX_MODEL_BYTES (before reading it)."""
    if not isinstance(size_bytes, int) or isinstance(size_bytes, bool) or not 0 < size_bytes <= MAX_MODEL_BYTES:
        raise error(f"{where}: model size {size_bytes!r:.40} bytes is outside 1 … {MAX_MODEL_BYTES} bytes")


def require_self_contained(data: bytes, where: str) -> onnx.ModelProto:
    """The parsed model; ModelLoadError unless `data` is an ONNX model whose tensors all live inside it."""
    import onnx
    from google.protobuf.message import DecodeError

    check_model_size(len(data), where)
    proto = onnx.ModelProto()
    try:
        proto.ParseFromString(data)
    except (DecodeError, RecursionError, ValueError) as exc:
        raise ModelLoadError(f"{where}: not an ONNX model ({type(exc).__name__})") from None
    for path, tensor in _tensors(proto):
        if tensor.data_location == onnx.TensorProto.EXTERNAL or len(tensor.external_data):
            location = next((e.value for e in tensor.external_data if e.key == "location"), "?")
            raise ModelLoadError(
                f"{where}: tensor {tensor.name!r:.80} ({path}) refers to external data {location!r:.120}; "
                "a Heimdall model must be one self-contained file, and external data would make the server "
                "read files of its own — refused"
            )
    return proto


def _tensors(model: onnx.ModelProto) -> Iterator[tuple[str, Any]]:
    """(where in the model, TensorProto) for every tensor of the model, depth first."""
    graphs = [("graph", model.graph)]
    graphs += [
        (f"training_info[{i}].{part}", getattr(t, part))
        for i, t in enumerate(model.training_info)
        for part in ("initialization", "algorithm")
    ]
    stack: list[tuple[str, Any, str]] = [(path, g, "graph") for path, g in graphs]
    stack += [(f"function {f.name!r:.60}", f, "function") for f in model.functions]
    while stack:
        path, owner, kind = stack.pop()
        if kind == "graph":
            for t in owner.initializer:
                yield f"{path} initializer", t
            for i, s in enumerate(owner.sparse_initializer):
                yield f"{path} sparse_initializer[{i}].values", s.values
                yield f"{path} sparse_initializer[{i}].indices", s.indices
        attributes = [
            (f"{path} node {n.name or n.op_type!r:.60} attribute", a) for n in owner.node for a in n.attribute
        ]
        if kind == "function":
            attributes += [(f"{path} default attribute", a) for a in owner.attribute_proto]
        for where, a in attributes:
            where = f"{where} {a.name!r:.60}"
            if a.HasField("t"):
                yield where, a.t
            yield from ((where, t) for t in a.tensors)
            for s in ([a.sparse_tensor] if a.HasField("sparse_tensor") else []) + list(a.sparse_tensors):
                yield f"{where} sparse values", s.values
                yield f"{where} sparse indices", s.indices
            if a.HasField("g"):
                stack.append((f"{where} subgraph", a.g, "graph"))
            stack += [(f"{where} subgraph[{i}]", g, "graph") for i, g in enumerate(a.graphs)]
