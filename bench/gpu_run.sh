#!/usr/bin/env bash
# The whole run on one GPU (issue 29) in one call of about 8 minutes: `python -m imas_lab.endtoend` at its full size
# (nbs/14b_endtoend.ipynb); bench/README.md says what it measures and what the table's columns mean.
#
#   bash bench/gpu_run.sh [--camvid DIR] [other flags of python -m imas_lab.endtoend]
#
# What comes back goes under $OUT when it is set (else runs/endtoend): endtoend.md, endtoend.json and log.txt.
# The generated data and the run dirs (thousands of files, GBs of checkpoints) go under $WORK, else a new temporary
# folder. No stage starts after $BUDGET_S seconds (default 420); the script is stopped 60 s after that, its table
# written up to the last stage that ended.
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1 TQDM_MININTERVAL=10
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
py=${PYTHON:-python3}
out=${OUT:-runs/endtoend}
work=${WORK:-$(mktemp -d)}
budget=${BUDGET_S:-420}
mkdir -p "$out"
log="$out/log.txt"

if ! "$py" -c "import fastcore" 2>/dev/null; then  # not on the lent machines' image: carried as a wheel in .whl/
  "$py" -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl ||
    { echo "fastcore is missing and .whl/ holds no wheel of it (bench/README.md)" | tee "$log"; exit 1; }
  export PYTHONPATH="$PYTHONPATH:/tmp/site"
fi
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
  "$py" -c "import torch; print('torch', torch.__version__, 'CUDA', torch.version.cuda, torch.cuda.is_available())"
} 2>&1 | tee "$log"

timeout --kill-after=30 $((budget + 60)) "$py" -m imas_lab.endtoend --device cuda --out "$out" --work "$work" \
  --budget "$budget" "$@" 2>&1 | tee -a "$log"
exit "${PIPESTATUS[0]}"
