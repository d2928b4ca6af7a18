#!/usr/bin/env bash
# A stranger's deep image: how a pull's work grows with the image's layers. Each layer of the image
# is a gzip blob of FOLDERS (default 2000) folders, each opaque (`.wh..wh..opq`), and one file; or,
# with SHAPE=wide, of FOLDERS files in one folder, `d`, and a whiteout of a name of the layer below
# there. An image of SMALL (default 16) and one of LARGE (default 64) such layers go to Debian's
# docker-registry on loopback. Every layer's unpack looks up the opaque folders of the layers below
# it, and the names below its whiteouts; a pull whose cost per layer grows with the layers below
# costs the square of an image's layers, and an image may have 256.
#
#   sudo Benchmarks/deep-pull.sh [RUNS]     (default 3 runs; medians and the spread are reported)
#
# Measured in one run, interleaved, each from an empty store: `layerctl pull` of each image, and
# the peer path to a tree on disk, `skopeo copy` to an OCI layout and `umoci unpack` of it (umoci
# 0.4 reads gzip layers only). Reported: wall and CPU time (user + system, children included) of
# each, medians; the growth, the time a layer of LARGE over that of SMALL (1.0 is linear; 4.0
# would be quadratic); and layerctl's time against the peer's at each size. The wall times are
# at the mercy of this machine's disk: a pull puts each layer on disk before it commits it, which
# umoci does not.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib.sh
source scripts/lib.sh
stop_on_error deep-pull
runs=${1:-3}
[ "$(id -u)" = 0 ] || { echo "deep-pull.sh: run as root (a pull commits layers with their owners)" >&2; exit 2; }
# shellcheck source=Benchmarks/lib.sh
source Benchmarks/lib.sh
build_layerctl
layerctl=$PWD/.build/release/layerctl
small=${SMALL:-16} large=${LARGE:-64} folders=${FOLDERS:-2000}
work=$(mktemp -d /var/tmp/layerctl-bench-deep.XXXXXX)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    [ -n "${LAYERCTL_BENCH_KEEP:-}" ] || rm -rf "$work"
}
trap cleanup EXIT

start_registry "$work"

# layout DIR LAYERS: an OCI layout of an image of LAYERS layers of the SHAPE above, with the tag
# `deep`.
layout() {
    python3 - "$1" "$2" "$folders" "${SHAPE:-opaque}" <<'PY'
import gzip, hashlib, io, json, os, sys, tarfile
out, layers, folders, shape = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
os.makedirs(out + "/blobs/sha256")
def blob(data):
    digest = hashlib.sha256(data).hexdigest()
    with open(f"{out}/blobs/sha256/{digest}", "wb") as f:
        f.write(data)
    return "sha256:" + digest, len(data)
descriptors, diff_ids = [], []
for layer in range(layers):
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        def add(name, kind, data=b""):
            info = tarfile.TarInfo(name)
            info.type, info.mode, info.size = kind, 0o755 if kind == tarfile.DIRTYPE else 0o644, len(data)
            tar.addfile(info, io.BytesIO(data))
        if shape == "wide":
            for name in range(folders):
                add(f"d/l{layer}-{name}", tarfile.REGTYPE)
            if layer:
                add(f"d/.wh.l{layer - 1}-0", tarfile.REGTYPE)
        else:
            for folder in range(folders):
                add(f"d{folder}", tarfile.DIRTYPE)
                add(f"d{folder}/.wh..wh..opq", tarfile.REGTYPE)
        add(f"layer-{layer}", tarfile.REGTYPE, b"layer %d\n" % layer)
    diff_ids.append("sha256:" + hashlib.sha256(raw.getvalue()).hexdigest())
    digest, size = blob(gzip.compress(raw.getvalue(), mtime=0))
    descriptors.append({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": digest, "size": size})
config = json.dumps({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": diff_ids}}).encode()
config_digest, config_size = blob(config)
manifest = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
    "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config_size},
    "layers": descriptors}).encode()
manifest_digest, manifest_size = blob(manifest)
json.dump({"imageLayoutVersion": "1.0.0"}, open(out + "/oci-layout", "w"))
json.dump({"schemaVersion": 2, "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
    "digest": manifest_digest, "size": manifest_size, "annotations": {"org.opencontainers.image.ref.name": "deep"}}]},
    open(out + "/index.json", "w"))
PY
}
for layers in "$small" "$large"; do
    layout "$work/layout-$layers" "$layers"
    skopeo copy -q --dest-tls-verify=false "oci:$work/layout-$layers:deep" "docker://$registry/deep/l$layers:v1"
    : >"$work/ours-$layers"; : >"$work/peer-$layers"
