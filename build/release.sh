#!/usr/bin/env bash
# Builds the release binaries exactly as the container image does: the Dockerfile's builder
# stage runs this script, and CI runs it too, so what CI compiles is what ships.
#
#   build/release.sh [OUT_DIR]
#
# Copies rubber-stamp-approver and rubber-stamp-agent to OUT_DIR when given.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --release --locked -p rubber-stamp-approver -p rubber-stamp-agent --bins

target="${CARGO_TARGET_DIR:-target}/release"
for binary in rubber-stamp-approver rubber-stamp-agent; do
    "$target/$binary" --version
done
if [ "$#" -ge 1 ]; then
    mkdir -p "$1"
    cp "$target/rubber-stamp-approver" "$target/rubber-stamp-agent" "$1/"
fi
