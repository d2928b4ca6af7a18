# Shared by the benchmark scripts: sourced, never run.
# shellcheck shell=bash

# build_layerctl: the release build the benchmarks measure. A source changed while it compiled
# would give a binary of no state anyone can name, so the benchmark stops; the line it prints names
# the sources measured (a digest of Sources/ and Package.swift, the same for the same tree).
build_layerctl() {
    local before after
    before=$(sources_digest)
    swift build -c release --static-swift-stdlib --product layerctl >/dev/null
    after=$(sources_digest)
    if [ "$before" != "$after" ]; then
        echo "benchmark: a source changed while layerctl was built; run again on a settled tree" >&2
        exit 2
    fi
    echo "layerctl built from sources ${after:0:12}"
}
sources_digest() {
    find Sources Package.swift -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum | sha256sum | cut -c1-64
}

# median: the median of the numbers on stdin, one per line.
median() { sort -g | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }

# layer STORE NAME PARENT_KEY SOURCE:DEST... — a hand-made layer whose tree holds copies of the sources.
layer() {
    local store=$1 name=$2 parent=$3
    shift 3
    local key
    key=$(printf '%s|%s|%s' "$name" "$parent" "$*" | sha256sum | cut -c1-64)
    mkdir -p "$store/layers/$key/tree" "$store/refs" "$store/tmp" "$store/locks" "$store/cache"
    for pair in "$@"; do
        local src=${pair%%:*} dest=${pair#*:}
        mkdir -p "$store/layers/$key/tree/$(dirname "$dest")"
        cp -a "$src" "$store/layers/$key/tree/$dest"
    done
    local parent_json=null
    [ -n "$parent" ] && parent_json="\"$parent\""
    cat >"$store/layers/$key/layer.json" <<JSON
{"formatVersion": 1, "key": "$key", "parent": $parent_json, "name": "$name", "specDigest": "$key",
 "added": [], "removed": [], "installed": [], "treeBytes": 0, "fileCount": 0, "treeDigest": "$key",
 "sourceDateEpoch": 0, "buildSeconds": 0, "builtAt": "2026-01-01T00:00:00Z"}
JSON
    echo "$key" >"$store/refs/$name"
    echo "$key"
}


# small_file_stack STORE: input (c) of the benchmarks, about 50,000 small files in three layers:
# l1 /usr/include, l2 /usr/share/[a-l]*, top the rest of /usr/share. Prints top's key.
small_file_stack() {
    local store=$1 d c1 c2
    local share_a=() share_b=()
    for d in /usr/share/*; do
        case ${d##*/} in locale | package-lists) continue ;; [a-l]*) share_a+=("$d:usr/share/${d##*/}") ;; *) share_b+=("$d:usr/share/${d##*/}") ;; esac
    done
    c1=$(layer "$store" l1 "" "/usr/include:usr/include")
    c2=$(layer "$store" l2 "$c1" "${share_a[@]}")
    layer "$store" top "$c2" "${share_b[@]}"
}

# start_registry DIR: Debian's docker-registry on a free port of 127.0.0.1, storing in DIR/registry,
# its pid added to the caller's `pids` (which it kills at exit); sets `registry` to its host:port
# once it answers.
start_registry() {
    local dir=$1 port
    port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    cat >"$dir/registry.yml" <<YAML
version: 0.1
log:
  level: error
storage:
  filesystem:
    rootdirectory: $dir/registry
http:
  addr: 127.0.0.1:$port
YAML
    docker-registry serve "$dir/registry.yml" >"$dir/registry.log" 2>&1 &
    pids+=($!)
    for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done
    # shellcheck disable=SC2034  # read by the script that sourced this
    registry=127.0.0.1:$port
}
