#!/usr/bin/env bash
# On a machine with CUDA (issue 23): the bound rules' soundness suite with bounds computed on the
# GPU, the device tests, then a speed table of the same jobs on CPU and GPU. Tests never need a GPU;
# this script is for the note when one is at hand. Run from the repository root in its venv:
#   bash benchmarks/gpu_check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
python - <<'PY'
import torch
assert torch.cuda.is_available(), "no CUDA device: this check is for a GPU machine"
print("torch", torch.__version__, "cuda", torch.version.cuda, torch.cuda.get_device_name(0))
PY
echo "== soundness suite, bounds on cuda (samples and attacks on the CPU, float64)"
ROBUSTLAB_TEST_DEVICE=cuda python -m pytest -q -p no:randomly \
  tests/bounds/test_rule_soundness.py::test_rule_bounds_contain_sampled_and_attacked_outputs \
  tests/test_device.py
echo "== speed, cpu beside cuda"
python benchmarks/device_speed.py
