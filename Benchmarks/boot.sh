#!/usr/bin/env bash
# What layerctl's boot hook adds to a boot: QEMU boots one stack twice with the same kernel and the
# same dracut initramfs (scripts/make-initramfs.sh), in one run:
#   hook   the squashfs image as a file on an ext4 disk, mounted by the hook with a tmpfs overlay;
#   plain  the same tree unpacked onto an ext4 root disk, mounted by dracut's root= (no hook), once
#          with the fsck dracut runs on a root it mounts (as a machine boots) and once without
#          (rd.skipfsck: the mount alone, the stricter comparison).
# The image's init prints /proc/uptime first thing, so each boot reports the time from the kernel's
# start to init. The difference is what the hook costs. The disks are writable, so dracut can fsck
# the plain root as it would on a machine.
#
#   sudo Benchmarks/boot.sh [RUNS]        (default 5 runs; medians are reported)
#
# The stack is the demo gaming stack plus a top layer with 3 GB of the Swift toolchain (a 1 GB image)
# (SIZE=small takes a tenth of it). VERIFY=1 adds boots with layerctl.verify=, which reads the
# whole image. Accelerator: KVM where /sys/module/kvm_intel or kvm_amd exists, TCG otherwise;
# under TCG every step is slower than on hardware, the hook's included.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib.sh
source scripts/lib.sh
stop_on_error boot
runs=${1:-5}
[ "$(id -u)" = 0 ] || { echo "boot.sh: run as root (it builds layers and uses mkfs.ext4 -d)" >&2; exit 2; }
# shellcheck source=Benchmarks/lib.sh
source Benchmarks/lib.sh
source scripts/install-deps.sh
[ -f demo/out/repo/demo/demo.db ] || bash demo/make-repo.sh >/dev/null
bash scripts/fetch-kernel.sh >/dev/null
build_layerctl
layerctl=$PWD/.build/release/layerctl
work=$(mktemp -d /var/tmp/layerctl-bench-boot.XXXXXX)
cleanup() { [ -n "${LAYERCTL_BENCH_KEEP:-}" ] || rm -rf "$work"; }
trap cleanup EXIT
accel=tcg
if [ -e /sys/module/kvm_intel ] || [ -e /sys/module/kvm_amd ]; then accel=kvm; fi

echo "== preparing in $work"
bash scripts/make-initramfs.sh "$work/initramfs.img"
cp -r layers/demo "$work/layers"
sed -i "s|servers: \[.*\]|servers: [$PWD/demo/out/repo/\$repo]|" "$work/layers/base.yaml"
"$layerctl" build "$work/layers/gaming.yaml" --store "$work/store" >/dev/null 2>&1
mkdir -p "$work/init/usr/bin"
cat >"$work/init/usr/bin/layerctl-bench-init" <<'INIT'
#!/bin/sh
read -r up _ </proc/uptime
echo "BENCH init $up"
exec /usr/bin/poweroff -f
INIT
chmod 0755 "$work/init/usr/bin/layerctl-bench-init"
lib=/opt/swift/usr/lib
sources=("$lib/swift:usr/lib/toolchain/swift" "$lib/clang:usr/lib/toolchain/clang" "$lib/swift_static:usr/lib/toolchain/swift_static" \
    "$lib/libclang.so.21.0.0:usr/lib/toolchain/libclang.so" "$lib/libLTO.so.21.0:usr/lib/toolchain/libLTO.so" \
    "$lib/libsourcekitdInProc.so:usr/lib/toolchain/libsourcekitdInProc.so" "/opt/swift/usr/bin:usr/lib/toolchain/bin")
[ "${SIZE:-}" = small ] && sources=("$lib/swift_static:usr/lib/toolchain/swift_static")
layer "$work/store" bench "$(cat "$work/store/refs/gaming")" "$work/init/usr/bin/layerctl-bench-init:usr/bin/layerctl-bench-init" \
    "${sources[@]}" >/dev/null