done
echo "images (${SHAPE:-opaque}): $small and $large layers of $folders entries each, $(du -sh "$work/layout-$large/blobs" | cut -f1) for $large"

TIMEFORMAT='%R %U %S'
# Nothing is deleted until the end: this machine's ext4 has no journal, and for a minute after a
# deletion it skips the freed inodes on every inode it allocates, which taxed the next run's system
# time fourfold (see build.sh).
ours() {  # pull into an empty store
    local layers=$1 run=$2
    { time "$layerctl" pull "$registry/deep/l$layers:v1" --store "$work/store-$layers-$run" >/dev/null 2>&1; } \
        2>>"$work/ours-$layers"
}
peer() {  # copy to an OCI layout and unpack it
    local layers=$1 run=$2
    { time {
        skopeo copy -q --src-tls-verify=false "docker://$registry/deep/l$layers:v1" "oci:$work/peer-$layers-$run:deep"
        umoci unpack --image "$work/peer-$layers-$run:deep" "$work/bundle-$layers-$run" >/dev/null 2>&1
    }; } 2>>"$work/peer-$layers"
}
for run in $(seq "$runs"); do
    for layers in "$small" "$large"; do
        if ((run % 2)); then ours "$layers" "$run"; peer "$layers" "$run"; else peer "$layers" "$run"; ours "$layers" "$run"; fi
    done
done

# column FILE N: the Nth figure of each line (1 wall, 2 user, 3 system; 23: user + system).
column() { awk -v n="$2" '{print (n == 23) ? $2 + $3 : $n}' "$1"; }
spread() { column "$1" 1 | sort -g | awk 'NR == 1 {min = $1} {max = $1} END {printf "%.2f-%.2f", min, max}'; }
wall() { column "$1" 1 | median; }
cpu() { column "$1" 23 | median; }
divide() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f", a / b}'; }
echo
for layers in "$small" "$large"; do
    ours=$work/ours-$layers peer=$work/peer-$layers
    echo "$layers layers: layerctl pull wall median $(wall "$ours" | xargs printf %.2f) s (spread $(spread "$ours") s)," \
        "CPU $(cpu "$ours" | xargs printf %.2f) s; skopeo + umoci wall $(wall "$peer" | xargs printf %.2f) s" \
        "(spread $(spread "$peer") s), CPU $(cpu "$peer" | xargs printf %.2f) s;" \
        "ratio wall $(divide "$(wall "$ours")" "$(wall "$peer")")x, CPU $(divide "$(cpu "$ours")" "$(cpu "$peer")")x"
done
growth() { awk -v a="$($1 "$2-$large")" -v b="$($1 "$2-$small")" -v l="$large" -v s="$small" 'BEGIN {printf "%.2f", (a / l) / (b / s)}'; }
echo "growth of the time a layer, $large layers against $small (1.0 linear, $((large / small)).0 quadratic):" \
    "layerctl wall $(growth wall "$work/ours"), CPU $(growth cpu "$work/ours");" \
    "skopeo + umoci wall $(growth wall "$work/peer"), CPU $(growth cpu "$work/peer")"
