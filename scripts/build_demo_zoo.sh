#!/usr/bin/env bash
# Rebuilds the embedded demo zoo (vipann/data/zoo/*-demo) with the AudioSet pre-training recipe on the
# generated mini-AudioSet: det-demo and drop-demo from scratch, then flip-demo and detflip-demo from
# det-demo by MOPED + further ELBO training. About 20 minutes on an idle 2-core CPU (the v4 build took
# 73 min on a 2-core machine shared with other jobs), about 3 minutes on one GPU.
#
# Usage: scripts/build_demo_zoo.sh [RUN_DIR]     (needs `make setup` first)
set -euo pipefail
cd "$(dirname "$0")/.."
runs="${1:-runs/demo-zoo}"
py="${VIPANN_PYTHON:-.venv/bin/python}"
corpus="$runs/corpus"
read -r train eval < <("$py" - "$corpus" <<'PY'
import sys
from vipann.datasets.synthetic import make_mini_audioset
print(make_mini_audioset(sys.argv[1], "train", seed=0), make_mini_audioset(sys.argv[1], "eval", seed=0))
PY
)
classes=$("$py" -c "from vipann.datasets.synthetic import AUDIOSET_CLASSES; print(','.join(AUDIOSET_CLASSES))")
for method in det drop flip detflip; do
  init=()
  if [ "$method" = flip ] || [ "$method" = detflip ]; then init=(--init "local-dir:$runs/det-demo/model"); fi
  "$py" finetune/pretrain.py --config "finetune/configs/demo-$method.yaml" --train "$train" --eval "$eval" \
    --out "$runs/$method-demo" --no-progress "${init[@]}" ${VIPANN_DEMO_FLAGS:-}
  mkdir -p vipann/data/zoo && rm -rf "vipann/data/zoo/$method-demo.tmp" && cp -r "$runs/$method-demo/model" "vipann/data/zoo/$method-demo.tmp"
  rm -rf "vipann/data/zoo/$method-demo" && mv "vipann/data/zoo/$method-demo.tmp" "vipann/data/zoo/$method-demo"
done
echo "demo zoo written to vipann/data/zoo/"
