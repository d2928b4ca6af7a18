#!/usr/bin/env bash
# Fetches Debian's kernel for the boot tests and for trying images with `layerctl vm`:
#
#   bash scripts/fetch-kernel.sh [OUT]        (default OUT: demo/out/kernel)
#
# OUT/vmlinuz is the kernel, OUT/root/lib/modules/VERSION its modules (with modules.dep, which the
# package leaves to its postinst), OUT/version the version string. OUT/vmlinux is the same kernel
# uncompressed: QEMU boots that ELF file directly (PVH), seconds faster under TCG, which the boot
# tests use. Runs again in a moment: it keeps
# what it fetched while linux-image-amd64 still names the same kernel.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib.sh
source scripts/lib.sh
stop_on_error fetch-kernel
out=${1:-demo/out/kernel}
for tool in apt-cache apt-get dpkg-deb depmod; do
    command -v "$tool" >/dev/null || { echo "fetch-kernel: $tool is missing" >&2; exit 2; }
done
package=$(apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
[ -n "$package" ] || { echo "fetch-kernel: apt knows no linux-image-amd64 (run apt-get update)" >&2; exit 2; }
version=${package#linux-image-}
if [ -f "$out/version" ] && [ "$(cat "$out/version")" = "$version" ] && [ -f "$out/vmlinuz" ] && [ -f "$out/vmlinux" ]; then
    exit 0
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
echo "fetch-kernel: downloading $package from Debian"
# apt warns that root downloads unsandboxed; that is expected here and not worth a line.
(cd "$work" && { apt-get download -q "$package" 2>&1 | grep -v '^W: Download is performed unsandboxed' || true; })
deb=$(compgen -G "$work/${package}_*.deb" | head -n 1) || { echo "fetch-kernel: could not download $package" >&2; exit 2; }
dpkg-deb -x "$deb" "$work/root"
depmod -b "$work/root" "$version"
cp "$work/root/boot/vmlinuz-$version" "$work/vmlinuz"
# The bzImage holds the kernel compressed after its setup code; Debian's is xz. Decompress from the
# first xz header on, and keep the result only if it is the kernel's ELF image.
offset=$(LC_ALL=C grep -abo -m 1 $'\xfd7zXZ' "$work/vmlinuz" | head -n 1 | cut -d: -f1 || true)
if [ -n "$offset" ]; then
    tail -c +"$((offset + 1))" "$work/vmlinuz" | xz -dc 2>/dev/null >"$work/vmlinux" || true
fi
if [ "$(head -c 4 "$work/vmlinux" 2>/dev/null)" != $'\x7fELF' ]; then
    echo "fetch-kernel: could not unpack vmlinux from the bzImage; the tests will boot vmlinuz" >&2
    rm -f "$work/vmlinux"
fi
echo "$version" >"$work/version"
rm -rf "$out"
mkdir -p "$(dirname "$out")"
mkdir "$work/out"
mv "$work/root" "$work/vmlinuz" "$work/version" "$work/out/"
[ ! -f "$work/vmlinux" ] || mv "$work/vmlinux" "$work/out/"
mv "$work/out" "$out"
echo "fetch-kernel: $out holds Linux $version"
