#!/usr/bin/env bash
# Checks that scripts/install-deps.sh installs every Debian package whose commands the project runs,
# so that what an earlier session installed by hand cannot hide a missing install step.
#
#   bash scripts/check-deps.sh [-v]        (run after install-deps.sh: it asks dpkg who owns each command)
#
# It collects the commands the project runs: in shell files (scripts/, demo/, boot/, Benchmarks/,
# .ci/run), the word at each command position; in Swift files (Sources/, Tests/), absolute paths
# of programs ("/usr/bin/mksquashfs") and the command words of shell scripts in multi-line string
# literals. Each command found on this machine is resolved to its package with `dpkg -S`. A package
# that is neither listed in install-deps.sh, nor pulled in by a listed one (Depends, Pre-Depends),
# nor part of every Debian system (Essential, or Priority required in the archive) is missing: it
# is named with the command and a file that runs it, and the check fails. Commands this machine
# does not have (the Swift toolchain, commands that only run inside a layer or an initramfs) are
# listed with -v.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib.sh
source scripts/lib.sh
stop_on_error check-deps
verbose=${1:-}
# The list to check; a test points it at a copy with a package left out.
install_deps=${LAYERCTL_INSTALL_DEPS:-scripts/install-deps.sh}
# dpkg's database; a test points it at a copy that records an upgraded package.
admindir=${LAYERCTL_DPKG_ADMINDIR:-/var/lib/dpkg}

