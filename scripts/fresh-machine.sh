#!/usr/bin/env bash
# Runs the README's two commands as on a fresh Debian 12 machine, so that what this machine has
# installed since it was made cannot hide a missing step (check-deps.sh checks the commands the
# project runs; this checks everything else, from Swift's own libraries to dpkg's records).
#
#   sudo bash scripts/fresh-machine.sh [--packages FILE] [--keep] [demo|ci|both]   (default: both)
#
# A new Debian 12 tree (debootstrap, minbase), with the archive's updates and security suites, and
# what a new machine has besides: the packages FILE lists (one name a line, or the lines
# `apt<TAB>NAME<TAB>VERSION` of a machine's package list; names the archive lacks are left out),
# else the Debian packages Swift's toolchain needs. Swift itself is bound in read-only from
# /opt/swift, with /opt/swift-packages and /etc/gitconfig where this machine has them (a copy of
# Swift packages that git reads instead of github.com). A clone of this checkout's HEAD goes to
# /root/layerctl in the tree, which is entered with chroot in a mount namespace of its own, its
# folder bound onto itself as arch-chroot does; every mount goes with that namespace. The tree is
# deleted at the end unless --keep (it is in /var/tmp/layerctl-fresh.*). Needs the network to
# Debian's archive; takes a few minutes for the tree and its packages, then as long as the commands.
set -euo pipefail
packages_file="" keep="" what=both
while [ $# -gt 0 ]; do
    case $1 in
        --packages) packages_file=$(realpath -e -- "$2"); shift 2 ;;
        --keep) keep=1; shift ;;
        demo | ci | both) what=$1; shift ;;
        *) echo "usage: fresh-machine.sh [--packages FILE] [--keep] [demo|ci|both]" >&2; exit 2 ;;
    esac
done
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib.sh
source scripts/lib.sh
stop_on_error fresh-machine
[ "$(id -u)" = 0 ] || { echo "fresh-machine: run as root (debootstrap, chroot and mounts)" >&2; exit 2; }
[ -d /opt/swift ] || { echo "fresh-machine: Swift is not in /opt/swift, where a new machine has it" >&2; exit 2; }
mirror=http://deb.debian.org/debian
tree=$(mktemp -d /var/tmp/layerctl-fresh.XXXXXX)
chmod 755 "$tree"  # the tree's /: apt's _apt and the tests' other users go through it
[ -n "$keep" ] || trap 'rm -rf "$tree"' EXIT

echo "fresh-machine: a new Debian 12 tree in $tree"
quiet debootstrap --variant=minbase bookworm "$tree" "$mirror"
cat >"$tree/etc/apt/sources.list" <<SOURCES
deb $mirror bookworm main
deb $mirror bookworm-updates main
deb http://deb.debian.org/debian-security bookworm-security main
SOURCES
if [ -n "$packages_file" ]; then
    awk -F'\t' 'NF == 1 && /^[a-z0-9]/ {print $1} $1 == "apt" {print $2}' "$packages_file" | sed 's/:amd64$//' >"$tree/root/packages"
else
    # What Swift's toolchain needs on Debian 12, as swift.org lists it, and git for its packages.
    printf '%s\n' binutils git gnupg2 libc6-dev libcurl4-openssl-dev libedit2 libgcc-12-dev libpython3-dev \
        libsqlite3-0 libstdc++-12-dev libxml2-dev libncurses-dev libz3-dev pkg-config tzdata unzip zlib1g-dev \
        >"$tree/root/packages"
fi
[ -f /etc/gitconfig ] && cp /etc/gitconfig "$tree/etc/gitconfig"
[ -f /etc/gitignore ] && cp /etc/gitignore "$tree/etc/gitignore"
git clone -q . "$tree/root/layerctl"

# in_tree COMMAND: runs COMMAND with bash as root in the tree, with a clean environment.
in_tree() {
    # shellcheck disable=SC2016  # expanded by the bash in the namespace
    unshare -m --propagation private bash -c '
        tree=$1 command=$2
        mount --bind "$tree" "$tree"
        mount -t proc proc "$tree/proc"
        mount --rbind /sys "$tree/sys"
        mount --rbind /dev "$tree/dev"
        mount -t tmpfs tmpfs "$tree/run"
        mount -t tmpfs tmpfs "$tree/tmp"
        for folder in /opt/swift /opt/swift-packages; do
            [ -d "$folder" ] || continue
            mkdir -p "$tree$folder"
            mount --bind "$folder" "$tree$folder"
            mount -o remount,bind,ro "$tree$folder"
        done
        cp /etc/resolv.conf "$tree/etc/resolv.conf"
        exec chroot "$tree" /usr/bin/env -i HOME=/root TERM=dumb \
            PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin bash -c "$command"
    ' bash "$tree" "$1"
}

echo "fresh-machine: installing $(wc -l <"$tree/root/packages") packages a new machine has"
# shellcheck disable=SC2016  # expanded in the tree
quiet in_tree 'export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    available=$(xargs apt-cache policy </root/packages 2>/dev/null |
        awk "/^[^ ]/ {name = \$1} /Candidate:/ && \$2 != \"(none)\" {print name}" | tr -d :)
    apt-get install -y -qq --no-install-recommends $available'
status=0
if [ "$what" != ci ]; then
    echo "fresh-machine: bash demo/run.sh"
    in_tree 'cd /root/layerctl && bash demo/run.sh' || status=$?
    echo "fresh-machine: bash demo/run.sh ended with status $status"
fi
if [ "$what" != demo ] && [ "$status" = 0 ]; then
    echo "fresh-machine: bash .ci/run"
    in_tree 'cd /root/layerctl && CI=true bash .ci/run' || status=$?
    echo "fresh-machine: bash .ci/run ended with status $status"
fi
exit "$status"
