#!/usr/bin/env bash
# Installs, from Debian 12, everything layerctl needs to build, test and run its demo.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
packages=(
    libarchive-dev libsquashfs-dev libmount-dev libalpm-dev libcurl4-openssl-dev libgpgme-dev  # C libraries
    libseccomp-dev                                                                              # the build's system call filter
    pacman-package-manager makepkg libarchive-tools zstd gnupg dpkg                             # demo repository
    squashfs-tools squashfs-tools-ng attr util-linux shellcheck bc time xz-utils bzip2 umoci    # tests and benchmarks
    xfsprogs dosfstools btrfs-progs                                                             # a power cut on xfs, staging onto FAT and btrfs
    strace                                                                                      # a test holds a system call with it
    debootstrap git                                                                             # scripts/fresh-machine.sh
    qemu-system-x86 dracut-core busybox-static cpio e2fsprogs kmod                              # boot tests
    ovmf systemd-boot-efi grub-efi-amd64-bin mtools fdisk                                       # boot tests through the boot loaders
    sbsigntool python3-pefile                                                                   # Secure Boot: staged kernels signed; UKIs read back
    cryptsetup-bin                                                                              # a LUKS disk, and dracut's crypt module
    docker-registry apache2-utils skopeo python3 python3-cryptography curl openssl              # registry tests and benchmark
    python3-jsonschema                                                                          # SBOM schema tests
    archlinux-keyring                                                                           # a keyring as pacman-key makes it on Arch
    systemd                                                                                     # systemd-analyze judges an image's update stamps
)
missing=()
for p in "${packages[@]}"; do dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# The tests start registries of their own on 127.0.0.1; the packaged service listens on every
# interface, so it is not left running where systemd started it.
if [ -d /run/systemd/system ] && systemctl is-active --quiet docker-registry 2>/dev/null; then
    systemctl disable --now docker-registry >/dev/null 2>&1 || true
fi
command -v swift >/dev/null || export PATH=/opt/swift/usr/bin:$PATH
command -v swift >/dev/null || { echo "install-deps: Swift 6 is not installed (expected in /opt/swift)" >&2; exit 2; }
