#!/usr/bin/env bash
# Export benchmarks: `layerctl export` against mksquashfs and gensquashfs on the same trees, in one run.
#
#   sudo Benchmarks/export.sh [RUNS] [LEVELS]     (defaults: 3 runs, levels "3 15"; medians are reported)
#
# Inputs, each a stack of layers in a store of its own:
#   (a) the demo gaming stack, built with layerctl;
#   (b) a large-file tree in three layers: part of the Swift toolchain's usr/lib (~480 MB, ~870 files);
#   (c) a small-file tree in three layers: /usr/include and most of /usr/share (~400 MB, ~50,000 files);
#   (d) sparse files in two layers: Swift's shared libraries (~100 MB) under a 2 GiB disk image made with
#       truncate that holds 64 pieces of 256 KiB, and a 512 MiB file of one piece: a disk image of a VM
#       or a database, and lastlog after a large uid. All of it is in the page cache, holes included.
# The peers read the kernel's overlay mount of the same layers. Every tool gets zstd at the same level,
# 128 KiB blocks and one job per core; all trees are in the page cache before timing.
# For each input and level it prints wall time, CPU time, output size and peak RSS, our ratios to
# mksquashfs, and the compressor bound: the time the same zstd level needs for the tree's file data
# in independent 128 KiB blocks (zstd -b, one thread) divided by the number of cores.
# Then the incremental case: the top layer changes (about 4% of the data: files changed, deleted and
# added; see change() below) and we export again with the block cache from the previous export, against
# a full mksquashfs run of the changed stack. The re-export must equal a cold export byte for byte.
# Then the bounded block cache: a re-export of the stack after HISTORY (default 100) exports of other
# changed stacks, against the same re-export after a single export; with peak RSS and the packs the
# re-export opened (one descriptor each). HISTORY=0 skips it.
# Layers that layerctl builds carry a manifest (every entry with its metadata and content digest);
# the hand-made layers here get theirs in an untimed first export, before anything is measured.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib.sh
source scripts/lib.sh
stop_on_error export
runs=${1:-3}
levels=${2:-"3 15"}
jobs=$(nproc)
[ "$(id -u)" = 0 ] || { echo "export.sh: run as root (it mounts overlayfs for the peers)" >&2; exit 2; }
for tool in mksquashfs gensquashfs zstd; do
    command -v "$tool" >/dev/null || { echo "export.sh: $tool is missing (scripts/install-deps.sh installs it)" >&2; exit 2; }
done
[ -f demo/out/repo/demo/demo.db ] || bash demo/make-repo.sh >/dev/null
# shellcheck source=Benchmarks/lib.sh
source Benchmarks/lib.sh
build_layerctl
layerctl=$PWD/.build/release/layerctl
work=$(mktemp -d /var/tmp/layerctl-bench-export.XXXXXX)
mnt=$work/mnt
mkdir -p "$mnt"
# LAYERCTL_BENCH_KEEP=1 keeps the stores for a closer look; INPUTS="b c" runs only some inputs.
cleanup() { umount "$mnt" 2>/dev/null || true; [ -n "${LAYERCTL_BENCH_KEEP:-}" ] || rm -rf "$work"; }
trap cleanup EXIT

# lowerdir STORE NAME: the overlay lowerdir of the stack up to NAME, top first.
lowerdir() {
    local store=$1 key dirs=""
    key=$(cat "$store/refs/$2")
    while [ -n "$key" ]; do
        dirs="${dirs:+$dirs:}$store/layers/$key/tree"
        key=$(sed -n 's/.*"parent" *: *"\([0-9a-f]*\)".*/\1/p' "$store/layers/$key/layer.json")
    done
    echo "$dirs"
}

