"""LocalizationNet: a set model over receivers → a 2-D Gaussian (mixture) over the transmitter position.

Input, in physical units (the model normalises internally, so an exported model takes raw features):
    features       float32 [B, R, F]  per-receiver features (heimdall.features.feature_matrix), dBm/dB;
                                      NaN marks a value not measured (e.g. only power_dbm is known)
    rx_position_m  float32 [B, R, 2]  receiver east/north in the model's local frame, metres
    present        float32 [B, R]     1 where the receiver's recording is part of the input, else 0
Output (`forward`), in normalised units (metres / position_scale_m):
    means [B, K, 2], chol [B, K, 3] (log σ₁, log σ₂, ρ-term: L = [[σ₁, 0], [c, σ₂]]), logits [B, K]
`predict_m` returns the moment-matched mean [B, 2] in metres and covariance [B, 2, 2] in m².

Receivers form a set: each is a token (feature encoder + Fourier encoding of its position), a learned
summary token attends with them through masked self-attention (so even an input with no receiver
present has one valid token and stays finite), and the head reads the summary plus a masked mean.
Relative power (each receiver's power minus the mean over present receivers) is computed inside the
model: the transmit power is unknown, so relative power carries the geometry. A receiver whose spectral
features are missing (NaN; trained with feature dropout) is encoded with its power and a flag saying so.
"""

from __future__ import annotations

import math
from typing import cast

import torch
from numpy.typing import ArrayLike
from torch import nn

from heimdall.train.config import NetConfig

NOMINAL_SCALE_M = 100_000.0
INITIAL_SIGMA_FRACTION = 0.3