"$layerctl" export bench --store "$work/store" -o "$work/image.squashfs" --compression zstd:3 >/dev/null 2>&1
image_bytes=$(stat -c %s "$work/image.squashfs")
mkdir -p "$work/disk/images"
cp "$work/image.squashfs" "$work/disk/images/bench.squashfs"
disk_mb=$((image_bytes / 1048576 + 64))
mkfs.ext4 -q -U 3e0c6f61-7a5e-4b8e-9c61-2f5d1f2b7a10 -d "$work/disk" "$work/hook.ext4" "${disk_mb}M"
unsquashfs -q -n -d "$work/root" "$work/image.squashfs" >/dev/null
tree_mb=$(du -sm "$work/root" | cut -f1)
mkfs.ext4 -q -U 7b6d4e2a-1c3f-4a5b-8d9e-0f1a2b3c4d5e -d "$work/root" "$work/plain.ext4" "$((tree_mb * 12 / 10 + 64))M"
rm -rf "$work/root" "$work/disk"

# boot LABEL DISK APPEND...: appends the uptime at init to $work/LABEL
boot() {
    local label=$1 disk=$2
    shift 2
    timeout 600 qemu-system-x86_64 -accel "$accel" -m 1024 -nographic -nic none -no-reboot \
        -kernel demo/out/kernel/vmlinuz -initrd "$work/initramfs.img" \
        -append "console=ttyS0 panic=-1 rd.shell=0 init=/usr/bin/layerctl-bench-init $*" \
        -drive "file=$disk,format=raw,if=virtio" >"$work/serial" 2>&1 || true
    local up
    up=$(tr -d '\r' <"$work/serial" | sed -n 's/^BENCH init \([0-9.]*\)$/\1/p' | head -n 1)
    [ -n "$up" ] || { echo "boot.sh: the $label boot did not reach init:" >&2; tail -n 30 "$work/serial" >&2; exit 1; }
    echo "$up" >>"$work/$label"
}

printf '== image: %.0f MB squashfs (zstd:3) of %d MB of files; %s, %d runs\n' "$(echo "$image_bytes / 1000000" | bc -l)" "$tree_mb" \
    "$accel" "$runs"
hook="layerctl.image=/images/bench.squashfs layerctl.device=UUID=3e0c6f61-7a5e-4b8e-9c61-2f5d1f2b7a10"
for _ in $(seq "$runs"); do
    boot hook "$work/hook.ext4" "$hook"
    boot plain "$work/plain.ext4" "root=UUID=7b6d4e2a-1c3f-4a5b-8d9e-0f1a2b3c4d5e ro"
    boot nofsck "$work/plain.ext4" "root=UUID=7b6d4e2a-1c3f-4a5b-8d9e-0f1a2b3c4d5e ro rd.skipfsck"
    if [ -n "${VERIFY:-}" ]; then
        boot verify "$work/hook.ext4" "$hook layerctl.verify=sha256:$(sha256sum "$work/image.squashfs" | cut -c1-64)"
    fi
done
h=$(median <"$work/hook"); p=$(median <"$work/plain"); n=$(median <"$work/nofsck")
printf '  kernel start to init, median:  hook %.2f s   plain ext4 root %.2f s   without its fsck %.2f s\n' "$h" "$p" "$n"
printf '  added by the hook: %+.2f s against the plain boot, %+.2f s against its mount alone\n' "$(echo "$h - $p" | bc -l)" \
    "$(echo "$h - $n" | bc -l)"
for label in hook plain nofsck; do printf '  every run (%s): %s\n' "$label" "$(tr '\n' ' ' <"$work/$label")"; done
if [ -n "${VERIFY:-}" ]; then
    v=$(median <"$work/verify")
    printf '  with layerctl.verify=: %.2f s, %.2f s more than without\n' "$v" "$(echo "$v - $h" | bc -l)"
fi
