#!/usr/bin/env bash
# Build benchmarks on the demo stack, with pacman as the peer in the same run.
#
#   sudo Benchmarks/build.sh [RUNS]      (default 5 runs; medians are reported)
#
# (i)   cold build of a base layer vs `pacman --root DIR -Sy` of the same packages from the
#       same repository (both with empty caches), as a ratio
# (ii)  rebuild of the four demo layers when all are cached
# (iii) rebuild after a change to the top layer only, against that layer's own build time
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib.sh
source scripts/lib.sh
stop_on_error build
runs=${1:-5}
[ "$(id -u)" = 0 ] || { echo "build.sh: run as root (the builder needs namespaces)" >&2; exit 2; }
[ -f demo/out/repo/demo/demo.db ] || bash demo/make-repo.sh >/dev/null
swift build -c release --static-swift-stdlib --product layerctl >/dev/null
layerctl=$PWD/.build/release/layerctl
repo=$PWD/demo/out/repo
work=$(mktemp -d /var/tmp/layerctl-bench.XXXXXX)
trap 'rm -rf "$work"' EXIT

now() { date +%s.%N; }
# shellcheck source=Benchmarks/lib.sh
source Benchmarks/lib.sh
packages="filesystem busybox glibc perl nano greeter"
read -r -a package_list <<<"$packages"

# (i) cold base layer against pacman
cat >"$work/base.yaml" <<YAML
from: scratch
arch: x86_64
repos:
  - name: demo
    servers: [$repo/\$repo]
    siglevel: Optional TrustAll
packages: [${packages// /, }]
YAML
cat >"$work/pacman.conf" <<CONF
[options]
Architecture = x86_64
SigLevel = Optional TrustAll
[demo]
Server = file://$repo/\$repo
CONF
: >"$work/ours"; : >"$work/pacman"
for i in $(seq "$runs"); do
    rm -rf "$work/store" "$work/root" "$work/cache"; sync
    t0=$(now); "$layerctl" build "$work/base.yaml" --store "$work/store" >/dev/null 2>&1; t1=$(now)
    echo "$t1 - $t0" | bc -l >>"$work/ours"
    mkdir -p "$work/root/var/lib/pacman" "$work/cache"; sync
    t0=$(now)
    pacman --root "$work/root" --dbpath "$work/root/var/lib/pacman" --cachedir "$work/cache" \
        --config "$work/pacman.conf" --logfile "$work/pacman.log" --noconfirm --noprogressbar -Sy "${package_list[@]}" >/dev/null 2>&1
    t1=$(now)
    echo "$t1 - $t0" | bc -l >>"$work/pacman"
done
ours=$(median <"$work/ours"); theirs=$(median <"$work/pacman")
printf '(i)   cold base layer: layerctl %.3f s, pacman --root -Sy %.3f s, ratio %.2f (target <= 1.10)\n' \
    "$ours" "$theirs" "$(echo "$ours / $theirs" | bc -l)"

# (ii) the four demo layers, all cached
layers="$work/layers"; cp -r layers/demo "$layers"
sed -i "s|servers: \[.*\]|servers: [$repo/\$repo]|" "$layers/base.yaml"
"$layerctl" build "$layers/gaming.yaml" --store "$work/store4" >/dev/null 2>&1
"$layerctl" build "$layers/development.yaml" --store "$work/store4" >/dev/null 2>&1
: >"$work/cached"
for i in $(seq "$runs"); do
    t0=$(now)
    "$layerctl" build "$layers/gaming.yaml" --store "$work/store4" >/dev/null 2>&1
    "$layerctl" build "$layers/development.yaml" --store "$work/store4" >/dev/null 2>&1
    t1=$(now)
    echo "$t1 - $t0" | bc -l >>"$work/cached"
done
printf '(ii)  four cached layers (two builds: gaming, development): %.3f s (target < 0.3 s)\n' "$(median <"$work/cached")"

# (iii) a change to the top layer only
: >"$work/top"; : >"$work/own"
for i in $(seq "$runs"); do
    echo "  - echo change $i > /etc/change" >>"$layers/gaming.yaml"
    t0=$(now); "$layerctl" build "$layers/gaming.yaml" --store "$work/store4" --json >"$work/events" 2>/dev/null; t1=$(now)
    echo "$t1 - $t0" | bc -l >>"$work/top"
    key=$(cat "$work/store4/refs/gaming")
    python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['buildSeconds'])" "$work/store4/layers/$key/layer.json" >>"$work/own"
done
top=$(median <"$work/top"); own=$(median <"$work/own")
printf '(iii) top layer changed: whole build %.3f s, the layer'"'"'s own build %.3f s, overhead %.3f s (target <= 0.3 s)\n' \
    "$top" "$own" "$(echo "$top - $own" | bc -l)"