# measure LABEL CMD...: appends "wall cpu rss_kb" to $work/res/LABEL. Wall time comes from the
# shell's microsecond clock: time(1)'s is in hundredths, too coarse for the small re-exports.
measure() {
    local label=$1 start end
    shift
    start=$EPOCHREALTIME
    /usr/bin/time -f "%e %U %S %M" -o "$work/time" "$@" >"$work/stdout" 2>"$work/stderr" || { cat "$work/stderr" >&2; exit 1; }
    end=$EPOCHREALTIME
    read -r _ user sys rss <"$work/time"
    echo "$(echo "$end - $start" | bc -l) $(echo "$user + $sys" | bc -l) $rss" >>"$work/res/$label"
}
column_median() { awk -v c="$2" '{print $c}' "$work/res/$1" | median; }

echo "== preparing inputs in $work"
demo_layers=$work/demo-layers
cp -r layers/demo "$demo_layers"
sed -i "s|servers: \[.*\]|servers: [$PWD/demo/out/repo/\$repo]|" "$demo_layers/base.yaml"
"$layerctl" build "$demo_layers/gaming.yaml" --store "$work/a" >/dev/null 2>&1

lib=/opt/swift/usr/lib
b1=$(layer "$work/b" l1 "" "$lib/clang:usr/lib/clang" "$lib/libLTO.so.21.0:usr/lib/libLTO.so" "$lib/libclang.so.21.0.0:usr/lib/libclang.so")
b2=$(layer "$work/b" l2 "$b1" "$lib/swift_static:usr/lib/swift_static")
layer "$work/b" top "$b2" "$lib/libswiftDemangle.so:usr/lib/libswiftDemangle.so" "$lib/libIndexStore.so.21.0:usr/lib/libIndexStore.so" \
    "$lib/libSwiftSourceKitPlugin.so:usr/lib/libSwiftSourceKitPlugin.so" "$lib/libSwiftSourceKitClientPlugin.so:usr/lib/libSwiftSourceKitClientPlugin.so" >/dev/null

small_file_stack "$work/c" >/dev/null

# (d): pieces of random bytes at offsets spread over each file, the rest holes.
sparse_file() {
    local path=$1 size=$2 pieces=$3 i
    mkdir -p "$(dirname "$path")"
    truncate -s "$size" "$path"
    for i in $(seq 0 $((pieces - 1))); do
        head -c 262144 /dev/urandom | dd of="$path" bs=4096 seek=$(((i * size / pieces + i * 12288) / 4096)) conv=notrunc status=none
    done
}
d1=$(layer "$work/d" l1 "" "$lib/swift/linux:usr/lib/swift/linux")
layer "$work/d" top "$d1" >/dev/null
d_top=$work/d/layers/$(cat "$work/d/refs/top")/tree
sparse_file "$d_top/var/lib/machines/disk.img" $((2 << 30)) 64
sparse_file "$d_top/var/log/lastlog" $((512 << 20)) 1

