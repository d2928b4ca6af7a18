#!/usr/bin/env bash
# Fetches Debian's kernel for the boot tests and for trying images with `layerctl vm`:
#
#   bash scripts/fetch-kernel.sh [OUT]        (default OUT: demo/out/kernel)
#
# OUT/vmlinuz is the kernel, OUT/root/lib/modules/VERSION its modules (with modules.dep, which the
# package leaves to its postinst), OUT/version the version string. Runs again in a moment: it keeps
# what it fetched while linux-image-amd64 still names the same kernel.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-demo/out/kernel}
for tool in apt-cache apt-get dpkg-deb depmod; do
    command -v "$tool" >/dev/null || { echo "fetch-kernel: $tool is missing" >&2; exit 2; }
done
package=$(apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
[ -n "$package" ] || { echo "fetch-kernel: apt knows no linux-image-amd64 (run apt-get update)" >&2; exit 2; }
version=${package#linux-image-}
if [ -f "$out/version" ] && [ "$(cat "$out/version")" = "$version" ] && [ -f "$out/vmlinuz" ]; then
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
echo "$version" >"$work/version"
rm -rf "$out"
mkdir -p "$(dirname "$out")"
mkdir "$work/out"
mv "$work/root" "$work/vmlinuz" "$work/version" "$work/out/"
mv "$work/out" "$out"
echo "fetch-kernel: $out holds Linux $version"
