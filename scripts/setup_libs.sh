#!/usr/bin/env bash
# Create .venv-libs: eae with the real timm and torchvision, for `make test-libs`
# (tests/test_library_models.py; the main suite tests the same plumbing against stand-ins).
# A separate environment because PyPI's torchvision cannot load beside the CPU-only torch
# that .venv holds; here torch and torchvision are a matching pair (on x86-64 a CUDA build,
# about 5.5 GB, which runs on the CPU). Exits 3 when they cannot be installed.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
case "$(uname -m)" in
  x86_64) PAIR="torch==2.14.1 torchvision==0.29.1" ;;
  *) PAIR="torch==2.9.1 torchvision==0.24.1" ;;
esac
[ -x .venv-libs/bin/python ] || "$PYTHON" -m venv .venv-libs
PIP=".venv-libs/bin/python -m pip"
if ! .venv-libs/bin/python -c "import torchvision, timm" >/dev/null 2>&1; then
  echo "setup-libs: installing $PAIR timm==1.0.31 into .venv-libs (several GB)"
  # shellcheck disable=SC2086
  timeout 1200 $PIP install -q $PAIR "timm==1.0.31" 2>&1 | grep -v "is ignored: it is neither" || true
  .venv-libs/bin/python -c "import torchvision, timm" >/dev/null 2>&1 \
    || { echo "setup-libs: could not install $PAIR and timm"; exit 3; }
fi
$PIP install -q -e ".[test]"
.venv-libs/bin/python -c "import torch, torchvision, timm; print(f'setup-libs: torch {torch.__version__}, torchvision {torchvision.__version__}, timm {timm.__version__}')"
