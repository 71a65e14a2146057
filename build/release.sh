#!/usr/bin/env bash
# Builds the release binaries exactly as the container image does: the Dockerfile's builder
# stage runs this script, and CI runs it too, so what CI compiles is what ships.
#
#   build/release.sh [OUT_DIR]
#
# Copies rubber-stamp-approver, rubber-stamp-agent and the kubectl plugin
# kubectl-rubber_stamp (a binary of the approver package) to OUT_DIR when given.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --release --locked -p rubber-stamp-approver -p rubber-stamp-agent --bins

target="${CARGO_TARGET_DIR:-target}/release"
binaries=(rubber-stamp-approver rubber-stamp-agent kubectl-rubber_stamp)
for binary in "${binaries[@]}"; do
    "$target/$binary" --version
done
if [ "$#" -ge 1 ]; then
    mkdir -p "$1"
    for binary in "${binaries[@]}"; do
        cp "$target/$binary" "$1/"
    done
fi
