#!/usr/bin/env bash
# Two builds of layerctl on the same work, alternating, in one run: for budgets such as "no
# benchmark gets slower by more than 5%", where two separate runs of a benchmark on this shared
# machine differ by more than that.
#
#   sudo Benchmarks/compare.sh BEFORE AFTER [RUNS]     (two layerctl executables; default 21 runs)
#
# Build BEFORE in a worktree of the older commit:
#   git worktree add /tmp/before OLD && (cd /tmp/before && swift build -c release --static-swift-stdlib --product layerctl)
#   sudo Benchmarks/compare.sh /tmp/before/.build/release/layerctl .build/release/layerctl
#
# Cases, on the demo stack in a store on /dev/shm (the disk out of it): a cold base layer, the four
# layers cached, `ls`, `diff --files` of two images and of two layers. The images are written by
# AFTER; BEFORE writing the same bytes is checked first. Median and minimum wall time and median
# CPU time (user + system) of each, and AFTER's median over BEFORE's.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib.sh
source scripts/lib.sh
stop_on_error compare
[ $# -ge 2 ] || { sed -n '6p' "$0" >&2; exit 2; }
before=$(realpath "$1") after=$(realpath "$2") runs=${3:-21}
[ "$(id -u)" = 0 ] || { echo "compare.sh: run as root (the builder needs namespaces)" >&2; exit 2; }
[ -f demo/out/repo/demo/demo.db ] || bash demo/make-repo.sh >/dev/null
layers=$PWD/layers/demo
work=$(mktemp -d /dev/shm/layerctl-compare.XXXXXX)
trap 'rm -rf "$work"' EXIT

quiet "$after" build "$layers/gaming.yaml" --store "$work/store"
quiet "$after" export base --store "$work/store" -o "$work/base.squashfs"
quiet "$after" export gaming --store "$work/store" -o "$work/gaming.squashfs"
quiet "$before" export gaming --store "$work/store" -o "$work/before.squashfs"
if cmp -s "$work/gaming.squashfs" "$work/before.squashfs"; then
    echo "BEFORE and AFTER write the same image bytes"
else
    echo "BEFORE and AFTER write different images"
fi

# One timed run: appends "CASE SIDE WALL CPU" to the log. Status 1 is `diff`'s "different".
TIMEFORMAT='%R %U %S'
measure() {
    local name=$1 side=$2 times
    shift 2
    times=$({ time { "$@" >/dev/null 2>&1 || [ $? = 1 ]; }; } 2>&1) || { echo "compare: $side failed: $*" >&2; exit 1; }
    echo "$name $side $times" >>"$work/log"
}
for i in $(seq 1 "$runs"); do
    # Each side goes first in every other round.
    sides="before after"
    [ $((i % 2)) = 0 ] && sides="after before"
    for side in $sides; do
        bin=$before
        [ "$side" = after ] && bin=$after
        measure cold "$side" "$bin" build "$layers/base.yaml" --store "$work/cold-$side-$i"
        measure cached "$side" "$bin" build "$layers/gaming.yaml" --store "$work/store"
        measure ls "$side" "$bin" ls --store "$work/store"
        measure diff-images "$side" "$bin" diff --files "$work/base.squashfs" "$work/gaming.squashfs"
        measure diff-layers "$side" "$bin" diff --files base gaming --store "$work/store"
    done
    rm -rf "$work"/cold-*
done
python3 - "$work/log" <<'EOF'
import statistics, sys
rows = [line.split() for line in open(sys.argv[1])]
print(f"{'case':12} {'side':6} {'wall median':>11} {'wall min':>9} {'cpu median':>10}   after/before (wall median, cpu median)")
for case in dict.fromkeys(r[0] for r in rows):
    medians = {}
    for side in ("before", "after"):
        wall = [float(r[2]) for r in rows if r[0] == case and r[1] == side]
        cpu = [float(r[3]) + float(r[4]) for r in rows if r[0] == case and r[1] == side]
        medians[side] = (statistics.median(wall), statistics.median(cpu))
        print(f"{case:12} {side:6} {medians[side][0]:11.3f} {min(wall):9.3f} {medians[side][1]:10.3f}")
    (wb, cb), (wa, ca) = medians["before"], medians["after"]
    print(f"{'':12} {'':6} {'':11} {'':9} {'':10}   {wa / wb:.3f}, {ca / cb if cb else float('nan'):.3f}")
EOF
