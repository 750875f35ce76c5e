"""Untrusted ONNX bytes: external data anywhere in a model is refused before ONNX Runtime opens a file."""

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from heimdall.errors import ModelLoadError
from heimdall.onnx_guard import MAX_MODEL_BYTES, check_model_size, require_self_contained

SECRET = np.array([1.5, 2.5, 3.5, 4.5], np.float32)
X = helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])
Y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])


def external(name, location="../../some/secret", data_location=True, entries=True):
    """A float32 [4] tensor whose bytes are to be read from `location`."""
    t = TensorProto(name=name, data_type=TensorProto.FLOAT, dims=[4])
    if data_location:
        t.data_location = TensorProto.EXTERNAL
    if entries:
        for key, value in {"location": location, "offset": "0", "length": "16"}.items():
            t.external_data.add(key=key, value=value)
    return t


def model(nodes, inputs=(X,), initializer=(), sparse=(), functions=()):
    graph = helper.make_graph(
        nodes, "g", list(inputs), [Y], initializer=list(initializer), sparse_initializer=list(sparse)
    )
    return helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid("local", 1)], functions=list(functions)
    )


def if_model(location):
    """y = x + w, with w an initializer of the If's then-branch: a subgraph tensor."""
    cond = helper.make_tensor_value_info("c", TensorProto.BOOL, [])
    w = helper.make_tensor_value_info("w", TensorProto.FLOAT, [4])
    then = helper.make_graph(
        [helper.make_node("Identity", ["w0"], ["w"])], "then", [], [w], initializer=[external("w0", location)]
    )
    other = helper.make_graph([helper.make_node("Identity", ["x"], ["w"])], "else", [], [w])
    return model(
        [
            helper.make_node("If", ["c"], ["w"], then_branch=then, else_branch=other),
            helper.make_node("Add", ["x", "w"], ["y"]),
        ],
        inputs=(X, cond),
    )


def loop_model():
    body = helper.make_graph(
        [helper.make_node("Constant", [], ["w"], value=external("w")), helper.make_node("Identity", ["c"], ["c_out"])],
        "body",
        [
            helper.make_tensor_value_info("i", TensorProto.INT64, []),
            helper.make_tensor_value_info("c", TensorProto.BOOL, []),
        ],
        [
            helper.make_tensor_value_info("c_out", TensorProto.BOOL, []),
            helper.make_tensor_value_info("w", TensorProto.FLOAT, [4]),
        ],
    )
    return model(
        [helper.make_node("Loop", ["", "cond"], ["scan_w"], body=body), helper.make_node("Identity", ["x"], ["y"])],
        inputs=(X, helper.make_tensor_value_info("cond", TensorProto.BOOL, [])),
    )


def function_model():
    f = helper.make_function(
        "local",
        "AddSecret",
        ["a"],
        ["b"],
        [helper.make_node("Constant", [], ["w"], value=external("w")), helper.make_node("Add", ["a", "w"], ["b"])],
        [helper.make_opsetid("", 18)],
    )
    return model([helper.make_node("AddSecret", ["x"], ["y"], domain="local")], functions=[f])


def sparse_model():
    indices = helper.make_tensor("si", TensorProto.INT64, [4], [0, 1, 2, 3])
    return model(
        [helper.make_node("Add", ["x", "s"], ["y"])], sparse=[helper.make_sparse_tensor(external("s"), indices, [4])]
    )


PLACES = {
    "graph initializer (../../some/secret)": lambda: model(
        [helper.make_node("Add", ["x", "w"], ["y"])], initializer=[external("w")]
    ),
    "If subgraph initializer": lambda: if_model("secret"),
    "Constant node attribute": lambda: model(
        [helper.make_node("Constant", [], ["w"], value=external("w")), helper.make_node("Add", ["x", "w"], ["y"])]
    ),
    "Loop body attribute": loop_model,
    "local function": function_model,
    "sparse initializer": sparse_model,
    "data_location only": lambda: model(
        [helper.make_node("Add", ["x", "w"], ["y"])], initializer=[external("w", entries=False)]
    ),
    "external_data entries only": lambda: model(
        [helper.make_node("Add", ["x", "w"], ["y"])], initializer=[external("w", data_location=False)]
    ),
}


@pytest.mark.parametrize("place", PLACES)
def test_external_data_anywhere_is_refused(place):
    data = PLACES[place]().SerializeToString()
    with pytest.raises(ModelLoadError, match="refers to external data.*refused"):
        require_self_contained(data, "crafted.onnx")


def test_the_threat_is_real_and_refused(tmp_path, monkeypatch):
    """ONNX Runtime itself reads a file of the serving host's working folder for a model loaded from bytes."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "secret").write_bytes(SECRET.tobytes())
    data = if_model("secret").SerializeToString()
    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    leaked = session.run(["y"], {"x": np.zeros(4, np.float32), "c": np.array(True)})[0]
    np.testing.assert_array_equal(leaked, SECRET)  # the file's bytes come back as the answer
    with pytest.raises(ModelLoadError, match="tensor 'w0' .*subgraph.* refers to external data 'secret'"):
        require_self_contained(data, "crafted.onnx")


def test_self_contained_models_pass_and_garbage_is_named():
    weights = helper.make_tensor("w", TensorProto.FLOAT, [4], SECRET)
    require_self_contained(
        model([helper.make_node("Add", ["x", "w"], ["y"])], initializer=[weights]).SerializeToString(), "fine.onnx"
    )
    with pytest.raises(ModelLoadError, match="garbage.onnx: not an ONNX model"):
        require_self_contained(b"\xff" * 64, "garbage.onnx")
    with pytest.raises(ModelLoadError, match="empty.onnx: model size 0 bytes is outside"):
        require_self_contained(b"", "empty.onnx")
    with pytest.raises(ModelLoadError, match="outside 1"):
        check_model_size(MAX_MODEL_BYTES + 1, "huge.onnx")
