"""Shared test set-up: tiny seeded models and a numpy toolbox.

TF 2.21's oneDNN kernels crash this project's CI CPU in one eager gradient case
(see README, Troubleshooting); the suite runs some methods eagerly, so oneDNN is
switched off before TensorFlow can be imported. On JAX, the classic (faster to
compile) threefry random generator is chosen, see below.
"""

import os

os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# JAX: the suite builds hundreds of tiny models, and every new weight shape compiles
# the random initializer. With JAX's default partitionable threefry, XLA on CPU takes
# 1-7 s per shape; the classic threefry takes ~0.1-0.7 s (measured on the CI machine),
# which halves the suite's compile time. It changes only the random bits drawn.
os.environ.setdefault("JAX_THREEFRY_PARTITIONABLE", "0")
# JAX: XLA's CPU backend optimizes every compiled program with LLVM at its highest level;
# the suite compiles hundreds of tiny programs that each run a few times, so the
# optimization costs far more than it saves (a KerasHub ViT step compiled in 5.8 s ->
# 1.7 s; seven of the heaviest files 300 s -> 208 s). Results are the same programs.
os.environ.setdefault("XLA_FLAGS", "--xla_backend_optimization_level=0")

import gc  # noqa: E402

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

BACKEND = keras.backend.backend()


def pytest_collection_finish(session):
    """Freeze what the imports and test modules made before the first test runs.

    Every test ends with ``keras.backend.clear_session()``, whose ``gc.collect()``
    walked the 200-400 thousand objects TensorFlow, JAX or PyTorch create at import:
    about 1-4 s per test on the CI machine, most of a backend's run. Frozen objects
    are skipped by the collector (they live as long as the process anyway), so the
    per-test collection only walks what the tests made.
    """
    gc.collect()
    gc.freeze()


@pytest.fixture(autouse=True)
def _seed():
    keras.utils.set_random_seed(7)
    yield
    keras.backend.clear_session()


@pytest.fixture
def rng():
    return np.random.default_rng(0)
