#!/usr/bin/env bash
# Rebuild the shipped gender head from FairFace (CC BY 4.0) only: no UTKFace image trains it.
# Run from the repository root with ../shared/data beside it.
set -euo pipefail
cd "$(dirname "$0")/.."
facesieve learn ../shared/data/fairface --folds 5 --out daemon/facesieve/weights/gender-head.json "$@"
