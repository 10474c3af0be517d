#!/usr/bin/env bash
# Set up (idempotent), write synthetic LAION sources (real URL/TEXT pairs when the shared file is
# there) and rebuild every layer as Delta tables on the embedded engine.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
REAL_PAIRS=../shared/data/laion_url_text_10k.parquet
PAIRS=()
if [ -f "$REAL_PAIRS" ]; then PAIRS=(--real-pairs "$REAL_PAIRS"); fi
.venv/bin/laion-etl synth --out data/demo/sources --rows "${ROWS:-20000}" --seed 42 --images webdataset \
  --overwrite "${PAIRS[@]}"
.venv/bin/laion-etl build --config conf/demo.yaml
.venv/bin/laion-etl tables --config conf/demo.yaml
echo "demo: done in $SECONDS s; next: . .venv/bin/activate, then README.md's \"Using it\""
