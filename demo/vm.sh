#!/usr/bin/env bash
# Boots the demo image (demo/out/gaming.squashfs, which demo/run.sh writes) in QEMU with
# `layerctl vm`. The demo repository has no kernel, so the VM boots Debian's kernel
# (scripts/fetch-kernel.sh) with an initramfs that dracut makes with layerctl's module
# (scripts/make-initramfs.sh). The image's init is busybox's: press Enter for a shell; `poweroff -f`
# or Ctrl-A X ends the VM. Extra arguments go to `layerctl vm` (for example --append init=/bin/sh).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib.sh
source scripts/lib.sh
stop_on_error vm
source scripts/install-deps.sh
[ -f demo/out/gaming.squashfs ] || bash demo/run.sh >/dev/null
bash scripts/fetch-kernel.sh
initrd=demo/out/kernel/initramfs-layerctl.img
if [ ! -f "$initrd" ] || [ -n "$(find boot scripts/make-initramfs.sh demo/out/kernel/version -newer "$initrd" -print -quit)" ]; then
    bash scripts/make-initramfs.sh "$initrd"
fi
swift build -c release --static-swift-stdlib --product layerctl
exec .build/release/layerctl vm demo/out/gaming.squashfs --kernel demo/out/kernel/vmlinuz --initrd "$initrd" "$@"
