#!/usr/bin/env bash
# Creates .venv with lec's stack; picks the torch route by itself:
#   CUDA machine (nvidia-smi sees a GPU): torch as pip resolves it (a CUDA build) + the `gpu` extra (bitsandbytes).
#   CPU machine: torch==$LEC_TORCH_VERSION (default 2.13.0, CPU build; where pip has a local wheel of it via
#     find-links it is taken from disk), the stack pinned to that torch, then torchvision removed: crfm-helm
#     requires it, pip picks a build that fails to import beside a CPU torch, and a broken torchvision breaks
#     `import peft` ("operator torchvision::nms does not exist"). Nothing in lec needs torchvision.
# Idempotent: a stamp keyed on pyproject.toml + this script skips work that is already done.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${LEC_VENV:-.venv}
PY=${PYTHON:-python3}
TORCH_CPU=${LEC_TORCH_VERSION:-2.13.0}
stamp="$VENV/.lec-installed"
key=$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -d' ' -f1)

if [[ -f "$stamp" && "$(cat "$stamp")" == "$key" ]]; then
  exit 0
fi

"$PY" -c 'import sys; assert sys.version_info >= (3, 10), "lec needs Python >= 3.10"'
[[ -x "$VENV/bin/python" ]] || "$PY" -m venv "$VENV"
# pip warns about every package a configured local index lacks; keep its real messages, drop that noise.
pip() { "$VENV/bin/python" -m pip install --disable-pip-version-check -q "$@" 2> >(grep -v "is neither a file nor a directory" >&2); }

if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
  echo "[lec setup] CUDA GPU found: installing the CUDA torch build + bitsandbytes"
  pip -e '.[gpu,dev]'
else
  echo "[lec setup] no CUDA GPU: CPU route with torch==$TORCH_CPU"
  pip "torch==$TORCH_CPU"
  pip -e '.[dev]' "torch==$TORCH_CPU"
  "$VENV/bin/python" -m pip uninstall -y -q torchvision || true
fi

# Hydra's Optuna sweeper (hparams_search=…, lec/sweep.py): its last release 1.3.0 still pins optuna<3
# (facebookresearch/hydra 1.3_branch plugins/hydra_optuna_sweeper/setup.py),
# but runs on the optuna>=4 pyproject asks for (tests/test_sweep.py runs a search), so it goes in without its pins.
pip --no-deps 'hydra-optuna-sweeper==1.3.0'

# HELM's metrics import nltk, which tries to download punkt_tab at import time; lec ships what it needs offline
# under outputs/cache (lec/evaluate/helm.py write_punkt_tab), so nothing is fetched here.
"$VENV/bin/python" -c 'import torch, transformers, peft, hydra, mlflow, helm, fastapi; print("[lec setup] ok: torch", torch.__version__, "transformers", transformers.__version__, "peft", peft.__version__)'
echo "$key" > "$stamp"
