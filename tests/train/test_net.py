import numpy as np
import pytest
import torch

from heimdall.errors import ConfigError
from heimdall.train.config import resolve
from heimdall.train.net import LocalizationNet, NetConfig, component_covariance, mixture_nll, moment_match


@pytest.fixture
def net():
    torch.manual_seed(0)
    n = LocalizationNet(NetConfig(n_features=35, d_model=32, n_heads=4, n_layers=2, n_components=2))
    return n.eval()


def _inputs(b=5, r=7, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, r, 35, generator=g), torch.randn(b, r, 2, generator=g) * 5e4, torch.ones(b, r)


def test_nll_is_the_full_2d_gaussian_nll():
    g = torch.Generator().manual_seed(1)
    means = torch.randn(6, 1, 2, generator=g, dtype=torch.float64)
    chol = torch.randn(6, 1, 3, generator=g, dtype=torch.float64) * 0.5
    target = torch.randn(6, 2, generator=g, dtype=torch.float64)
    cov = component_covariance(chol)[:, 0]
    ref = -torch.distributions.MultivariateNormal(means[:, 0], cov).log_prob(target)
    got = mixture_nll(means, chol, torch.zeros(6, 1, dtype=torch.float64), target)
    torch.testing.assert_close(got, ref)
    # by hand for an isotropic case: ½|d|²/σ² + log σ² + log 2π
    d = target[0] - means[0, 0]
    iso = torch.tensor([[[np.log(2.0), np.log(2.0), 0.0]]], dtype=torch.float64)
    hand = 0.5 * (d @ d) / 4.0 + np.log(4.0) + np.log(2 * np.pi)
    torch.testing.assert_close(mixture_nll(means[:1], iso, torch.zeros(1, 1, dtype=torch.float64), target[:1])[0], hand)


def test_mixture_of_identical_components_equals_one_component():
    g = torch.Generator().manual_seed(2)
    m = torch.randn(4, 1, 2, generator=g)
    c = torch.randn(4, 1, 3, generator=g)
    t = torch.randn(4, 2, generator=g)
    one = mixture_nll(m, c, torch.zeros(4, 1), t)
    two = mixture_nll(m.repeat(1, 2, 1), c.repeat(1, 2, 1), torch.randn(4, 2, generator=g), t)
    torch.testing.assert_close(one, two)
    mean, cov = moment_match(m.repeat(1, 2, 1), c.repeat(1, 2, 1), torch.zeros(4, 2))
    torch.testing.assert_close(cov, component_covariance(c)[:, 0])


def test_fully_masked_and_single_receiver_inputs_stay_finite(net):
    f, p, present = _inputs()
    present[0] = 0
    present[1] = 0
    present[1, 3] = 1
    mean, cov = net.predict_m(f, p, present)
    assert torch.isfinite(mean).all() and torch.isfinite(cov).all()
    assert (torch.linalg.eigvalsh(cov) > 0).all()
    means, chol, logits = net(f, p, present)
    assert torch.isfinite(mixture_nll(means, chol, logits, torch.zeros(5, 2))).all()


def test_receivers_are_a_set(net):
    f, p, present = _inputs()
    perm = torch.tensor([3, 0, 6, 1, 5, 2, 4])
    a = net.predict_m(f, p, present)
    b = net.predict_m(f[:, perm], p[:, perm], present[:, perm])
    torch.testing.assert_close(a[0], b[0], atol=1e-2, rtol=1e-4)  # metres
    # absent receivers do not matter, whatever their features
    present[:, 5:] = 0
    f2 = f.clone()
    f2[:, 5:] = 1e3
    torch.testing.assert_close(net.predict_m(f, p, present)[0], net.predict_m(f2, p, present)[0])
    # any network size
    f3, p3, m3 = _inputs(b=2, r=12)
    assert net.predict_m(f3, p3, m3)[0].shape == (2, 2)


def test_sigma_is_bounded(net):
    f, p, present = _inputs()
    _, chol, _ = net(f * 1e4, p, present)
    s = net.position_scale_m
    assert (chol[..., :2].exp() * s >= net.cfg.min_sigma_m * 0.999).all()
    assert (chol[..., :2].exp() * s <= net.cfg.max_sigma_m * 1.001).all()


def test_config_layers_and_errors(tmp_path):
    f = tmp_path / "train.yaml"
    f.write_text("epochs: 5\nbatch_size: 64\nlearning_rate: 0.01\n")
    cfg = resolve({"epochs": 7}, str(f))
    assert (cfg.epochs, cfg.batch_size, cfg.learning_rate) == (7, 64, 0.01)
    f.write_text("epocs: 5\n")
    with pytest.raises(ConfigError, match="train.yaml: unknown key 'epocs'"):
        resolve({}, str(f))
    f.write_text("batch_size: many\n")
    with pytest.raises(ConfigError, match="batch_size = 'many'"):
        resolve({}, str(f))
    with pytest.raises(ConfigError, match="config file not found"):
        resolve({}, str(tmp_path / "nope.yaml"))
    with pytest.raises(ConfigError, match="d_model must be a multiple of n_heads"):
        resolve({"d_model": 30}, None)


def test_missing_spectral_features_are_a_flag_not_a_nan(net):
    """NaN marks values not measured: a power-only input gives finite answers and gradients, depends on the
    power, and not on what the missing values would have been."""
    f, p, present = _inputs()
    power_only = torch.full_like(f, float("nan"))
    power_only[..., -3] = f[..., -3]
    net.zero_grad()
    means, chol, logits = net(power_only, p, present)
    mixture_nll(means, chol, logits, torch.zeros(5, 2)).sum().backward()
    assert torch.isfinite(means).all() and torch.isfinite(chol).all()
    assert all(torch.isfinite(w.grad).all() for w in net.parameters() if w.grad is not None)
    assert not torch.allclose(net.predict_m(power_only, p, present)[0], net.predict_m(f, p, present)[0])
    louder = power_only.clone()
    louder[:, 0, -3] += 20.0
    assert not torch.allclose(net.predict_m(louder, p, present)[0], net.predict_m(power_only, p, present)[0])
