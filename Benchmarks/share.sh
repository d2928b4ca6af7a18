#!/usr/bin/env bash
# A fleet update through a registry: a machine that holds v1 of a stack pulls v2, which changed
# its top layer only. Debian's docker-registry runs on loopback behind scripts/registry-proxy.py,
# which counts the bytes each way, in one run:
#   bytes  what the pull of v2 downloaded (manifests, config and blobs, as the registry sent them)
#          against the compressed blob of the changed layer: at most 1.1x is the goal;
#   time   from the pull to a staged image: `stage REF`, which pulls, then exports through the
#          block cache and stages, in one process (and, as a second figure, `pull` then `stage`,
#          two commands), against the peer path: downloading what an update must download (curl, through
#          the same proxy, on one connection: v2's manifest, its config and the changed blob, every
#          digest known beforehand, so no client can do less) plus a re-export of v2 from a store
#          that already has it (`export`, the same block cache); at most 1.0x plus noise is the
#          goal. The ratio against the changed blob's transfer alone is reported too.
# RATE=BYTES (a second) makes the proxy send blobs no faster, as a network link would (12500000 is
# 100 Mbit/s); by default they move at loopback speed, where the pull's CPU work shows most.
# Every run starts from a copy of the v1 machine, on a loop-mounted ext4 disk (staging finds the
# image by its filesystem's UUID), synced before the clock starts (a pulled layer is synced at
# its commit, and syncfs would write the copy too); the paths take turns going first.
#
#   sudo Benchmarks/share.sh [RUNS]       (default 5 runs; medians and the spread are reported)
#
# The stack: the demo gaming stack, a layer with a stand-in kernel and initramfs in /boot (staging
# needs them, nothing boots here), and a top layer with SIZE MiB (default 60) of this machine's
# executables, one file, which v2 changes (SIZE=8 shows the fixed costs of two processes). The default is
# 60: a `files:` source may be at most 64 MiB, and v2 appends to the file.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib.sh
source scripts/lib.sh
stop_on_error share
runs=${1:-5}
[ "$(id -u)" = 0 ] || { echo "share.sh: run as root (the builder needs namespaces)" >&2; exit 2; }
# shellcheck source=Benchmarks/lib.sh
source Benchmarks/lib.sh
source scripts/install-deps.sh
[ -f demo/out/repo/demo/demo.db ] || bash demo/make-repo.sh >/dev/null
build_layerctl
layerctl=$PWD/.build/release/layerctl
work=$(mktemp -d /var/tmp/layerctl-bench-share.XXXXXX)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    umount "$work/disk" 2>/dev/null || true
    [ -n "${LAYERCTL_BENCH_KEEP:-}" ] || rm -rf "$work"
}
trap cleanup EXIT
now() { date +%s.%N; }

# The registry, on a free port of 127.0.0.1, and the counting proxy in front of it.
start_registry "$work"
python3 scripts/registry-proxy.py --upstream "$registry" --port-file "$work/proxy.port" \
    --stats "$work/stats.json" --match '/blobs/sha256:' --rate "${RATE:-0}" &
pids+=($!)
for _ in $(seq 100); do [ -s "$work/proxy.port" ] && break; sleep 0.1; done
proxy=127.0.0.1:$(cat "$work/proxy.port")
bytes_down() { python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["bytesDown"])' "$work/stats.json"; }

echo "== building v1 and v2 in $work"
cp -r layers/demo "$work/layers"
sed -i "s|\.\./\.\./demo/out|$PWD/demo/out|" "$work/layers/base.yaml"
cat >"$work/layers/kernel.yaml" <<'YAML'
from: gaming
files:
  - path: /boot/vmlinuz-demo
    content: "a stand-in kernel\n"
  - path: /boot/initramfs-demo.img
    content: "a stand-in initramfs\n"
YAML
cat >"$work/layers/app.yaml" <<'YAML'
from: kernel
files:
  - path: /opt/app/app.bin
    mode: "0755"
    source: files/app.bin
YAML
# (head stops reading early: the feeding pipeline's SIGPIPE is no failure, so it is not one.)
head -c "${SIZE:-60}M" < <(find /usr/bin -maxdepth 1 -type f -size +1M | LC_ALL=C sort | xargs cat 2>/dev/null || true) \
    >"$work/layers/files/app.bin"
"$layerctl" build "$work/layers/app.yaml" --store "$work/a" >/dev/null 2>&1
"$layerctl" push app "$registry/fleet/app:v1" --store "$work/a" >/dev/null 2>&1
# The v1 machine, on its own disk: pulled and staged.
truncate -s 3G "$work/disk.ext4"
mkfs.ext4 -q "$work/disk.ext4"
mkdir -p "$work/disk"
mount -o loop "$work/disk.ext4" "$work/disk"
machine=$work/disk
mkdir -p "$machine/v1/boot" "$machine/v1/run"
"$layerctl" pull "$registry/fleet/app:v1" --name app --store "$machine/v1/store" >/dev/null 2>&1
"$layerctl" stage app --store "$machine/v1/store" --state-dir "$machine/v1/state" --boot-dir "$machine/v1/boot" --no-grub \
    --run-dir "$machine/v1/run" >/dev/null
