"""Export a trained checkpoint to one self-contained, validated ONNX file with its metadata inside.

The graph takes physical inputs and returns both normalised outputs (for parity checks) and metres:
    inputs:  features [B, R, F] float32, rx_position_m [B, R, 2] float32, present [B, R] float32
    outputs: mean_m [B, 2], cov_m2 [B, 2, 2], means [B, K, 2], chol [B, K, 3], logits [B, K]
B and R are dynamic. Before the file appears under its final name it passes onnx.checker (full check)
and ONNX Runtime must match PyTorch within PARITY_TOLERANCE (normalised units) at several batch sizes
and receiver subsets; otherwise nothing is written and ExportError says by how much it failed.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import subprocess
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, cast

import numpy as np

import heimdall
from heimdall.atomic import atomic_write_bytes
from heimdall.errors import CheckpointError, ExportError
from heimdall.train.model_card import ModelCard

if TYPE_CHECKING:  # torch is imported when a model is exported, not to read one's metadata
    import torch

    from heimdall.train.net import LocalizationNet
    from heimdall.train.task import LocalizationTask

OPSET = 18
PARITY_TOLERANCE = 1e-4
PARITY_BATCHES = (1, 2, 7, 64)
INPUT_NAMES = ("features", "rx_position_m", "present")
OUTPUT_NAMES = ("mean_m", "cov_m2", "means", "chol", "logits")
NORMALISED_OUTPUTS = ("means", "chol", "logits")


@dataclass
class ExportResult:
    """An exported model: where, its sha256, how far ONNX Runtime was from PyTorch, its card (metadata)."""

    path: Path
    sha256: str
    max_abs_diff: float
    card: ModelCard

    @property
    def metadata(self) -> dict[str, str]:
        """The model's ONNX metadata (the card as text)."""
        return self.card.to_onnx_metadata()


