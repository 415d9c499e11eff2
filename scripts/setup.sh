#!/usr/bin/env bash
# Sets vipann up from a fresh clone: a virtual environment in .venv, CPU torch 2.13.0 unless the
# environment already has a torch, vipann in editable mode with the requested extras, and
# bayesian-torch without its heavy declared dependencies (it is only needed for interop tests).
#
# Usage: scripts/setup.sh [EXTRAS]       e.g. scripts/setup.sh test
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-}"
venv="${VIPANN_VENV:-.venv}"
python="${PYTHON:-python3}"

if [ ! -x "$venv/bin/python" ]; then
  echo "[setup] creating virtual environment in $venv"
  "$python" -m venv "$venv"
fi
py="$venv/bin/python"
pip=("$py" -m pip install --disable-pip-version-check -q)

if ! "$py" -c "import torch" >/dev/null 2>&1; then
  # Pinned: an unpinned torch would pull the newest CUDA build (several GB).
  echo "[setup] installing torch==2.13.0"
  "${pip[@]}" "torch==2.13.0"
fi
torch_version=$("$py" -c "import torch; print(torch.__version__)")
# A constraint file keeps every later install from replacing the torch we have.
constraints="$venv/vipann-constraints.txt"
echo "torch==${torch_version}" > "$constraints"

spec="."
if [ -n "$extras" ]; then spec=".[${extras}]"; fi
echo "[setup] installing vipann ($spec) with torch ${torch_version}"
"${pip[@]}" -c "$constraints" -e "$spec"

if [[ ",$extras," == *",test,"* ]]; then
  if ! "$py" -c "import bayesian_torch" >/dev/null 2>&1; then
    echo "[setup] installing bayesian-torch==0.5.0 (--no-deps)"
    "${pip[@]}" --no-deps "bayesian-torch==0.5.0"
  fi
  if ! "$py" -c "import laplace" >/dev/null 2>&1; then
    # The Laplace reference tests; these declare torchvision (which would not load with the CPU torch).
    echo "[setup] installing laplace-torch==0.2.3, backpack-for-pytorch, curvlinops-for-pytorch (--no-deps)"
    "${pip[@]}" --no-deps "laplace-torch==0.2.3" "backpack-for-pytorch==1.7.1" "curvlinops-for-pytorch==3.0.1"
  fi
fi
echo "[setup] done: $("$py" -c 'import vipann, torch; print("vipann", vipann.__version__, "torch", torch.__version__)')"
