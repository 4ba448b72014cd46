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
# 3D Slicer 5.8 runs the engine on Python 3.9. Where a Python 3.9 is installed, a second
# environment with the engine's CPU runtime (ONNX Runtime, no torch) lets the tests run the
# engine end to end on it; without one those tests are skipped.
PY39=""
for candidate in "$(command -v python3.9 || true)" "$HOME"/.pyenv/versions/3.9*/bin/python3.9; do
    if [ -x "$candidate" ] && "$candidate" -c 'import sys; assert sys.version_info[:2] == (3, 9)' 2>/dev/null; then
        PY39=$candidate; break
    fi
done
if [ -n "$PY39" ]; then
    "$PY39" -m venv .venv-py39
    .venv-py39/bin/python -m pip install --quiet numpy SimpleITK onnxruntime safetensors scipy matplotlib \
        slicerio tqdm PyYAML && echo "installed: Python 3.9 engine runtime in $(pwd)/.venv-py39" \
        || { echo "could not install the Python 3.9 engine runtime; its tests will be skipped"; rm -rf .venv-py39; }
fi
