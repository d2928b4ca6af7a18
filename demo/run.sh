#!/usr/bin/env bash
# The offline demo, start to end: install what is needed, build the demo pacman repository,
# build layerctl, build layers/demo/gaming.yaml (base -> nvidia -> gaming) into the store, and write
# the merged stack as the squashfs image demo/out/gaming.squashfs.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib.sh
source scripts/lib.sh
stop_on_error run
source scripts/install-deps.sh
bash demo/make-repo.sh
swift build -c release --static-swift-stdlib --product layerctl
.build/release/layerctl build layers/demo/gaming.yaml -o demo/out/gaming.squashfs "$@"
.build/release/layerctl ls "$@"
