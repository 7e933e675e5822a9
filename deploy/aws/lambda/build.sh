#!/usr/bin/env bash
# Build the Lambda artifact that deploy/aws/lambda/template.yaml deploys (CodeUri):
# the locked runtime dependencies as Linux x86_64 wheels for Python 3.11, plus slipway.
#
#   deploy/aws/lambda/build.sh [OUTPUT_DIR]     # default: build/lambda
#
# Needs uv. Only wheels are accepted, so nothing is compiled for the build machine.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)"
out="${1:-$root/build/lambda}"
platform="x86_64-manylinux_2_28"
python_version="3.11"

requirements="$(mktemp)"
trap 'rm -f "$requirements"' EXIT

rm -rf "$out"
mkdir -p "$out"

# Exactly the versions in uv.lock, without the dev group.
uv export --project "$root" --frozen --no-dev --no-emit-project --format requirements-txt \
  --output-file "$requirements" >/dev/null

uv pip install --target "$out" --python-version "$python_version" \
  --python-platform "$platform" --only-binary :all: --requirement "$requirements"
uv pip install --target "$out" --python-version "$python_version" \
  --python-platform "$platform" --no-deps "$root"

echo "built $out ($(du -sh "$out" | cut -f1))"
