#!/usr/bin/env bash
# Reproduce the evaluation: set-up, then `flexsfc bench` from the repository root, so the results land
# in docs/results/ and record this exact command. Extra arguments go to `flexsfc bench`
# (e.g. --quick, --only traffic, --out /tmp/results).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
exec .venv/bin/flexsfc bench "$@"