class _Block(nn.Module):
    """Pre-norm transformer block with explicit masked attention (exports cleanly to ONNX)."""

    def __init__(self, d: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(d)
        self.qkv = nn.Linear(d, 3 * d)
        self.proj = nn.Linear(d, d)
        self.norm2 = nn.LayerNorm(d)
        self.mlp = nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(), nn.Dropout(dropout), nn.Linear(4 * d, d))

    def forward(self, x: torch.Tensor, key_bias: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        h = self.heads
        q, k, v = self.qkv(self.norm1(x)).reshape(b, t, 3, h, d // h).permute(2, 0, 3, 1, 4)
        att = (q @ k.transpose(-1, -2)) / math.sqrt(d // h) + key_bias[:, None, None, :]
        y = (att.softmax(dim=-1) @ v).transpose(1, 2).reshape(b, t, d)
        x = x + self.proj(y)
        return x + self.mlp(self.norm2(x))


class LocalizationNet(nn.Module):
    """Set-transformer over receivers: features and positions of any number of receivers → a Gaussian mixture of the
    position (normalised units)."""

    feature_mean: torch.Tensor  # buffers, registered in __init__
    feature_std: torch.Tensor
    position_scale_m: torch.Tensor
    covariance_scale: torch.Tensor
    frequencies: torch.Tensor

    def __init__(self, cfg: NetConfig) -> None:
        super().__init__()
        self.cfg = cfg
        d, f = cfg.d_model, cfg.n_features
        self.register_buffer("feature_mean", torch.zeros(f))
        self.register_buffer("feature_std", torch.ones(f))
        self.register_buffer("position_scale_m", torch.tensor(NOMINAL_SCALE_M))
        self.register_buffer("covariance_scale", torch.tensor(1.0))  # post-hoc calibration on validation data
        self.register_buffer("frequencies", 2.0 ** torch.linspace(-1.0, 5.0, cfg.n_frequencies))
        self.feature_encoder = nn.Sequential(nn.Linear(f + 2, d), nn.GELU(), nn.Linear(d, d))
        self.position_encoder = nn.Sequential(nn.Linear(4 * cfg.n_frequencies + 2, d), nn.GELU(), nn.Linear(d, d))
        self.summary = nn.Parameter(torch.zeros(1, 1, d))
        self.blocks = nn.ModuleList(_Block(d, cfg.n_heads, cfg.dropout) for _ in range(cfg.n_layers))
        self.norm = nn.LayerNorm(d)
        k = cfg.n_components
        self.head = nn.Sequential(nn.Linear(2 * d, 2 * d), nn.GELU(), nn.Linear(2 * d, k * 6))
        nn.init.normal_(self.summary, std=0.02)
        self._init_wide()

    def _init_wide(self) -> None:
        """Start with σ ≈ INITIAL_SIGMA_FRACTION of the position scale: a narrow initial σ makes the NLL's
        first gradients on the mean enormous and training stalls near the network's centroid."""
        last = cast(nn.Linear, self.head[-1])
        with torch.no_grad():
            last.weight.mul_(0.1)
            bias = last.bias.view(self.cfg.n_components, 6)
            bias.zero_()
            lo, hi = self._log_sigma_bounds()
            frac = ((math.log(INITIAL_SIGMA_FRACTION) - lo) / (hi - lo)).double()  # a tensor: works on "meta" too
            bias[:, 2:4] = torch.log(frac / (1 - frac))
            bias[:, 0:2].uniform_(-0.3, 0.3)  # spread the components of a mixture

    def set_normalisation(
        self, feature_mean: ArrayLike | torch.Tensor, feature_std: ArrayLike | torch.Tensor, position_scale_m: float
    ) -> None:
        """Fix the input normalisation (computed on the training split); stored with the weights."""
        self.feature_mean.copy_(torch.as_tensor(feature_mean, dtype=torch.float32))
        self.feature_std.copy_(torch.as_tensor(feature_std, dtype=torch.float32).clamp_min(1e-3))
        self.position_scale_m.fill_(float(position_scale_m))

    def calibrate_covariance(self, factor: float) -> float:
        """Multiply every covariance by `factor` (fitted on held-out data); returns the new total scale."""
        self.covariance_scale.mul_(float(factor))
        return float(self.covariance_scale)

    def _log_sigma_bounds(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Bounds of log σ in normalised units (σ between min_sigma_m and max_sigma_m)."""
        scale = self.position_scale_m
        return (torch.log(self.cfg.min_sigma_m / scale), torch.log(self.cfg.max_sigma_m / scale))

    def forward(
        self, features: torch.Tensor, rx_position_m: torch.Tensor, present: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The position mixture of a batch (normalised units).

        features [B, R, F], rx_position_m [B, R, 2] m, present [B, R] → means [B, K, 2], Cholesky factors
        [B, K, 2, 2], logits [B, K].
        """
        present = present.to(features.dtype)
        measured = torch.isfinite(features)
        spectral = measured.all(-1).to(features.dtype)  # 1: full feature vector, 0: some values missing
        features = torch.where(measured, features, self.feature_mean)  # missing → normalised 0
        power = features[..., self.cfg.power_index]
        n_present = present.sum(-1, keepdim=True).clamp_min(1.0)
        relative = (power - (power * present).sum(-1, keepdim=True) / n_present) / 10.0  # tens of dB
        x = (features - self.feature_mean) / self.feature_std
        x = torch.cat(
            [x * present[..., None], (relative * present)[..., None], (spectral * present)[..., None]], dim=-1
        )
        p = rx_position_m / self.position_scale_m
        angles = (p[..., None] * self.frequencies * (2 * math.pi)).flatten(-2)
        pos = torch.cat([p, torch.sin(angles), torch.cos(angles)], dim=-1)
        tokens = self.feature_encoder(x) + self.position_encoder(pos)
        b = features.shape[0]
        seq = torch.cat([self.summary.expand(b, -1, -1), tokens], dim=1)
        valid = torch.cat([torch.ones_like(present[:, :1]), present], dim=1)
        key_bias = (1.0 - valid) * -1e4
        for block in self.blocks:
            seq = block(seq, key_bias)
        seq = self.norm(seq)
        pooled = (seq[:, 1:] * present[..., None]).sum(1) / n_present
        out = self.head(torch.cat([seq[:, 0], pooled], dim=-1)).reshape(b, self.cfg.n_components, 6)
        lo, hi = self._log_sigma_bounds()
        log_sigma = lo + (hi - lo) * torch.sigmoid(out[..., 2:4]) + 0.5 * torch.log(self.covariance_scale)
        shear = out[..., 4:5] * torch.sqrt(self.covariance_scale)
        return out[..., 0:2], torch.cat([log_sigma, shear], dim=-1), out[..., 5]

    def predict_m(
        self, features: torch.Tensor, rx_position_m: torch.Tensor, present: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Moment-matched mean [B, 2] in metres and covariance [B, 2, 2] in m²."""
        mean, cov = moment_match(*self(features, rx_position_m, present))
        s = self.position_scale_m
        return mean * s, cov * s * s


def component_covariance(chol: torch.Tensor) -> torch.Tensor:
    """[..., 3] (log σ₁, log σ₂, c) → Σ = L·Lᵀ [..., 2, 2] with L = [[σ₁, 0], [c, σ₂]]."""
    a, b, c = chol[..., 0].exp(), chol[..., 1].exp(), chol[..., 2]
    return torch.stack([torch.stack([a * a, a * c], -1), torch.stack([a * c, c * c + b * b], -1)], -2)


def moment_match(means: torch.Tensor, chol: torch.Tensor, logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Single Gaussian with the mixture's mean [B, 2] and covariance [B, 2, 2]."""
    w = logits.softmax(-1)[..., None]
    mean = (w * means).sum(-2)
    d = means - mean[:, None, :]
    cov = (w[..., None] * (component_covariance(chol) + d[..., :, None] * d[..., None, :])).sum(-3)
    return mean, cov


def mixture_nll(means: torch.Tensor, chol: torch.Tensor, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Negative log-likelihood [B] of target [B, 2] under the Gaussian mixture (normalised units).

    Per component: ½·|z|² + log σ₁ + log σ₂ + log 2π with z = L⁻¹(x − μ), i.e. ½·(x−μ)ᵀΣ⁻¹(x−μ) + ½·log|Σ|.
    """
    d = target[:, None, :] - means
    log_a, log_b, c = chol[..., 0], chol[..., 1], chol[..., 2]
    z1 = d[..., 0] * torch.exp(-log_a)
    z2 = (d[..., 1] - c * z1) * torch.exp(-log_b)
    log_pdf = -0.5 * (z1 * z1 + z2 * z2) - log_a - log_b - math.log(2 * math.pi)
    return -torch.logsumexp(log_pdf + logits.log_softmax(-1), dim=-1)
