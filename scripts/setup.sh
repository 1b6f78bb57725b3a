#!/usr/bin/env bash
# Create .venv and install eae into it. Idempotent; used by `make demo` and `make test`.
# Without a GPU it installs the CPU build of torch (never the multi-GB CUDA build):
# torch==2.13.0+cpu from the local wheel store or PyPI mirror where one is configured,
# else from the PyTorch CPU index.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
PIP=".venv/bin/python -m pip"
if ! .venv/bin/python -c "import torch" >/dev/null 2>&1; then
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    echo "setup: GPU found, installing torch with CUDA"
    $PIP install -q torch
  else
    echo "setup: no GPU, installing the CPU build of torch"
    $PIP install -q "torch==2.13.0+cpu" 2>/dev/null \
      || $PIP install -q --index-url https://download.pytorch.org/whl/cpu "torch==2.13.0+cpu"
  fi
fi
$PIP install -q -e ".[test]"
# The reference for the APGD agreement test; optional (the test is skipped without it).
.venv/bin/python -c "import torchattacks" >/dev/null 2>&1 \
  || timeout 300 $PIP install -q --no-deps "torchattacks==3.5.1" \
  || echo "setup: torchattacks not installed; its agreement test will be skipped"
# The official AutoAttack, repackaged, for tests/test_autoattack_agreement.py and
# benchmarks/autoattack_agreement.py; optional too (imported as pyautoattack).
.venv/bin/python -c "import pyautoattack" >/dev/null 2>&1 \
  || timeout 300 $PIP install -q --no-deps "pyautoattack==0.2.0" \
  || echo "setup: pyautoattack not installed; the AutoAttack agreement test will be skipped"
.venv/bin/python -c "import torch, eae; print(f'setup: eae {eae.__version__}, torch {torch.__version__}')"
