import numpy as np
import pytest

from heimdall.scenario import load_scenario
from heimdall.sim.generator import build_world, simulate_block


@pytest.fixture(scope="session")
def nw_italy():
    return load_scenario("nw-italy")


@pytest.fixture(scope="session")
def world(nw_italy):
    return build_world(nw_italy)


@pytest.fixture(scope="session")
def block(world):
    """About 1,500 accepted transmissions of the default scenario, with oracle quantities."""
    rng = np.random.default_rng(1234)
    parts = [simulate_block(world, rng, 512) for _ in range(4)]
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
