#!/usr/bin/env bash
# Create .venv and install LiverVolumetry with its test extras, from scratch.
# torch is pinned here to the CPU build available on the project's machines; the package
# itself accepts torch>=2.2, so GPU users can install their own build first.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
"$PYTHON" -m venv .venv
. .venv/bin/activate
python -m pip install --quiet --upgrade pip
python -m pip install --quiet "torch==2.13.0" numpy setuptools wheel versioneer
# pyradiomics ships only a source distribution whose build needs numpy at build time.
python -m pip install --quiet --no-build-isolation pyradiomics
python -m pip install --quiet ".[test]"
echo "installed: $(livervolumetry --version) in $(pwd)/.venv"
