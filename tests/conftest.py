"""Shared test set-up: tiny seeded models and a numpy toolbox.

TF 2.21's oneDNN kernels crash this project's CI CPU in one eager gradient case
(see README, Troubleshooting); the suite runs some methods eagerly, so oneDNN is
switched off before TensorFlow can be imported.
"""

import os

os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

BACKEND = keras.backend.backend()


@pytest.fixture(autouse=True)
def _seed():
    keras.utils.set_random_seed(7)
    yield
    keras.backend.clear_session()


@pytest.fixture
def rng():
    return np.random.default_rng(0)
