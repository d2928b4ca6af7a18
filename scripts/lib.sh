# Shared by the project's scripts: sourced, never run.
# shellcheck shell=bash

# stop_on_error NAME: any command that fails stops the script with one line that names the script,
# the line and the command, instead of a silent exit under `set -e`.
stop_on_error() {
    set -eE -o pipefail
    # The name goes into the trap's text now; the rest is expanded when the trap runs.
    # shellcheck disable=SC2064
    trap "status=\$?; echo \"$1: line \$LINENO: \\\`\$BASH_COMMAND\\\` failed with status \$status\" >&2; exit \$status" ERR
}

# quiet CMD...: runs CMD with its output kept aside; prints the output only when CMD fails, with
# the command line, and fails with its status.
quiet() {
    local log status=0
    log=$(mktemp)
    "$@" >"$log" 2>&1 || status=$?
    if [ "$status" != 0 ]; then
        echo "failed ($status): $*" >&2
        tail -n 40 "$log" >&2
    fi
    rm -f "$log"
    return "$status"
}
