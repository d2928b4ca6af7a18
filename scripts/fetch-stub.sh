#!/usr/bin/env bash
# Fetches a newer systemd's EFI stub than Debian 12's, for the boot tests of `stage --uki`: Arch
# ships a current systemd, whose stub starts the kernel otherwise than Debian 12's systemd 252 does,
# and a unified kernel image layerctl writes must boot with both.
#
#   bash scripts/fetch-stub.sh [OUT]        (default OUT: demo/out/stub)
#
# OUT/linuxx64.efi.stub is the stub of Debian 13's systemd-boot-efi, which apt fetches from Debian's
# archive and checks against the archive's signature; OUT/version is the package's version. Runs
# again in a moment: it keeps what it fetched while the archive holds the same version.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib.sh
source scripts/lib.sh
stop_on_error fetch-stub
out=${1:-demo/out/stub}
for tool in apt-get apt-cache dpkg-deb; do
    command -v "$tool" >/dev/null || { echo "fetch-stub: $tool is missing" >&2; exit 2; }
done
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# apt with a state of its own, so the machine's sources and lists stay as they are.
mkdir -p "$work/lists/partial" "$work/cache/archives/partial" "$work/deb"
echo "deb http://deb.debian.org/debian trixie main" >"$work/sources.list"
apt=(-o "Dir::Etc::SourceList=$work/sources.list" -o Dir::Etc::SourceParts=/dev/null -o "Dir::State::Lists=$work/lists"
    -o "Dir::Cache=$work/cache" -o APT::Architecture=amd64)
quiet apt-get "${apt[@]}" update
version=$(apt-cache "${apt[@]}" show systemd-boot-efi | awk '/^Version:/ {print $2; exit}')
[ -n "$version" ] || { echo "fetch-stub: Debian 13's archive names no systemd-boot-efi" >&2; exit 2; }
if [ -f "$out/version" ] && [ "$(cat "$out/version")" = "$version" ] && [ -f "$out/linuxx64.efi.stub" ]; then
    exit 0
fi
echo "fetch-stub: downloading systemd-boot-efi $version from Debian"
# apt warns that root downloads unsandboxed; that is expected here and not worth a line.
(cd "$work/deb" && { apt-get "${apt[@]}" download -qq "systemd-boot-efi=$version" 2>&1 | grep -v '^W: Download is performed unsandboxed' || true; })
deb=$(compgen -G "$work/deb/systemd-boot-efi_*.deb" | head -n 1) || { echo "fetch-stub: could not download systemd-boot-efi" >&2; exit 2; }
dpkg-deb -x "$deb" "$work/root"
mkdir "$work/out"
cp "$work/root/usr/lib/systemd/boot/efi/linuxx64.efi.stub" "$work/out/"
echo "$version" >"$work/out/version"
rm -rf "$out"
mkdir -p "$(dirname "$out")"
mv "$work/out" "$out"
echo "fetch-stub: $out holds systemd's stub of systemd-boot-efi $version"
