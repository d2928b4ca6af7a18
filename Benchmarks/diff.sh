#!/usr/bin/env bash
# `layerctl diff --files` against sqfsdiff on the same two images, in one run:
#
#   sudo Benchmarks/diff.sh [RUNS]        (default 5 runs; medians are reported)
#
# Then the same two stacks as layers (`layerctl diff top changed`, which reads the layers'
# manifests) against `diff -r` of the kernel's overlay mounts of the two stacks.
#
# The images are the small-file tree of Benchmarks/export.sh ((c): /usr/include and most of
# /usr/share in three layers, about 50,000 files) and the same stack with a fourth layer that makes
# about 1,000 changes: 500 files changed by a byte, 250 deleted, 250 added. Both images are written
# by layerctl export at zstd:3. Every run reads them from the page cache (the first, untimed run
# warms it), which is what a warm cache means here.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib.sh
source scripts/lib.sh
stop_on_error diff
runs=${1:-5}
[ "$(id -u)" = 0 ] || { echo "diff.sh: run as root (layer trees keep owners and devices)" >&2; exit 2; }
command -v sqfsdiff >/dev/null || { echo "diff.sh: sqfsdiff is missing (scripts/install-deps.sh installs it)" >&2; exit 2; }
# shellcheck source=Benchmarks/lib.sh
source Benchmarks/lib.sh
build_layerctl
layerctl=$PWD/.build/release/layerctl
work=$(mktemp -d /var/tmp/layerctl-bench-diff.XXXXXX)
cleanup() { [ -n "${LAYERCTL_BENCH_KEEP:-}" ] || rm -rf "$work"; }
trap cleanup EXIT

echo "== preparing in $work"
store=$work/store
top=$(small_file_stack "$store")

# changed: a layer over top with 500 files changed, 250 deleted (whiteouts) and 250 added.
key=$(printf 'changed|%s' "$top" | sha256sum | cut -c1-64)
tree=$store/layers/$key/tree
mkdir -p "$tree"
sed "s/$top/$key/g; s/\"name\" *: *\"[a-z0-9]*\"/\"name\": \"changed\"/; s/\"parent\": [^,]*/\"parent\": \"$top\"/" \
    "$store/layers/$top/layer.json" >"$store/layers/$key/layer.json"
echo "$key" >"$store/refs/changed"
(cd "$store/layers/$top/tree" && find . -type f -size +0 -printf '%P\n' | LC_ALL=C sort) >"$work/files"
total=$(wc -l <"$work/files")
step=$((total / 1000))
n=0
while read -r path; do
    n=$((n + 1))
    [ $((n % step)) = 0 ] || continue
    kind=$(((n / step) % 4))
    mkdir -p "$tree/$(dirname "$path")"
    case $kind in
        0) mknod "$tree/$path" c 0 0 ;;
        1) cp -a "$store/layers/$top/tree/$path" "$tree/$path.added" ;;
        *) cp -a "$store/layers/$top/tree/$path" "$tree/$path"; printf 'X' >>"$tree/$path" ;;
    esac
done <"$work/files"

"$layerctl" export top --store "$store" -o "$work/old.squashfs" --compression zstd:3 >/dev/null
"$layerctl" export changed --store "$store" -o "$work/new.squashfs" --compression zstd:3 >/dev/null
files=$("$layerctl" diff "$work/old.squashfs" "$work/old.squashfs" --json | grep -o '"entries":\[\]' | wc -l)
[ "$files" = 1 ] || { echo "diff.sh: an image differs from itself" >&2; exit 1; }
changes=$("$layerctl" diff "$work/old.squashfs" "$work/new.squashfs" --name-only | wc -l || true)
entries=$(unsquashfs -l "$work/old.squashfs" | wc -l)
printf '== images: %d and %d bytes, %d entries; layerctl diff finds %d changed paths\n' "$(stat -c %s "$work/old.squashfs")" \
    "$(stat -c %s "$work/new.squashfs")" "$entries" "$changes"

# time LABEL CMD...: appends the wall time to $work/LABEL (diff tools exit 1 on differences)
timed() {
    local label=$1
    shift
    local t0 t1
    t0=$(date +%s.%N)
    "$@" >/dev/null 2>&1 || true
    t1=$(date +%s.%N)
    echo "$t1 - $t0" | bc -l >>"$work/$label"
}
"$layerctl" diff "$work/old.squashfs" "$work/new.squashfs" --files >/dev/null || true
sqfsdiff -a "$work/old.squashfs" -b "$work/new.squashfs" >/dev/null || true
for _ in $(seq "$runs"); do
    timed ours "$layerctl" diff "$work/old.squashfs" "$work/new.squashfs" --files
    timed sqfsdiff sqfsdiff -a "$work/old.squashfs" -b "$work/new.squashfs"
done
ours=$(median <"$work/ours"); theirs=$(median <"$work/sqfsdiff")
printf '  layerctl diff --files %.3f s   sqfsdiff %.3f s   ratio %.3f   (medians of %d)\n' "$ours" "$theirs" \
    "$(echo "$ours / $theirs" | bc -l)" "$runs"

# Two layers: what their manifests say against diff -r of the kernel's overlay mounts of the stacks.
c2=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["parent"])' "$store/layers/$top/layer.json")
c1=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["parent"])' "$store/layers/$c2/layer.json")
lower="$store/layers/$top/tree:$store/layers/$c2/tree:$store/layers/$c1/tree"
mkdir -p "$work/mount-old" "$work/mount-new"
mount -t overlay overlay -o "ro,lowerdir=$lower" "$work/mount-old"
mount -t overlay overlay -o "ro,lowerdir=$store/layers/$key/tree:$lower" "$work/mount-new"
trap 'umount "$work/mount-old" "$work/mount-new" 2>/dev/null; cleanup' EXIT
"$layerctl" diff top changed --store "$store" --files >/dev/null || true
diff -r --no-dereference "$work/mount-old" "$work/mount-new" >/dev/null || true
for _ in $(seq "$runs"); do
    timed layers "$layerctl" diff top changed --store "$store" --files
    timed diff-r diff -r --no-dereference "$work/mount-old" "$work/mount-new"
done
ours=$(median <"$work/layers"); theirs=$(median <"$work/diff-r")
printf '  layers: layerctl diff top changed --files %.3f s   diff -r of the overlay mounts %.3f s   ratio %.3f   (medians of %d)\n' \
    "$ours" "$theirs" "$(echo "$ours / $theirs" | bc -l)" "$runs"