# change STORE TOP: a layer "top2" beside TOP that changes, deletes and adds files worth about 4% of the
# stack's data: files are changed in one byte, hidden by a whiteout, or copied under a new name with
# one byte changed, in the ratio 2:1:1. By default the files come in 8 runs of neighbours in path order,
# as when a layer adds or upgrades a few packages; CHANGE=scattered takes every Nth file of the whole tree
# instead, the worst case for fragment blocks.
change() {
    local store=$1 top key2
    top=$(cat "$store/refs/$2")
    key2=$(printf 'top2|%s' "$top" | sha256sum | cut -c1-64)
    rm -rf "$store/layers/$key2"
    mkdir -p "$store/layers/$key2"
    cp -al "$store/layers/$top/tree" "$store/layers/$key2/tree"
    sed "s/$top/$key2/g; s/\"name\" *: *\"[a-z0-9]*\"/\"name\": \"top2\"/" "$store/layers/$top/layer.json" >"$store/layers/$key2/layer.json"
    echo "$key2" >"$store/refs/top2"
    local tree=$store/layers/$key2/tree total count budget=0 i=0 n=0 step run
    find "$mnt" -type f -printf '%s %P\n' | LC_ALL=C sort -k2 >"$work/files"
    total=$(awk '{s+=$1} END {printf "%.0f", s}' "$work/files")
    count=$(wc -l <"$work/files")
    if [ "${CHANGE:-clustered}" = scattered ]; then step=$((count / 2000 + 1)); run=1; else step=$((count / 8)); run=$step; fi
    flip() { printf 'X' | dd of="$1" bs=1 seek=$(($(stat -c %s "$1") / 2)) conv=notrunc status=none; }
    while read -r size path; do
        i=$((i + 1))
        # In run mode, take files from the start of each of the 8 stretches until its share is spent.
        if [ "$run" = 1 ]; then
            [ $((i % step)) = 0 ] || continue
            [ "$budget" -lt $((total / 25)) ] || break
        else
            [ "$budget" -lt $(((i / step + 1) * total / 200)) ] || continue
        fi
        mkdir -p "$tree/$(dirname "$path")"
        n=$((n + 1))
        case $((n % 4)) in
            0) rm -rf "${tree:?}/$path"; mknod "$tree/$path" c 0 0 ;;
            1) cp "$mnt/$path" "$tree/$path.added"; flip "$tree/$path.added" ;;
            *) rm -f "$tree/$path"; cp "$mnt/$path" "$tree/$path"; flip "$tree/$path" ;;
        esac
        budget=$((budget + size))
    done <"$work/files"
    printf '   top2 changes %d files, %.1f MB (%.1f%% of the data, %s)\n' "$n" "$(echo "$budget / 1000000" | bc -l)" \
        "$(echo "100 * $budget / $total" | bc -l)" "${CHANGE:-clustered}"
}

