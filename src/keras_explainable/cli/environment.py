"""Before Keras is imported: pick an installed backend, and quiet the frameworks' logs.

Nothing here imports Keras or a framework: whether one is installed is asked with
:func:`importlib.util.find_spec`, which reads the import path without importing.

Keras uses ``KERAS_BACKEND`` if set, else the ``"backend"`` of ``~/.keras/keras.json``
(which Keras itself writes on its first import, with ``"tensorflow"``), else TensorFlow.
A new user who installed only ``.[jax]`` would get "No module named 'tensorflow'". So
when ``KERAS_BACKEND`` is unset and the backend Keras would use is not installed,
:func:`choose_backend` picks an installed one (JAX, then PyTorch, then TensorFlow) and
:func:`use_installed_backend` sets ``KERAS_BACKEND`` to it and says so in one line.

Example:
    >>> from keras_explainable.cli.environment import use_installed_backend
    >>> use_installed_backend()  # before `import keras`
    'jax'
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import logging
import os
import re
import sys
import threading
from collections.abc import Callable, Mapping, MutableMapping

__all__ = [
    "BACKEND_MODULES",
    "choose_backend",
    "filtered_stderr",
    "quiet_frameworks",
    "use_installed_backend",
]

#: The module each Keras backend needs, in the order an automatic choice prefers them:
#: JAX and PyTorch first, as the smaller CPU installs (measured: docs/benchmarks.md).
BACKEND_MODULES: dict[str, str] = {"jax": "jax", "torch": "torch", "tensorflow": "tensorflow"}

#: Environment variables that silence the frameworks' start-up logs (TensorFlow's C++
#: "I0000 ... cudart_stub", "E0000 ... failed call to cuInit", gRPC/absl lines). Each is set
#: only if the user has not set it.
QUIET_ENVIRONMENT: dict[str, str] = {
    "TF_CPP_MIN_LOG_LEVEL": "3",
    "GRPC_VERBOSITY": "ERROR",
    "GLOG_minloglevel": "3",
    "ABSL_MIN_LOG_LEVEL": "3",
}

#: Python loggers that report the same kind of start-up noise.
QUIET_LOGGERS = ("tensorflow", "absl", "jax._src.xla_bridge", "h5py")


def is_installed(module: str) -> bool:
    """Whether ``module`` can be imported (without importing it)."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a broken or half-installed package
        return False


def keras_config_backend(environ: Mapping[str, str] | None = None) -> str | None:
    """The ``"backend"`` of Keras' ``keras.json`` (``$KERAS_HOME`` or ``~/.keras``), if any."""
    environ = os.environ if environ is None else environ
    home = environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    try:
        with open(os.path.join(home, "keras.json"), encoding="utf-8") as file:
            backend = json.load(file).get("backend")
    except (OSError, ValueError, AttributeError):
        return None
    return backend if isinstance(backend, str) else None


def choose_backend(
    environ: Mapping[str, str],
    installed: Callable[[str], bool] | None = None,
    configured: str | None = None,
) -> tuple[str | None, str | None]:
    """The backend Keras should use, and why it was picked (``None`` when not picked).

    Args:
        environ: the environment (``KERAS_BACKEND`` is read from it).
        installed: ``module name -> bool``; :func:`is_installed` when ``None``.
        configured: the backend of ``keras.json``, if any.

    Returns:
        ``(backend, reason)``. ``reason`` is ``None`` when nothing needs to change: the
        user set ``KERAS_BACKEND``, or the backend Keras would use is installed (then
        ``backend`` is that one). Otherwise ``backend`` is the first installed of
        :data:`BACKEND_MODULES` (``None`` if there is none) and ``reason`` says why.
    """
    installed = installed or is_installed
    explicit = environ.get("KERAS_BACKEND")
    if explicit:
        return explicit, None  # the user's choice; Keras reports it if it is missing
    default = configured or "tensorflow"
    module = BACKEND_MODULES.get(default, default)
    if default == "numpy" or installed(module):
        return default, None
    for backend, module in BACKEND_MODULES.items():
        if installed(module):
            return backend, f"{default} is not installed"
    return None, f"{default} is not installed, nor JAX or PyTorch"


def use_installed_backend(
    environ: MutableMapping[str, str] | None = None, stream=None
) -> str | None:
    """Set ``KERAS_BACKEND`` to an installed backend when Keras' own choice is missing.

    Call it before Keras is imported (afterwards it changes nothing). Prints one line
    on ``stream`` (stderr) when it picks a backend. Returns the backend Keras will use,
    or ``None`` when no backend is installed.
    """
    environ = os.environ if environ is None else environ
    if "keras" in sys.modules:
        return environ.get("KERAS_BACKEND") or keras_config_backend(environ) or "tensorflow"
    backend, reason = choose_backend(environ, configured=keras_config_backend(environ))
    if backend is not None and reason is not None:
        environ["KERAS_BACKEND"] = backend
        print(
            f"keras-explainable: using the {backend} backend ({reason}; set KERAS_BACKEND "
            "to choose).",
            file=stream or sys.stderr,
        )
    return backend


def quiet_frameworks(environ: MutableMapping[str, str] | None = None) -> None:
    """Silence the frameworks' start-up logs (before they are imported; the user's settings win)."""
    environ = os.environ if environ is None else environ
    for name, value in QUIET_ENVIRONMENT.items():
        environ.setdefault(name, value)
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)


#: Lines the frameworks' C++ code writes straight to the stderr file descriptor, whatever
#: TF_CPP_MIN_LOG_LEVEL says (absl logs before its initialisation: "I0000 ... cudart_stub.cc:31]
#: Could not find cuda drivers", "failed call to cuInit" on a machine without a GPU).
NOISE = re.compile(
    rb"^(WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR"
    rb"|[IW]\d{4} \d\d:\d\d:\d+\.\d+ +\d+ [\w./-]+:\d+\] "
    rb"|E\d{4} \d\d:\d\d:\d+\.\d+ +\d+ [\w./-]+:\d+\] failed call to cuInit"
    rb"|To enable the following instructions: .* rebuild TensorFlow)"
)


@contextlib.contextmanager
def filtered_stderr(noise: re.Pattern = NOISE):
    """Drop the frameworks' start-up lines from the stderr *file descriptor* while inside.

    Python's own output and every other line pass through unchanged (in order, line by
    line). Used by the ``keras-explainable`` program (not by in-process calls of
    :func:`keras_explainable.cli.main`); ``--verbose`` turns it off.
    """
    try:
        target = sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):  # no real descriptor: nothing to filter
        yield
        return
    sys.stderr.flush()
    saved = os.dup(target)
    read, write = os.pipe()
    os.dup2(write, target)
    os.close(write)

    def pump():
        with os.fdopen(read, "rb") as source:
            for line in source:
                if not noise.match(line):
                    os.write(saved, line)

    thread = threading.Thread(target=pump, name="keras-explainable-stderr", daemon=True)
    thread.start()
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, target)  # the pipe's last writer closes: the pump reads to the end
        thread.join(timeout=10)
        os.close(saved)
