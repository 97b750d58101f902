#!/usr/bin/env bash
# Downloads into .whl/ (ignored by git) the Python 3.12 x86-64 wheels that a CUDA-JAX image lacks for this project:
# the versions of requirements.txt and what they import (22 MB); benchmarks/gpu_rehearsal.sh checks
# that nothing is missing. Run on a machine with network, then carry .whl.
set -euo pipefail
cd "$(dirname "$0")/.."
grep -qx "/.whl/" .git/info/exclude 2>/dev/null || echo "/.whl/" >>.git/info/exclude
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 -d .whl \
  brax==0.14.2 mujoco==4.0.0 mujoco-core==4.0.0 mujoco-mjx==3.17.0 tyro==1.0.17 glfw==2.11.0 pyopengl==3.1.10 \
  jaxopt==0.8.5 trimesh==5.2.0 docstring-parser==0.18.0 typeguard==4.6.1 ml-collections==1.1.0 \
  jinja2==3.1.6 markupsafe==3.0.4  # brax's HTML viewer (--render)
ls .whl