# history STORE TOP LEVEL: the bounded block cache (see the top of this file).
history() {
    local store=$1 top=$2 level=$3 n=${HISTORY:-100} topkey i key
    [ "$n" -gt 0 ] || return 0
    topkey=$(cat "$store/refs/$top")
    # HISTORY siblings of TOP: its tree with one new file of 256 KiB and one file changed in a byte.
    local victim
    victim=$(cd "$store/layers/$topkey/tree" && find . -type f -size +8k | LC_ALL=C sort | head -1)
    for i in $(seq "$n"); do
        key=$(printf 'history|%s|%d' "$topkey" "$i" | sha256sum | cut -c1-64)
        [ -d "$store/layers/$key" ] && continue
        mkdir -p "$store/layers/$key"
        cp -al "$store/layers/$topkey/tree" "$store/layers/$key/tree"
        head -c 262144 /dev/urandom >"$store/layers/$key/tree/history-$i"
        if [ -n "$victim" ]; then
            rm "$store/layers/$key/tree/$victim"
            cp "$store/layers/$topkey/tree/$victim" "$store/layers/$key/tree/$victim"
            printf '%08d' "$i" | dd of="$store/layers/$key/tree/$victim" bs=1 seek=4096 conv=notrunc status=none
        fi
        sed "s/$topkey/$key/g; s/\"name\" *: *\"[a-z0-9]*\"/\"name\": \"h$i\"/" "$store/layers/$topkey/layer.json" >"$store/layers/$key/layer.json"
        echo "$key" >"$store/refs/h$i"
        "$layerctl" export "h$i" --store "$store" -o "$work/out-h" --jobs "$jobs" --compression lz4 --no-block-cache >/dev/null  # its manifest
    done
    rm -rf "$work/res"; mkdir -p "$work/res"
    for _ in $(seq "$runs"); do
        for case in single history; do
            rm -rf "$store/cache/blocks" "$work/out-"*
            "$layerctl" export "$top" --store "$store" -o "$work/out-first" --compression "zstd:$level" --jobs "$jobs" >/dev/null
            if [ "$case" = history ]; then
                for i in $(seq "$n"); do
                    "$layerctl" export "h$i" --store "$store" -o "$work/out-h" --compression "zstd:$level" --jobs "$jobs" >/dev/null
                done
            fi
            measure "$case" "$layerctl" export "$top" --store "$store" -o "$work/out-$case" --compression "zstd:$level" \
                --jobs "$jobs" --json-result
            grep -o '"cachePacks":[0-9]*' "$work/stdout" | tr -dc '0-9' >"$work/res/$case.packs"
            du -sb "$store/cache/blocks" | cut -f1 >"$work/res/$case.bytes"
            cmp -s "$work/out-$case" "$work/out-first" || { echo "history: the re-export differs from the first export" >&2; exit 1; }
        done
    done
    local s_wall h_wall s_cpu h_cpu
    s_wall=$(column_median single 1); h_wall=$(column_median history 1)
    s_cpu=$(column_median single 2); h_cpu=$(column_median history 2)
    printf '           %-12s after 1 export: %.3f s wall, %.3f s cpu, rss %.1f MB, %s packs open, cache %.1f MB\n' "history" \
        "$s_wall" "$s_cpu" "$(echo "$(column_median single 3) / 1024" | bc -l)" "$(cat "$work/res/single.packs")" \
        "$(echo "$(cat "$work/res/single.bytes") / 1000000" | bc -l)"
    printf '           %-12s after %d exports: %.3f s wall, %.3f s cpu, rss %.1f MB, %s packs open, cache %.1f MB\n' "" "$n" \
        "$h_wall" "$h_cpu" "$(echo "$(column_median history 3) / 1024" | bc -l)" "$(cat "$work/res/history.packs")" \
        "$(echo "$(cat "$work/res/history.bytes") / 1000000" | bc -l)"
    printf '           %-12s ratio %.3f wall, %.3f cpu; wall times after 1: %s; after %d: %s\n' "" \
        "$(echo "$h_wall / $s_wall" | bc -l)" "$(echo "$h_cpu / $s_cpu" | bc -l)" \
        "$(awk '{printf "%.3f ", $1}' "$work/res/single")" "$n" "$(awk '{printf "%.3f ", $1}' "$work/res/history")"
}

