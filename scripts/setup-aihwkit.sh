#!/usr/bin/env bash
# Build IBM aihwkit from source into a SEPARATE virtualenv (.venv-aihwkit) for the cross-check
# benchmark benchmarks/synapse_aihwkit.py. aihwkit never enters .venv or requirements.lock.txt:
# its 1.1.0 wheel fails on torch 2.13 tiles and its dependencies pull a torchvision that does not
# import beside CPU torch, so it is built here against the pinned torch, with --no-deps.
#
#   bash scripts/setup-aihwkit.sh            # ~6-14 min on 2 cores; re-running is instant
#   .venv-aihwkit/bin/python benchmarks/synapse_aihwkit.py
#
# Environment: PYTHON (default python3.11), AIHWKIT_VERSION (default 1.2.0), AIHWKIT_VENV
# (default .venv-aihwkit), JOBS (parallel compile jobs, default 2).
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3.11}
VENV=${AIHWKIT_VENV:-.venv-aihwkit}
case "$VENV" in /*) ;; *) VENV="$PWD/$VENV" ;; esac
VERSION=${AIHWKIT_VERSION:-1.2.0}
JOBS=${JOBS:-2}

stamp="$VENV/.hwkit-aihwkit-stamp"
want="aihwkit==$VERSION $(sha256sum scripts/setup-aihwkit.sh | cut -d' ' -f1)"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  echo "aihwkit $VERSION already set up in $VENV"
  exit 0
fi

# Build dependencies: a C++ compiler and OpenBLAS (aihwkit's default CPU BLAS backend).
need=()
command -v g++ >/dev/null 2>&1 || need+=(g++)
dpkg -s libopenblas-dev >/dev/null 2>&1 || need+=(libopenblas-dev)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
  else
    echo "setup-aihwkit.sh: install the build dependencies first: apt-get install ${need[*]}" >&2
    exit 2
  fi
fi

[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
pip=("$VENV/bin/python" -m pip --disable-pip-version-check -q)
"${pip[@]}" install --upgrade "pip>=25"
# The same torch as .venv (the pinned CPU build), aihwkit's runtime needs (not torchvision), and
# what hwkit.compress.synapse.device / the benchmark use. Versions follow requirements.lock.txt.
"${pip[@]}" install torch==2.13.0 "numpy>=2.4,<2.5" "scipy>=1.17,<1.18" "scikit-learn>=1.7.2,<1.8" \
  protobuf==5.29.6 "requests>=2.32,<3" tqdm
# aihwkit's build system (pyproject.toml's build-system.requires), used without isolation so the
# extension is compiled against the torch installed above.
"${pip[@]}" install "setuptools>=77" wheel "scikit-build>=0.18.1" "pybind11>=3.0.1" ninja "cmake>=4.2.1" mypy
# The build runs stubgen (mypy) from PATH: put the venv's bin first.
export PATH="$VENV/bin:$PATH"
# Build from an unpacked sdist kept in the venv, so that a failed or interrupted build resumes where it
# stopped (scikit-build keeps its CMake/ninja tree in _skbuild/ next to the sources).
src="$VENV/src/aihwkit-$VERSION"
if [ ! -f "$src/setup.py" ]; then
  mkdir -p "$VENV/src"
  "${pip[@]}" download --no-deps --no-binary aihwkit --no-build-isolation -d "$VENV/src" "aihwkit==$VERSION"
  tar -xzf "$VENV/src/aihwkit-$VERSION.tar.gz" -C "$VENV/src"
fi
echo "setup-aihwkit.sh: compiling aihwkit $VERSION from source (CPU, OpenBLAS, $JOBS jobs; several minutes)"
CMAKE_BUILD_PARALLEL_LEVEL=$JOBS USE_CUDA=OFF "${pip[@]}" install --no-build-isolation --no-deps "$src"
# hwkit itself, without its (FPGA/ONNX) dependencies: the benchmark needs only hwkit.compress.synapse.device*.
"${pip[@]}" install --no-deps -e .

"$VENV/bin/python" - <<'EOF'
import torch
from aihwkit.nn import AnalogLinear
from aihwkit.simulator.configs import SingleRPUConfig
from aihwkit.simulator.configs.devices import ConstantStepDevice
import hwkit.compress.synapse.train  # noqa: F401

layer = AnalogLinear(4, 2, rpu_config=SingleRPUConfig(device=ConstantStepDevice()))
layer(torch.ones(1, 4))
import aihwkit
print(f"aihwkit {aihwkit.__version__} imports and runs a tile beside torch {torch.__version__}")
EOF
echo "$want" > "$stamp"