def source_revision() -> str:
    """The git commit of the source tree, or 'unknown' outside a checkout."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True, text=True, timeout=5
        )
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _wrapper(net: LocalizationNet) -> torch.nn.Module:
    import torch

    from heimdall.train.net import moment_match

    class Exported(torch.nn.Module):
        def __init__(self, inner: LocalizationNet) -> None:
            super().__init__()
            self.net = inner

        def forward(
            self, features: torch.Tensor, rx_position_m: torch.Tensor, present: torch.Tensor
        ) -> tuple[torch.Tensor, ...]:
            means, chol, logits = self.net(features, rx_position_m, present)
            mean, cov = moment_match(means, chol, logits)
            s = self.net.position_scale_m
            return mean * s, cov * s * s, means, chol, logits

    return Exported(net).eval()


def weights_sha256(net: torch.nn.Module) -> str:
    """sha256 over the parameters and buffers (names and bytes, in order)."""
    h = hashlib.sha256()
    for name, t in net.state_dict().items():
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def parity_inputs(
    net: LocalizationNet, rx_position_m: np.ndarray, batch: int, rng: np.random.Generator
) -> dict[str, np.ndarray]:
    """Plausible inputs: features around the training mean, the real receivers, random subsets present,
    and every third transmission with power only (the other features NaN, as the service sends them).

    rx_position_m: [R, 2] m → features float32 [batch, R, F], rx_position_m float32 [batch, R, 2], present [batch, R].
    """
    r = len(rx_position_m)
    mean = net.feature_mean.numpy()
    std = net.feature_std.numpy()
    features = (mean + std * rng.standard_normal((batch, r, len(mean)))).astype(np.float32)
    present = (rng.random((batch, r)) < rng.uniform(0.2, 1.0, (batch, 1))).astype(np.float32)
    present[0] = 1.0
    if batch > 1:
        present[1] = 0.0
        present[1, 0] = 1.0  # a single receiver
    spectral = np.arange(len(mean)) != np.arange(len(mean))[net.cfg.power_index]
    features[2::3, :, spectral] = np.nan
    pos = np.broadcast_to(rx_position_m.astype(np.float32), (batch, r, 2)).copy()
    return {"features": features, "rx_position_m": pos, "present": present}


def export_checkpoint(checkpoint: str | Path, out_path: str | Path, metrics: dict | None = None) -> ExportResult:
    """Export a Heimdall checkpoint to `out_path` (validated, atomic)."""
    from heimdall.train.task import load_task

    return export_task(load_task(checkpoint), out_path, str(checkpoint), metrics)


def export_task(task: LocalizationTask, out_path: str | Path, where: str, metrics: dict | None = None) -> ExportResult:
    """Export the network of a loaded checkpoint (`where` names it) to `out_path` (validated, atomic)."""
    import onnx
    import torch

    card = ModelCard.from_checkpoint(task.heimdall_meta, where, CheckpointError)
    net = task.net.eval()
    rx_position_m = card.rx_position_m
    model = _wrapper(net)
    example = parity_inputs(net, rx_position_m, 2, np.random.default_rng(0))
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    batch = torch.export.Dim("batch", min=1, max=1 << 20)
    rx = torch.export.Dim("rx", min=1, max=4096)
    # the exporter logs about optional operator libraries (torchvision) and its own deprecations
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(
                model,
                tuple(torch.from_numpy(example[k]) for k in INPUT_NAMES),
                input_names=list(INPUT_NAMES),
                output_names=list(OUTPUT_NAMES),
                dynamic_shapes={
                    "features": {0: batch, 1: rx},
                    "rx_position_m": {0: batch, 1: rx},
                    "present": {0: batch, 1: rx},
                },
                opset_version=OPSET,
                dynamo=True,
                external_data=False,
                verbose=False,
            )
        if program is None:
            raise ExportError("torch.onnx.export returned no program")
        proto = program.model_proto
    except Exception as exc:
        raise ExportError(f"{where}: torch.onnx.export failed: {type(exc).__name__}: {exc}") from None
    card = dataclasses.replace(
        card,
        heimdall_version=heimdall.__version__,
        source_revision=source_revision(),
        net_config=json.dumps(net.cfg.to_dict()),
        weights_sha256=weights_sha256(net),
        metrics=metrics or {},
        normalisation=json.dumps(
            {
                "feature_mean": net.feature_mean.tolist(),
                "feature_std": net.feature_std.tolist(),
                "position_scale_m": float(net.position_scale_m),
            }
        ),
    )
    for k, v in card.to_onnx_metadata().items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = k, v
    proto.producer_name = "heimdall"
    proto.producer_version = heimdall.__version__
    try:
        onnx.checker.check_model(proto, full_check=True)
    except onnx.checker.ValidationError as exc:
        raise ExportError(f"{where}: exported graph fails onnx.checker: {exc}") from None
    data = proto.SerializeToString()
    diff = parity_max_abs_diff(model, data, rx_position_m)
    if not diff <= PARITY_TOLERANCE:
        raise ExportError(
            f"{where}: ONNX Runtime differs from PyTorch by {diff:.3g} (normalised units), "
            f"more than the tolerance {PARITY_TOLERANCE:g}; nothing was written"
        )
    try:
        atomic_write_bytes(out, data)
    except OSError as exc:
        raise ExportError(f"{out}: cannot write the model: {exc}") from None
    return ExportResult(path=out, sha256=hashlib.sha256(data).hexdigest(), max_abs_diff=diff, card=card)


def parity_max_abs_diff(model: torch.nn.Module, onnx_bytes: bytes, rx_position_m: np.ndarray) -> float:
    """Largest |ONNX Runtime − PyTorch| over the normalised outputs, batches PARITY_BATCHES, subsets of receivers."""
    import onnxruntime as ort
    import torch

    session = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(1)
    worst = 0.0
    subsets = [np.arange(len(rx_position_m)), np.arange(len(rx_position_m))[::2], np.arange(min(3, len(rx_position_m)))]
    for b in PARITY_BATCHES:
        for rows in subsets:
            inputs = parity_inputs(cast("LocalizationNet", model.net), rx_position_m[rows], b, rng)
            got = dict(zip(OUTPUT_NAMES, session.run(list(OUTPUT_NAMES), inputs), strict=False))
            with torch.no_grad():
                ref = dict(zip(OUTPUT_NAMES, model(*(torch.from_numpy(inputs[k]) for k in INPUT_NAMES)), strict=False))
            for name in NORMALISED_OUTPUTS:
                diff = float(np.max(np.abs(got[name] - ref[name].numpy())))
                if not np.isfinite(diff):  # NaN/Inf outputs fail, whatever the other side says
                    return float("inf")
                worst = max(worst, diff)
    return worst


def read_metadata(path: str | Path) -> dict[str, str]:
    """The metadata_props of a Heimdall ONNX file (without loading the weights into a session)."""
    import onnx

    p = Path(path)
    if not p.is_file():
        raise ExportError(f"{p}: model file not found")
    try:
        proto = onnx.load(str(p), load_external_data=False)
    except Exception as exc:
        raise ExportError(f"{p}: not an ONNX model ({type(exc).__name__})") from None
    return {e.key: e.value for e in proto.metadata_props}


def metadata_of(data: bytes) -> dict[str, str]:
    """The metadata_props of ONNX bytes (parsed, nothing loaded into a session)."""
    import onnx

    return {e.key: e.value for e in onnx.load_from_string(data).metadata_props}