shell_files=(scripts/*.sh demo/*.sh Benchmarks/*.sh .ci/run boot/layerctl.sh boot/dracut/*/*.sh
    boot/mkinitcpio/hooks/* boot/mkinitcpio/install/* boot/systemd-initrd/layerctl-sysroot)
mapfile -t swift_files < <(find Sources Tests -name '*.swift' | LC_ALL=C sort)

# command_words FILE: "WORD FILE" for the word at each command position of the shell text on stdin.
# Quoted strings and here-documents (data, or scripts for a VM) are left out; so are comments.
command_words() {
    awk -v file="$1" '
        heredoc != "" { if ($0 ~ "^[ \t]*" heredoc "$") heredoc = ""; next }
        {
            line = $0
            if (match(line, /<<-?[ \t]*["\047]?[A-Za-z_]+/)) {
                heredoc = substr(line, RSTART, RLENGTH)
                gsub(/^<<-?[ \t]*["\047]?/, "", heredoc)
            }
            gsub(/"[^"]*"|\047[^\047]*\047/, "_", line)   # quoted strings
            sub(/(^|[ \t])#.*/, "", line)                    # a comment
            gsub(/\$\(|`|\|\||&&|[|;(){}]/, "\n", line)     # command separators
            n = split(line, parts, "\n")
            for (i = 1; i <= n; i++) {
                m = split(parts[i], w, /[ \t]+/)
                for (j = 1; j <= m; j++) {
                    word = w[j]
                    if (word == "" || word ~ /^[A-Za-z_][A-Za-z0-9_]*=/) continue
                    if (word ~ /^(!|then|do|else|elif|if|while|until|exec|command|sudo|env|time|nice|xargs|timeout|-[A-Za-z0-9]+|[0-9]+[smh]?)$/) continue
                    if (word ~ /^(\/usr)?\/s?bin\/[A-Za-z0-9._+-]+$/ || word ~ /^[a-z][A-Za-z0-9._+-]*$/) print word, file
                    break
                }
            }
        }'
}

# Commands that run somewhere else than this machine (in a VM the tests boot, or chrooted in an
# image a test built: fc-cache is the demo repository's fontconfig), or only where their package is
# there by definition: install-deps.sh runs systemctl only when systemd is the init system.
elsewhere=(poweroff reboot systemctl fc-cache)

found=$(mktemp)
trap 'rm -f "$found"' EXIT
for file in "${shell_files[@]}"; do
    # shellcheck disable=SC2094  # reads FILE, appends to another
    [ -f "$file" ] && command_words "$file" <"$file" >>"$found"
done
for file in "${swift_files[@]}"; do
    grep -oE '"(/usr)?/s?bin/[A-Za-z0-9._+-]+"' "$file" | tr -d '"' | sed "s|\$| $file|" >>"$found" || true
    # The lines of the tests' multi-line string literals, which they run as shell scripts (the
    # sources' are help text).
    case $file in Tests/*) awk '/"""/ { inside = !inside; next } inside' "$file" | command_words "$file" >>"$found" ;; esac
done

# Functions the shell files define are not commands.
functions=$(grep -hoE '^[[:space:]]*[A-Za-z_][A-Za-z0-9_]*\(\)' "${shell_files[@]}" | tr -d ' \t()' | sort -u)

# The packages install-deps.sh lists, and everything they depend on.
listed=$(awk '/^packages=\(/ {inside = 1; next} inside && /^\)/ {inside = 0} inside {sub(/#.*/, ""); print}' \
    "$install_deps" | tr -s ' \t' '\n' | sed '/^$/d' | sort -u)
# shellcheck disable=SC2086  # one word per package
closure=$(apt-cache -o Dir::State::status="$admindir/status" depends --recurse --installed --no-recommends \
    --no-suggests --no-conflicts --no-breaks --no-replaces --no-enhances $listed 2>/dev/null |
    grep -E '^[a-z0-9]' | sed 's/:.*//' | sort -u)

# Each command's path on this machine, with the other spellings dpkg may know it by (usr-merge,
# alternatives), then one dpkg -S for them all.
declare -A path_of=() file_of=() owner=() by_path=()
unresolved=()
while read -r word file; do
    name=${word##*/}
    [ -n "${path_of[$name]:-}" ] && continue
    grep -qx "$name" <<<"$functions" && continue
    [[ " ${elsewhere[*]} " == *" $name "* ]] && continue
    case $(type -t "$name" 2>/dev/null || true) in builtin | keyword) continue ;; esac
    path=$([ "${word:0:1}" = / ] && [ -e "$word" ] && echo "$word" || command -v "$name" 2>/dev/null || true)
    if [ -z "$path" ] || [ "${path:0:1}" != / ]; then
        unresolved+=("$name ($file)")
        continue
    fi
    path_of[$name]=$path
    file_of[$name]=$file
done < <(sort -u -k1,1 "$found")
candidates=()
for name in "${!path_of[@]}"; do
    path=${path_of[$name]}
    candidates+=("$path" "$(readlink -f "$path")" "/usr$path" "${path#/usr}")
done
while IFS= read -r line; do
    [[ $line == diversion* ]] && continue
    for path in ${line#*: }; do by_path[${path%,}]=${line%%:*}; done
done < <(dpkg --admindir="$admindir" -S "${candidates[@]}" 2>/dev/null || true)

declare -A required=()
missing=()
for name in "${!path_of[@]}"; do
    path=${path_of[$name]}
    package=""
    for candidate in "$path" "$(readlink -f "$path")" "/usr$path" "${path#/usr}"; do
        package=${by_path[$candidate]:-}
        [ -n "$package" ] && break
    done
    if [ -z "$package" ]; then
        unresolved+=("$name ($path, no Debian package)")
        continue
    fi
    owner[$name]=$package
done
# shellcheck disable=SC2046  # one word per package
while read -r package essential priority; do
    [ "$essential" = yes ] || [ "$priority" = required ] && required[$package]=1
done < <(dpkg-query --admindir="$admindir" -W -f='${Package} ${Essential} ${Priority}\n' \
    $(printf '%s\n' "${owner[@]}" | sort -u) 2>/dev/null || true)
# dpkg records the priority of the package file it unpacked, which for a package upgraded since the
# machine was made can be lower than the archive's (Debian 12's apt 2.6.2 says "important", the
# archive "required"): the archive's word is asked too.
# shellcheck disable=SC2046  # one word per package
while read -r package; do
    required[$package]=1
done < <(apt-cache show $(printf '%s\n' "${owner[@]}" | sort -u) 2>/dev/null |
    awk '/^Package:/ {package = $2} /^Priority: required$/ {print package}' | sort -u)
for name in "${!owner[@]}"; do
    package=${owner[$name]}
    grep -qx "$package" <<<"$closure" && continue
    [ -n "${required[$package]:-}" ] && continue
    missing+=("$package (for $name, run in ${file_of[$name]})")
done

if [ "$verbose" = -v ]; then
    for name in "${!owner[@]}"; do echo "  $name: ${owner[$name]}"; done | sort
    for item in "${unresolved[@]}"; do echo "  not on this machine: $item"; done
fi
if [ ${#missing[@]} -gt 0 ]; then
    echo "check-deps: $install_deps does not install:" >&2
    printf '  %s\n' "${missing[@]}" | sort -u >&2
    exit 1
fi
echo "check-deps: install-deps.sh covers the ${#owner[@]} commands found in ${#shell_files[@]} shell and ${#swift_files[@]} Swift files"
