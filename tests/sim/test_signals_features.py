import numpy as np
import pytest

from heimdall.errors import FeatureError
from heimdall.features import FeatureParams, extract_features, feature_matrix, welch_psd
from heimdall.sim.signals import CONSTANT_ENVELOPE, EMISSION_CODES, envelope_power, synthesise


@pytest.mark.parametrize("emission", list(EMISSION_CODES))
def test_emissions_have_unit_power_and_stay_in_the_channel(emission, world):
    p = world.params
    offset = world.scenario.signals.carrier_offset_hz
    s = synthesise(
        np.random.default_rng(0),
        np.full(64, EMISSION_CODES[emission], np.uint8),
        p.window_samples,
        p.sample_rate_hz,
        np.linspace(-offset, offset, 64),
    )
    assert s.dtype == np.complex64 and s.shape == (64, p.window_samples)
    np.testing.assert_allclose(np.mean(np.abs(s) ** 2, axis=1), 1.0, rtol=1e-4)
    psd = welch_psd(s, p)
    freqs = np.fft.fftshift(np.fft.fftfreq(p.segment_samples, 1 / p.sample_rate_hz))
    in_channel = psd[:, np.abs(freqs) <= p.channel_bandwidth_hz / 2].sum(1) / psd.sum(1)
    assert in_channel.min() > 0.98


def test_envelope_power_is_the_waveforms_own(world):
    """|s|² without synthesising: 1 at every sample for the angle-modulated emissions, which are so, and the
    keyed carrier's own envelope (the same draws) for the others."""
    p = world.params
    emission = np.array([EMISSION_CODES[name] for name in EMISSION_CODES] * 8, np.uint8)
    power = envelope_power(np.random.default_rng(2), emission, p.window_samples, p.sample_rate_hz)
    assert power.dtype == np.float32 and power.shape == (len(emission), p.window_samples)
    for name, code in EMISSION_CODES.items():
        rows = emission == code
        s = synthesise(np.random.default_rng(3), emission[rows], p.window_samples, p.sample_rate_hz, np.zeros(8))
        if name in CONSTANT_ENVELOPE:
            np.testing.assert_allclose(np.abs(s) ** 2, 1.0, atol=1e-4)
            assert np.all(power[rows] == 1.0)
        else:
            np.testing.assert_allclose(power[rows].mean(axis=1), 1.0, rtol=1e-4)
    cw_only = np.full(8, EMISSION_CODES["cw"], np.uint8)
    s = synthesise(np.random.default_rng(4), cw_only, p.window_samples, p.sample_rate_hz, np.zeros(8))
    power = envelope_power(np.random.default_rng(4), cw_only, p.window_samples, p.sample_rate_hz)
    np.testing.assert_allclose(power, np.abs(s) ** 2, rtol=1e-6)


def test_emissions_differ_in_spectrum(world):
    p = world.params
    shapes = {}
    for name, code in EMISSION_CODES.items():
        s = synthesise(
            np.random.default_rng(1), np.full(32, code, np.uint8), p.window_samples, p.sample_rate_hz, np.zeros(32)
        )
        psd = welch_psd(s, p).mean(0)
        shapes[name] = psd / psd.sum()
    # CW is a (keyed) carrier: far narrower than the FM emissions
    peak = {k: v.max() for k, v in shapes.items()}
    assert peak["cw"] > 2 * max(peak["nbfm"], peak["afsk"], peak["fsk4"])


def test_closing_the_loop_in_band_power(block):
    """Power measured from the synthesised IQ equals the simulated received power (SNR ≥ 20 dB)."""
    measured = block["features"][..., -3]
    truth = block["rx_power_dbm"]
    strong = block["true_snr_db"] >= 20
    assert strong.sum() > 1000
    assert np.median(np.abs(measured - truth)[strong]) <= 0.5
    assert np.percentile(np.abs(measured - truth)[strong], 95) <= 1.0


def test_snr_estimate_tracks_the_truth(block):
    snr, truth = block["features"][..., -1], block["true_snr_db"]
    for lo, hi, tol in [(0, 10, 1.5), (10, 20, 0.5), (20, 60, 0.3)]:
        sel = (truth >= lo) & (truth < hi)
        assert sel.sum() > 100
        assert np.median(np.abs(snr - truth)[sel]) <= tol, (lo, hi)
    assert np.corrcoef(snr[truth > 0], truth[truth > 0])[0, 1] > 0.98


def test_noise_floor_estimate_is_ktb_plus_nf_plus_gain(block, world):
    expected = world.noise_density_dbm_hz + world.gain_offset_db
    measured = block["features"][..., -2]
    np.testing.assert_allclose(np.median(measured, axis=0), expected, atol=0.2)


def test_masking_at_the_sensitivity_threshold(block, world):
    thr = world.params.detection_snr_db
    truth, mask = block["true_snr_db"], block["mask"]
    assert mask[truth >= thr + 3].mean() > 0.98
    assert mask[truth <= thr - 3].mean() < 0.02
    near = (truth > thr - 0.5) & (truth < thr + 0.5)
    assert 0.2 < mask[near].mean() < 0.8  # a soft edge, decided by the measurement
    assert (mask.sum(1) >= 1).all()  # every heard transmission is stored, however few receivers heard it
    assert (mask.sum(1) < 3).any()  # including those heard by one or two


def test_absolute_power_is_kept_across_receivers(world):
    """The same IQ at two calibrations differs by exactly the calibration offset in every dBm feature."""
    p = world.params
    iq = (np.random.default_rng(0).standard_normal((2, p.window_samples)) * (1 + 1j)).astype(np.complex64)
    a = feature_matrix(extract_features(iq, p, -50.0))
    b = feature_matrix(extract_features(iq, p, np.array([-50.0, -40.0])))
    np.testing.assert_allclose(b[1, :-1] - a[1, :-1], 10.0, atol=1e-4)
    np.testing.assert_allclose(b[0], a[0])
    np.testing.assert_allclose(b[1, -1], a[1, -1], atol=1e-5)  # SNR does not depend on calibration


def test_pure_noise_has_low_snr_and_signal_adds_power(world):
    p = world.params
    rng = np.random.default_rng(0)
    noise = (
        (rng.standard_normal((200, p.window_samples)) + 1j * rng.standard_normal((200, p.window_samples))) * 1e-3
    ).astype(np.complex64)
    f = extract_features(noise, p, -50.0)
    assert np.percentile(f.snr_db, 95) < 0
    assert f.psd_dbm_hz.shape == (200, p.psd_bins)
    # the same noise with a tone in the channel: more in-band power, a high SNR, the same noise estimate
    t = np.arange(p.window_samples) / p.sample_rate_hz
    tone = (0.1 * np.exp(2j * np.pi * 1_000.0 * t)).astype(np.complex64)
    g = extract_features(noise + tone, p, -50.0)
    assert (g.power_dbm > f.power_dbm + 20).all()
    assert (g.snr_db > 20).all()
    np.testing.assert_allclose(g.noise_density_dbm_hz, f.noise_density_dbm_hz, atol=3.0)


def test_bad_iq_is_rejected_with_a_clear_error(world):
    p = world.params
    with pytest.raises(FeatureError, match="expected complex"):
        extract_features(np.zeros((2, p.window_samples)), p, 0.0)
    with pytest.raises(FeatureError, match="at least the window of 2048"):
        extract_features(np.zeros((2, 100), np.complex64), p, 0.0)


def test_params_round_trip(world):
    p = world.params
    assert FeatureParams.from_json(p.to_json()) == p
    assert len(p.feature_names) == p.n_features
