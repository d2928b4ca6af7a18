#!/usr/bin/env bash
# Makes an initramfs with dracut and layerctl's module (boot/dracut) for the kernel that
# scripts/fetch-kernel.sh fetched:
#
#   bash scripts/make-initramfs.sh OUT [KERNEL_DIR]        (default KERNEL_DIR: demo/out/kernel)
#
# dracut runs from a copy of its own folder with our module added, so the host's dracut is left as
# it is. The initramfs holds what booting an image from a virtio disk needs (dracut's base, udev
# and layerctl modules; the virtio and ext4 drivers), and rootfs-block, so that without
# layerctl.image= it boots a plain root= as any initramfs does (Benchmarks/boot.sh compares the
# two). It is not compressed: it boots faster that way under QEMU without KVM.
#
# LAYERCTL_DRACUT_SYSTEMD=1 makes the other kind of dracut initramfs, with systemd as its init
# (and systemd's poweroff, for rd.emergency=poweroff). LAYERCTL_DRACUT_DRIVERS adds drivers (the
# filesystem of a disk that is not ext4, as a host-only initramfs has its root's);
# LAYERCTL_DRACUT_MODULES adds dracut modules (crypt, for a LUKS disk), and
# LAYERCTL_DRACUT_INCLUDE="SOURCE TARGET" a file (a LUKS key file, for rd.luks.key=TARGET).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=scripts/lib.sh
source "$root/scripts/lib.sh"
stop_on_error make-initramfs
out=${1:?usage: make-initramfs.sh OUT [KERNEL_DIR]}
kernel=${2:-$root/demo/out/kernel}
command -v dracut >/dev/null || { echo "make-initramfs: dracut is missing (scripts/install-deps.sh installs dracut-core)" >&2; exit 2; }
[ -f "$kernel/version" ] || { echo "make-initramfs: no kernel in $kernel (run scripts/fetch-kernel.sh)" >&2; exit 2; }
version=$(cat "$kernel/version")
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp -r /usr/lib/dracut "$work/dracut"
cp -rL "$root/boot/dracut/90layerctl" "$work/dracut/modules.d/"
cp "$root/boot/layerctl.sh" "$work/dracut/modules.d/90layerctl/"
mkdir "$work/conf.d"
modules="layerctl rootfs-block ${LAYERCTL_DRACUT_MODULES:-}"
extra=()
if [ -n "${LAYERCTL_DRACUT_INCLUDE:-}" ]; then
    read -r source target <<<"$LAYERCTL_DRACUT_INCLUDE"
    extra+=(--include "$source" "$target")
fi
if [ -n "${LAYERCTL_DRACUT_SYSTEMD:-}" ]; then
    modules="$modules systemd systemd-initrd dracut-systemd"
    extra+=(--install /usr/sbin/poweroff)
fi
dracutbasedir="$work/dracut" dracut --quiet --force --no-hostonly --conf /dev/null --confdir "$work/conf.d" \
    -m "$modules" "${extra[@]}" --add-drivers "virtio_blk virtio_pci ext4 crc32c_generic ${LAYERCTL_DRACUT_DRIVERS:-}" \
    --kver "$version" --kmoddir "$kernel/root/lib/modules/$version" --no-compress --no-early-microcode "$out"