# v2: the top layer's file changes.
printf 'v2' >>"$work/layers/files/app.bin"
"$layerctl" build "$work/layers/app.yaml" --store "$work/a" >/dev/null 2>&1
"$layerctl" push app "$registry/fleet/app:v2" --store "$work/a" --json >"$work/push.json" 2>/dev/null
read -r changed_blob changed_size < <(python3 -c 'import json, sys
layer = json.load(open(sys.argv[1]))["layers"][-1]; print(layer["digest"], layer["size"])' "$work/push.json")
echo "changed layer: $changed_blob, $changed_size bytes"
manifest_type=application/vnd.oci.image.manifest.v1+json
config_blob=$(curl -sf -H "Accept: $manifest_type" "http://$registry/v2/fleet/app/manifests/v2" |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["config"]["digest"])')

: >"$work/ours"; : >"$work/peer"; : >"$work/bytes"; : >"$work/pull"; : >"$work/stage"; : >"$work/download"; : >"$work/export"
: >"$work/blob"; : >"$work/strict"; : >"$work/split"
ours() {  # stage v2 straight from its reference, through the proxy: one command
    local run=$machine/run-$1-ours before t0 t1
    cp -a "$machine/v1" "$run"
    sync -f "$run"  # the copy on disk: no path pays for writing it
    before=$(bytes_down)
    t0=$(now)
    "$layerctl" stage "$proxy/fleet/app:v2" --name app --store "$run/store" --state-dir "$run/state" \
        --boot-dir "$run/boot" --no-grub --run-dir "$run/run" >/dev/null 2>&1
    t1=$(now)
    echo "$(($(bytes_down) - before))" >>"$work/bytes"
    echo "$t1 - $t0" | bc >>"$work/ours"
    rm -rf "$run"
}
split() {  # pull v2 through the proxy, then stage it: two commands
    local run=$machine/run-$1-split t0 t1 tp
    cp -a "$machine/v1" "$run"
    sync -f "$run"  # the copy on disk: no path pays for writing it
    t0=$(now)
    "$layerctl" pull "$proxy/fleet/app:v2" --name app --store "$run/store" >/dev/null 2>&1
    tp=$(now)
    "$layerctl" stage app --store "$run/store" --state-dir "$run/state" --boot-dir "$run/boot" --no-grub \
        --run-dir "$run/run" >/dev/null
    t1=$(now)
    echo "$t1 - $t0" | bc >>"$work/split"
    echo "$tp - $t0" | bc >>"$work/pull"
    echo "$t1 - $tp" | bc >>"$work/stage"
    rm -rf "$run"
}
peer() {  # download the manifest, config and changed blob, then re-export v2 from a store that has it
    local run=$machine/run-$1-peer t0 t1 t2 t3 blob
    cp -a "$machine/v1" "$run"
    sync -f "$run"  # the copy on disk: no path pays for writing it
    "$layerctl" pull "$registry/fleet/app:v2" --name app --store "$run/store" >/dev/null 2>&1
    t0=$(now)
    curl -sf -H "Accept: $manifest_type" -w '%{time_total}\n' \
        -o "$run/manifest" "http://$proxy/v2/fleet/app/manifests/v2" \
        -o "$run/config" "http://$proxy/v2/fleet/app/blobs/$config_blob" \
        -o "$run/blob" "http://$proxy/v2/fleet/app/blobs/$changed_blob" >"$run/transfers"
    t1=$(now)
    blob=$(tail -1 "$run/transfers")
    t2=$(now)
    "$layerctl" export app --store "$run/store" -o "$run/app.squashfs" >/dev/null
    t3=$(now)
    echo "($t1 - $t0) + ($t3 - $t2)" | bc >>"$work/peer"
    echo "$blob + ($t3 - $t2)" | bc >>"$work/strict"
    echo "$t1 - $t0" | bc >>"$work/download"
    echo "$blob" >>"$work/blob"
    echo "$t3 - $t2" | bc >>"$work/export"
    rm -rf "$run"
}
for run in $(seq "$runs"); do
    case $((run % 3)) in
        1) ours "$run"; peer "$run"; split "$run" ;;
        2) peer "$run"; split "$run"; ours "$run" ;;
        0) split "$run"; ours "$run"; peer "$run" ;;
    esac
done

ours_median=$(median <"$work/ours")
peer_median=$(median <"$work/peer")
bytes=$(median <"$work/bytes")
spread() { sort -g "$1" | awk 'NR == 1 {min = $1} {max = $1} END {printf "%.3f-%.3f", min, max}'; }
echo
echo "bytes downloaded by the pull of v2: $bytes (median of $runs), changed blob $changed_size:" \
    "$(echo "scale=3; $bytes / $changed_size" | bc)x"
echo "stage REF:         median $(printf %.3f "$ours_median") s (spread $(spread "$work/ours") s)"
echo "pull, then stage:  median $(median <"$work/split" | xargs printf %.3f) s (spread $(spread "$work/split") s):" \
    "pull $(median <"$work/pull" | xargs printf %.3f) s, stage $(median <"$work/stage" | xargs printf %.3f) s"
echo "download + export: median $(printf %.3f "$peer_median") s (spread $(spread "$work/peer") s):" \
    "curl $(median <"$work/download" | xargs printf %.3f) s (the changed blob $(median <"$work/blob" | xargs printf %.3f) s)," \
    "export $(median <"$work/export" | xargs printf %.3f) s"
echo "ratio: $(echo "scale=3; $ours_median / $peer_median" | bc)x;" \
    "pull, then stage: $(echo "scale=3; $(median <"$work/split") / $peer_median" | bc)x;" \
    "stage REF against the changed blob's transfer alone plus the export: $(echo "scale=3; $ours_median / $(median <"$work/strict")" | bc)x"
