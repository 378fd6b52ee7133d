#!/usr/bin/env bash
# One device run (see docs/engines.md, "GPU (CuPy)"): install the carried test wheels, run the
# GPU tests, then benchmark npconv on CuPy against PyTorch CUDA. Results go to $OUT.
set -u
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:src PYTHONUNBUFFERED=1
{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
  python3 -c "import sys, numpy, cupy, torch; print(sys.version.split()[0], 'numpy', numpy.__version__, 'cupy', cupy.__version__, 'torch', torch.__version__)"
} 2>&1 | tee "$OUT/device.txt"
timeout 240 python3 -m pytest -q -p no:cacheprovider tests/test_gpu.py tests/test_algorithms_gpu.py \
    2>&1 | tee "$OUT/gpu_tests.txt"
[ -n "${SKIP_BENCH:-}" ] || timeout 300 python3 benchmarks/gpu.py --repeats "${REPEATS:-10}" --out "$OUT/gpu_benchmarks.md" \
    2>&1 | tee "$OUT/gpu_bench.log"