inputs=${INPUTS:-a b c d}
declare -A label=([a]="(a) demo gaming stack" [b]="(b) large files" [c]="(c) small files" [d]="(d) sparse files")
for input in $inputs; do
    store=$work/$input
    top=$([ "$input" = a ] && echo gaming || echo top)
    mount -t overlay overlay -o "ro,lowerdir=$(lowerdir "$store" "$top")" "$mnt"
    files=$(find "$mnt" -type f | wc -l)
    bytes=$(find "$mnt" -type f -printf '%s\n' | awk '{s+=$1} END {printf "%.0f", s}')
    find "$mnt" -type f -print0 | LC_ALL=C sort -z | xargs -0 cat >"$work/data.bin"
    tar cf /dev/null -C "$mnt" . 2>/dev/null || true
    echo
    printf '== %s: %d files, %.0f MB of file data, %d jobs\n' "${label[$input]}" "$files" "$(echo "$bytes / 1000000" | bc -l)" "$jobs"
    change "$store" "$top"
    # The hand-made layers' manifests (see the top of this file).
    for name in "$top" top2; do
        "$layerctl" export "$name" --store "$store" -o "$work/out-manifests" --jobs "$jobs" --no-block-cache >/dev/null
    done
    for level in $levels; do
        rm -rf "$work/res"; mkdir -p "$work/res"
        for _ in $(seq "$runs"); do
            rm -f "$work/out-"*
            measure ours "$layerctl" export "$top" --store "$store" -o "$work/out-ours" --compression "zstd:$level" --jobs "$jobs" --no-block-cache
            measure mksquashfs mksquashfs "$mnt" "$work/out-mksquashfs" -comp zstd -Xcompression-level "$level" -b 131072 \
                -processors "$jobs" -no-progress -quiet -noappend
            measure gensquashfs gensquashfs -D "$mnt" -c zstd -X "level=$level" -b 131072 -j "$jobs" -q -f "$work/out-gensquashfs"
        done
        speed=$(zstd -b"$level" -e"$level" -B131072 -T1 -i2 "$work/data.bin" 2>&1 | tr '\r' '\n' | grep -Eo '[0-9.]+ MB/s' | tail -2 | head -1 | cut -d' ' -f1)
        bound=$(echo "$bytes / ($speed * 1000000 * $jobs)" | bc -l)
        m_wall=$(column_median mksquashfs 1); m_rss=$(column_median mksquashfs 3)
        m_size=$(stat -c %s "$work/out-mksquashfs")
        printf '  zstd:%-2s  %-12s %8s %8s %12s %9s   %s\n' "$level" tool "wall s" "cpu s" "size B" "rss MB" "vs mksquashfs (wall, size, rss)"
        for tool in ours mksquashfs gensquashfs; do
            wall=$(column_median $tool 1); cpu=$(column_median $tool 2); rss=$(column_median $tool 3)
            size=$(stat -c %s "$work/out-$tool")
            printf '           %-12s %8.2f %8.2f %12d %9.1f   %.2f, %.4f, %.2f\n' "$tool" "$wall" "$cpu" "$size" \
                "$(echo "$rss / 1024" | bc -l)" "$(echo "$wall / $m_wall" | bc -l)" "$(echo "$size / $m_size" | bc -l)" \
                "$(echo "$rss / $m_rss" | bc -l)"
        done
        printf '           %-12s %8.2f   (zstd -b: %s MB/s on one core, x %d cores)\n' "bound" "$bound" "$speed" "$jobs"

        # Incremental: export the stack once with an empty block cache, then time the re-export of top2.
        for _ in $(seq "$runs"); do
            rm -rf "$store/cache/blocks" "$work/out-"*
            "$layerctl" export "$top" --store "$store" -o "$work/out-warm" --compression "zstd:$level" --jobs "$jobs" >/dev/null
            measure incremental "$layerctl" export top2 --store "$store" -o "$work/out-incremental" --compression "zstd:$level" \
                --jobs "$jobs" --json-result
            blocks=$(grep -o '"cacheHits":[0-9]*,"cacheMisses":[0-9]*' "$work/stdout" | tr -dc '0-9,')
            umount "$mnt"
            mount -t overlay overlay -o "ro,lowerdir=$(lowerdir "$store" top2)" "$mnt"
            measure mksquashfs-top2 mksquashfs "$mnt" "$work/out-mk2" -comp zstd -Xcompression-level "$level" -b 131072 \
                -processors "$jobs" -no-progress -quiet -noappend
            umount "$mnt"
            mount -t overlay overlay -o "ro,lowerdir=$(lowerdir "$store" "$top")" "$mnt"
        done
        "$layerctl" export top2 --store "$store" -o "$work/out-cold2" --compression "zstd:$level" --jobs "$jobs" --no-block-cache >/dev/null
        same="DIFFERS from a cold export"
        cmp -s "$work/out-incremental" "$work/out-cold2" && same="byte-identical to a cold export"
        i_wall=$(column_median incremental 1); m2_wall=$(column_median mksquashfs-top2 1)
        printf '           %-12s %8.3f %8.2f   vs full mksquashfs of top2 %.3f s: ratio %.3f, %s\n' "re-export" "$i_wall" \
            "$(column_median incremental 2)" "$m2_wall" "$(echo "$i_wall / $m2_wall" | bc -l)" "$same"
        printf '           %-12s blocks: %s from the cache, %s compressed\n' "" "${blocks%,*}" "${blocks#*,}"
        [ "$input" != a ] || history "$store" "$top" "$level"
    done
    umount "$mnt"
done
