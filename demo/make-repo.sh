#!/usr/bin/env bash
# Builds the offline demo pacman repository that the demo layers and the tests install from.
#
#   demo/make-repo.sh [OUT]        (default OUT: demo/out beside this script)
#
# OUT/repo/demo/        repository "demo": real packages repackaged from Debian (busybox, glibc,
#                       libxcrypt, zlib, perl, shadow, fontconfig, ttf-dejavu, systemd) and small
#                       packages of our own (filesystem among them)
# OUT/repo-next/demo/   the same repository one upgrade later (game 1.0-1 -> 1.1-1, linux 6.1.0-1 -> 6.2.0-1,
#                       and game-addon, which needs game 1.1-1)
# OUT/later/later/      repository "later": confd 1.1-1 alone, a newer version beside demo's 1.0-1
# OUT/signed/demo/      a signed variant: every package signed by the demo key, plus `rogue`,
#                       signed by a key nobody trusts
# OUT/rogue-db/demo/    the signed variant with its database signed by the untrusted key
# OUT/keyring/          a pacman gpg dir (like /etc/pacman.d/gnupg) that trusts the demo key
#
# Every package and database is made from sorted file lists with fixed owners and mtimes, so the
# unsigned repositories are byte-identical on each run. The signing keys are made once and kept in
# OUT/signer; with the same keys, the signed repository is identical too.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=scripts/lib.sh
source "$here/../scripts/lib.sh"
stop_on_error make-repo
out=$(realpath -m "${1:-$here/out}")
epoch=1700000000            # fixed build date and mtime of everything we pack
packager="layerctl demo <demo@layerctl.invalid>"
export LC_ALL=C TZ=UTC SOURCE_DATE_EPOCH=$epoch

need() { command -v "$1" >/dev/null || { echo "make-repo: $1 is missing (apt-get install $2)" >&2; exit 2; }; }
need bsdtar libarchive-tools
need repo-add pacman-package-manager
need zstd zstd
need gpg gnupg
need dpkg-deb dpkg

work=$(mktemp -d "${TMPDIR:-/tmp}/layerctl-demo.XXXXXX")
trap 'rm -rf "$work"' EXIT
mkdir -p "$out/debs"

# --- Debian packages -------------------------------------------------------------------------
debs=(busybox-static libc6 libcrypt1 zlib1g perl-base perl-modules-5.36 libperl5.36 perl
      passwd login libaudit1 libaudit-common libcap-ng0 libselinux1 libpcre2-8-0 libsemanage2 libsemanage-common
      libsepol2 libbz2-1.0 libpam0g fontconfig fontconfig-config libfontconfig1 libfreetype6 libexpat1
      libpng16-16 libbrotli1 libuuid1 fonts-dejavu-core systemd libsystemd-shared libacl1 libapparmor1 libblkid1
      libcap2 libgcrypt20 libgpg-error0 libip4tc2 libkmod2 liblz4-1 liblzma5 libmount1 libseccomp2 libssl3 libzstd1)
missing=()
for d in "${debs[@]}"; do
    compgen -G "$out/debs/${d}_*.deb" >/dev/null || missing+=("$d")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "make-repo: downloading ${missing[*]} from Debian"
    # apt warns that root downloads unsandboxed; that is expected here and not worth a line.
    (cd "$out/debs" && { apt-get download -q "${missing[@]}" 2>&1 | grep -v '^W: Download is performed unsandboxed' || true; })
fi
deb() { local f; f=$(compgen -G "$out/debs/${1}_*.deb" | sort | tail -n 1); [ -n "$f" ] || { echo "make-repo: no .deb for $1" >&2; exit 2; }; echo "$f"; }

# Unpacks Debian packages into DIR and moves their paths to Arch's usr-merged layout:
# /bin, /sbin, /usr/sbin -> /usr/bin and /lib, /lib64 -> /usr/lib. Debian's docs are dropped.
unpack_debs() {
    local dir=$1; shift
    local raw="$work/raw.$$"
    for name in "$@"; do
        rm -rf "$raw"; mkdir -p "$raw"
        dpkg-deb -x "$(deb "$name")" "$raw"
        for pair in bin:usr/bin sbin:usr/bin usr/sbin:usr/bin lib:usr/lib lib64:usr/lib; do
            local from=${pair%%:*} to=${pair#*:}
            if [ -d "$raw/$from" ] && [ ! -L "$raw/$from" ]; then
                mkdir -p "$raw/$to"
                cp -a "$raw/$from/." "$raw/$to/"
                rm -rf "${raw:?}/$from"
            fi
        done
        rm -rf "$raw/usr/share/doc" "$raw/usr/share/lintian" "$raw/usr/share/man" "$raw/usr/share/initramfs-tools"
        mkdir -p "$dir"
        cp -a "$raw/." "$dir/"
    done
    rm -rf "$raw"
}

# --- packing -----------------------------------------------------------------------------------
# pack DESTDIR PKGDIR: PKGDIR holds the files and a .PKGINFO without size/builddate/packager.
pack() {
    local dest=$1 pkg=$2
    local name ver arch size
    name=$(sed -n 's/^pkgname = //p' "$pkg/.PKGINFO")
    ver=$(sed -n 's/^pkgver = //p' "$pkg/.PKGINFO")
    arch=$(sed -n 's/^arch = //p' "$pkg/.PKGINFO")
    size=$(find "$pkg" -mindepth 1 -not -name '.*' \( -type f -o -type l \) -printf '%s\n' | awk '{s+=$1} END {print s+0}')
    {
        echo "builddate = $epoch"
        echo "packager = $packager"
        echo "size = $size"
    } >>"$pkg/.PKGINFO"
    chown -R 0:0 "$pkg"
    # File capabilities, as .CAPS lists them ("PATH HEX" lines): after chown, which clears them.
    if [ -f "$pkg/.CAPS" ]; then
        while read -r path value; do setfattr -n security.capability -v "$value" "$pkg/$path"; done <"$pkg/.CAPS"
        rm "$pkg/.CAPS"
    fi
    find "$pkg" -exec touch -h -d "@$epoch" {} +
    (
        cd "$pkg"
        # makepkg's order: dot files first, then the tree, each sorted bytewise.
        list() { find . -maxdepth 1 -name '.*' ! -name . ! -name .MTREE -printf '%P\0' | sort -z
                 find . -mindepth 1 ! -path './.*' -printf '%P\0' | sort -z; }
        list | bsdtar -cnf - --format=mtree \
            --options='!all,use-set,type,uid,gid,mode,time,size,md5,sha256,link' \
            --null --files-from - | gzip -c -n -9 >.MTREE
        touch -d "@$epoch" .MTREE
        { printf '.MTREE\0'; list; } | bsdtar --uid 0 --gid 0 --uname root --gname root \
            -cnf - --null --files-from - | zstd -q -T1 -12 -c >"$dest/$name-$ver-$arch.pkg.tar.zst"
    )
    rm -rf "$pkg"
}

# pkginfo DIR name ver arch desc [key=value ...]: starts a package directory.
pkginfo() {
    local dir=$1 name=$2 ver=$3 arch=$4 desc=$5; shift 5
    mkdir -p "$dir"
    {
        echo "pkgname = $name"
        echo "pkgbase = $name"
        echo "pkgver = $ver"
        echo "pkgdesc = $desc"
        echo "url = https://example.invalid/$name"
        echo "arch = $arch"
        echo "license = custom"
        for kv in "$@"; do echo "${kv%%=*} = ${kv#*=}"; done
    } >"$dir/.PKGINFO"
}

# Repacks a database that repo-add made, with fixed mtimes and owners and a sorted member list.
normalise_db() {
    local db=$1 x="$work/db.$$"
    rm -rf "$x"; mkdir -p "$x"
    bsdtar -xf "$db" -C "$x"
    find "$x" -exec touch -h -d "@$epoch" {} +
    (cd "$x" && find . -mindepth 1 -printf '%P\0' | sort -z |
        bsdtar --uid 0 --gid 0 --uname root --gname root -cnf - --null --files-from - | gzip -c -n -9) >"$db.new"
    mv "$db.new" "$db"
    rm -rf "$x"
}

# index DIR [NAME]: the database of repository NAME (default demo) of the packages in DIR.
index() {
    local dir=$1 name=${2:-demo}
    rm -f "$dir/$name".db* "$dir/$name".files*
    (cd "$dir" && quiet repo-add -q "$name.db.tar.gz" ./*.pkg.tar.zst)
    normalise_db "$dir/$name.db.tar.gz"
    normalise_db "$dir/$name.files.tar.gz"
    rm -f "$dir"/*.old
}

# --- the packages ----------------------------------------------------------------------------
build_packages() {
    local dest=$1 game_version=$2 kernel_version=$3 p
    mkdir -p "$dest"

    p="$work/filesystem"; pkginfo "$p" filesystem 2024.11.21-1 any "Base directory layout of the demo system"
    for d in boot dev etc home mnt opt run srv usr/bin usr/lib usr/include usr/local usr/share/man var/cache \
             var/lib/pacman var/local var/log var/opt var/spool var/empty; do mkdir -p "$p/$d"; done
    mkdir -m 0555 "$p/proc" "$p/sys"; mkdir -m 1777 "$p/tmp" "$p/var/tmp"; mkdir -m 0750 "$p/root"
    ln -s usr/bin "$p/bin"; ln -s usr/bin "$p/sbin"; ln -s usr/lib "$p/lib"; ln -s usr/lib "$p/lib64"
    ln -s bin "$p/usr/sbin"; ln -s lib "$p/usr/lib64"; ln -s ../run "$p/var/run"
    printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:Nobody:/:/usr/bin/nologin\n' >"$p/etc/passwd"
    printf 'root:x:0:root\nnobody:x:65534:\n' >"$p/etc/group"
    printf 'NAME="layerctl demo"\nID=layerctl-demo\nID_LIKE=arch\nPRETTY_NAME="layerctl demo"\n' >"$p/usr/lib/os-release"
    ln -s ../usr/lib/os-release "$p/etc/os-release"
    printf '/usr/lib\n/usr/lib/x86_64-linux-gnu\n' >"$p/etc/ld.so.conf"
    chmod 0755 "$p"; pack "$dest" "$p"

    p="$work/busybox"; pkginfo "$p" busybox 1.35.0-1 x86_64 "Static busybox from Debian, with its applets linked" \
        provides=sh
    unpack_debs "$p" busybox-static
    for applet in $("$p/usr/bin/busybox" --list | sort); do
        [ "$applet" = busybox ] || [ -e "$p/usr/bin/$applet" ] || ln -s busybox "$p/usr/bin/$applet"
    done
    pack "$dest" "$p"

    p="$work/glibc"; pkginfo "$p" glibc 2.36-1 x86_64 "GNU C library from Debian" depend=filesystem
    unpack_debs "$p" libc6
    ln -sf x86_64-linux-gnu/ld-linux-x86-64.so.2 "$p/usr/lib/ld-linux-x86-64.so.2"
    pack "$dest" "$p"

    p="$work/libxcrypt"; pkginfo "$p" libxcrypt 4.4.33-1 x86_64 "Password hashing library from Debian" depend=glibc
    unpack_debs "$p" libcrypt1; pack "$dest" "$p"

    p="$work/zlib"; pkginfo "$p" zlib 1:1.2.13-1 x86_64 "Compression library from Debian" depend=glibc
    unpack_debs "$p" zlib1g; pack "$dest" "$p"

    p="$work/perl"; pkginfo "$p" perl 5.36.0-1 x86_64 "Perl from Debian: interpreter and thousands of modules" \
        depend=glibc depend=libxcrypt depend=zlib
    unpack_debs "$p" perl-base perl-modules-5.36 libperl5.36 perl
    pack "$dest" "$p"

    # useradd, usermod, groupadd and chpasswd, as Arch's shadow has them; not passwd, which is
    # busybox's here, and /etc/login.defs alone of Debian's login (busybox has login and su).
    p="$work/shadow"; pkginfo "$p" shadow 4.13-1 x86_64 "Account tools from Debian" \
        depend=glibc depend=libxcrypt
    unpack_debs "$p" passwd libaudit1 libaudit-common libcap-ng0 libselinux1 libpcre2-8-0 libsemanage2 \
        libsemanage-common libsepol2 libbz2-1.0 libpam0g
    unpack_debs "$work/login" login; mkdir -p "$p/etc"; cp "$work/login/etc/login.defs" "$p/etc/"; rm -rf "$work/login"
    rm "$p/usr/bin/passwd" "$p/etc/pam.d/passwd"
    pack "$dest" "$p"

    # Small packages of our own.
    p="$work/demo-data"; pkginfo "$p" demo-data 1.0-1 any "End of the demo dependency chain"
    mkdir -p "$p/usr/share/demo"; echo "demo data 1.0" >"$p/usr/share/demo/data.txt"; pack "$dest" "$p"

    p="$work/demo-lib"; pkginfo "$p" demo-lib 1.0-1 any "Middle of the demo dependency chain" depend=demo-data
    mkdir -p "$p/usr/lib/demo"; echo "demo lib 1.0" >"$p/usr/lib/demo/lib.txt"; pack "$dest" "$p"

    p="$work/demo-app"; pkginfo "$p" demo-app 1.0-1 any "Top of the demo dependency chain" depend=demo-lib depend=sh
    mkdir -p "$p/usr/bin"; printf '#!/bin/sh\ncat /usr/share/demo/data.txt /usr/lib/demo/lib.txt\n' >"$p/usr/bin/demo-app"
    chmod 0755 "$p/usr/bin/demo-app"; pack "$dest" "$p"

    p="$work/greeter"; pkginfo "$p" greeter 1.0-1 any "Writes /etc/greeter.installed from its post_install" depend=sh
    mkdir -p "$p/usr/share/greeter"; echo hello >"$p/usr/share/greeter/greeting"
    # The scriptlet's $1 is for pacman's shell to expand, not this one.
    # shellcheck disable=SC2016
    printf 'post_install() {\n\techo "greeter $1 installed" >/etc/greeter.installed\n}\n' >"$p/.INSTALL"
    pack "$dest" "$p"

    # Records what its scriptlet inherits: the environment and the open descriptors (tests check
    # that nothing of the caller of layerctl gets in).
    p="$work/env-probe"; pkginfo "$p" env-probe 1.0-1 any "Records its scriptlet's environment, descriptors and confinement" depend=sh
    mkdir -p "$p/usr/share/env-probe"; echo probe >"$p/usr/share/env-probe/README"
    printf '%s\n' 'post_install() {' \
        '	export -p >/etc/env-probe.environment' \
        '	ls /proc/self/fd >/etc/env-probe.fds' \
        '	grep -E "^(CapBnd|NoNewPrivs|Seccomp):" /proc/self/status >/etc/env-probe.status' \
        '	(echo 48 >/proc/sys/fs/lease-break-time) 2>/etc/env-probe.escape' \
        '	true' \
        '}' >"$p/.INSTALL"
    pack "$dest" "$p"

    # Makes what Arch systems make anew on every install (systemd's machine id and random seed,
    # ldconfig's aux-cache, sshd's host keys, pacman-key's private key, a log), from random bytes,
    # as their real makers do; ships a log of its own, which stays (tests of the normaliser).
    p="$work/machine-state"; pkginfo "$p" machine-state 1.0-1 any "Makes per-machine state from its post_install" depend=sh
    mkdir -p "$p/var/log/machine-state"; echo "shipped by the package" >"$p/var/log/machine-state/kept.log"
    # The scriptlet's $(...) is for pacman's shell to expand, not this one.
    # shellcheck disable=SC2016
    printf '%s\n' 'post_install() {' \
        '	mkdir -p /var/lib/systemd /var/cache/ldconfig /etc/ssh /etc/pacman.d/gnupg/private-keys-v1.d' \
        '	head -c 16 /dev/urandom | od -An -tx1 | tr -d " \n" >/etc/machine-id' \
        '	head -c 512 /dev/urandom >/var/lib/systemd/random-seed' \
        '	head -c 64 /dev/urandom >/var/cache/ldconfig/aux-cache' \
        '	head -c 64 /dev/urandom >/etc/ssh/ssh_host_ed25519_key' \
        '	head -c 32 /dev/urandom >/etc/ssh/ssh_host_ed25519_key.pub' \
        '	head -c 64 /dev/urandom >"/etc/pacman.d/gnupg/private-keys-v1.d/$(head -c 8 /dev/urandom | od -An -tx1 | tr -d " \n").key"' \
        '	head -c 64 /dev/urandom >/etc/pacman.d/gnupg/pubring.kbx' \
        '	date >/var/log/machine-state.log' \
        '}' >"$p/.INSTALL"
    pack "$dest" "$p"

    p="$work/broken-scriptlet"; pkginfo "$p" broken-scriptlet 1.0-1 any "Its post_install fails on purpose" depend=sh
    mkdir -p "$p/usr/share/broken"; echo broken >"$p/usr/share/broken/README"
    printf 'post_install() {\n\techo "broken-scriptlet: failing on purpose" >&2\n\treturn 3\n}\n' >"$p/.INSTALL"
    pack "$dest" "$p"

    # 12 MB of scriptlet output, which libalpm logs line by line: a build's log is cut before it
    # goes into the store's pacman.log.
    p="$work/chatty-scriptlet"; pkginfo "$p" chatty-scriptlet 1.0-1 any "Its post_install prints 12 MB" depend=sh
    mkdir -p "$p/usr/share/chatty"; echo chatty >"$p/usr/share/chatty/README"
    # shellcheck disable=SC2016
    printf 'post_install() {\n\ti=0\n\twhile [ $i -lt 200000 ]; do\n\t\techo "chatty-scriptlet line $i of 200000, to fill a log"\n\t\ti=$((i + 1))\n\tdone\n}\n' >"$p/.INSTALL"
    pack "$dest" "$p"
    # Escape sequences, a C1 control, a tab and a carriage return that would hide the line's start.
    p="$work/escape-scriptlet"; pkginfo "$p" escape-scriptlet 1.0-1 any "Its post_install prints escape sequences" depend=sh
    mkdir -p "$p/usr/share/escape"; echo escape >"$p/usr/share/escape/README"
    printf 'post_install() {\n\tprintf "hidden start\\rescape-scriptlet: \\033]0;TITLE\\007\\033[2J\\302\\233c\\tend\\r\\n"\n}\n' >"$p/.INSTALL"
    pack "$dest" "$p"

    # libalpm hooks, as Arch packages ship them: one that records, for every transaction that
    # installs, upgrades or removes a file under /usr/share/hooked, the files it was given
    # (NeedsTargets) in /var/lib/hook-recorder.log (not /var/log, which the builder empties of what
    # no package owns); `hooked` is such a file. `hook-guard` ships a pre-transaction hook with
    # AbortOnFail that refuses `guarded`, and a post-transaction hook that fails on `hooked`.
    p="$work/hook-recorder"; pkginfo "$p" hook-recorder 1.0-1 any "Ships a libalpm hook that records its targets" depend=sh
    mkdir -p "$p/usr/share/libalpm/hooks" "$p/usr/bin"
    printf '%s\n' '[Trigger]' 'Type = Path' 'Operation = Install' 'Operation = Upgrade' 'Operation = Remove' \
        'Target = usr/share/hooked/*' '' '[Action]' 'Description = Recording the hooked files...' 'When = PostTransaction' \
        'Exec = /usr/bin/hook-recorder' 'NeedsTargets' >"$p/usr/share/libalpm/hooks/50-hook-recorder.hook"
    printf '%s\n' '#!/bin/sh' '{ echo "run:"; cat; } >>/var/lib/hook-recorder.log' 'echo "hook-recorder: recorded"' \
        >"$p/usr/bin/hook-recorder"
    chmod 0755 "$p/usr/bin/hook-recorder"; pack "$dest" "$p"
    p="$work/hooked"; pkginfo "$p" hooked 1.0-1 any "A file that hook-recorder's hook records; scriptlets on removal"
    mkdir -p "$p/usr/share/hooked"; echo hooked >"$p/usr/share/hooked/hooked.conf"
    printf '%s\n' 'pre_remove() {' '	echo "hooked: pre_remove"' '}' 'post_remove() {' \
        '	echo "hooked: post_remove" >/var/lib/hooked.removed' '}' >"$p/.INSTALL"
    pack "$dest" "$p"
    p="$work/hook-guard"; pkginfo "$p" hook-guard 1.0-1 any "Ships a hook that refuses guarded and one that fails" depend=sh
    mkdir -p "$p/usr/share/libalpm/hooks"
    printf '%s\n' '[Trigger]' 'Type = Package' 'Operation = Install' 'Target = guarded' '' '[Action]' \
        'Description = Refusing guarded...' 'When = PreTransaction' \
        'Exec = /bin/sh -c "echo hook-guard: refusing guarded; exit 1"' 'AbortOnFail' \
        >"$p/usr/share/libalpm/hooks/10-hook-guard.hook"
    printf '%s\n' '[Trigger]' 'Type = Path' 'Operation = Install' 'Target = usr/share/hooked/*' '' '[Action]' \
        'Description = Complaining about hooked...' 'When = PostTransaction' \
        'Exec = /bin/sh -c "echo hook-guard: complaining; exit 2"' >"$p/usr/share/libalpm/hooks/60-hook-guard.hook"
    pack "$dest" "$p"
    p="$work/guarded"; pkginfo "$p" guarded 1.0-1 any "What hook-guard refuses"
    mkdir -p "$p/usr/share/guarded"; echo guarded >"$p/usr/share/guarded/README"; pack "$dest" "$p"

    # Fonts as Arch has them: fontconfig ships a hook that runs `fc-cache -s` after a transaction
    # that changes /usr/share/fonts, which makes a cache of each font folder in /var/cache/fontconfig.
    p="$work/fontconfig"; pkginfo "$p" fontconfig 2.14.1-1 x86_64 "Font configuration and fc-cache from Debian" \
        depend=glibc depend=zlib
    unpack_debs "$p" fontconfig fontconfig-config libfontconfig1 libfreetype6 libexpat1 libpng16-16 libbrotli1 libuuid1
    mkdir -p "$p/usr/share/libalpm/hooks" "$p/var/cache/fontconfig"
    printf '%s\n' '[Trigger]' 'Type = Path' 'Operation = Install' 'Operation = Upgrade' 'Operation = Remove' \
        'Target = usr/share/fonts/*' '' '[Action]' 'Description = Updating the font cache...' 'When = PostTransaction' \
        'Exec = /usr/bin/fc-cache -s' >"$p/usr/share/libalpm/hooks/fontconfig.hook"
    pack "$dest" "$p"
    p="$work/ttf-dejavu"; pkginfo "$p" ttf-dejavu 2.37-1 any "DejaVu fonts from Debian" depend=fontconfig
    unpack_debs "$p" fonts-dejavu-core; pack "$dest" "$p"

    # systemd from Debian, its manager and tools with the libraries shadow does not hold; like Arch's,
    # its install scriptlet gives the machine an id, which the builder takes out of the layer.
    p="$work/systemd"; pkginfo "$p" systemd 252-1 x86_64 "systemd from Debian: the manager, its units and tools" \
        depend=glibc depend=shadow
    unpack_debs "$p" systemd libsystemd-shared libacl1 libapparmor1 libblkid1 libcap2 libgcrypt20 libgpg-error0 \
        libip4tc2 libkmod2 liblz4-1 liblzma5 libmount1 libseccomp2 libssl3 libzstd1
    printf '%s\n' 'post_install() {' '	systemd-machine-id-setup' '}' >"$p/.INSTALL"
    # As Arch's systemd does, a hook makes the accounts each package's sysusers.d names.
    mkdir -p "$p/usr/share/libalpm/hooks"
    printf '%s\n' '[Trigger]' 'Type = Path' 'Operation = Install' 'Operation = Upgrade' \
        'Target = usr/lib/sysusers.d/*.conf' '' '[Action]' 'Description = Creating system user accounts...' \
        'When = PostTransaction' 'Exec = /usr/bin/systemd-sysusers' >"$p/usr/share/libalpm/hooks/30-systemd-sysusers.hook"
    pack "$dest" "$p"

    # A program with a file capability, as iputils' ping has cap_net_raw: bsdtar keeps it in the
    # package (SCHILY.xattr.security.capability), libalpm restores it.
    p="$work/capped"; pkginfo "$p" capped 1.0-1 any "A program with cap_net_raw=ep, as ping has" depend=sh
    mkdir -p "$p/usr/bin"; printf '#!/bin/sh\necho capped\n' >"$p/usr/bin/capped"; chmod 0755 "$p/usr/bin/capped"
    # A version 2 capability: magic and effective, permitted cap_net_raw (bit 13), no inheritable.
    echo "usr/bin/capped 0x0100000200200000000000000000000000000000" >"$p/.CAPS"
    pack "$dest" "$p"

    # A package group, as Arch's base-devel or xorg: a layer that asks for demo-tools gets its members.
    for tool in tool-a tool-b; do
        p="$work/$tool"; pkginfo "$p" "$tool" 1.0-1 any "A member of the demo-tools group" group=demo-tools
        mkdir -p "$p/usr/share/tools"; echo "$tool" >"$p/usr/share/tools/$tool"; pack "$dest" "$p"
    done

    p="$work/conflict-a"; pkginfo "$p" conflict-a 1.0-1 any "Conflicts with conflict-b" conflict=conflict-b
    mkdir -p "$p/usr/share/conflict"; echo a >"$p/usr/share/conflict/a"; pack "$dest" "$p"
    p="$work/conflict-b"; pkginfo "$p" conflict-b 1.0-1 any "Conflicts with conflict-a" conflict=conflict-a
    mkdir -p "$p/usr/share/conflict"; echo b >"$p/usr/share/conflict/b"; pack "$dest" "$p"

    p="$work/oldtool"; pkginfo "$p" oldtool 1.0-1 any "The tool newtool replaces"
    mkdir -p "$p/usr/share/oldtool"; echo old >"$p/usr/share/oldtool/VERSION"; pack "$dest" "$p"
    p="$work/newtool"; pkginfo "$p" newtool 2.0-1 any "Replaces oldtool" replaces=oldtool conflict=oldtool provides=oldtool
    mkdir -p "$p/usr/share/newtool"; echo new >"$p/usr/share/newtool/VERSION"; pack "$dest" "$p"
    # A virtual dependency with two providers, as Steam's lib32-vulkan-driver: pacman asks which one
    # and takes the first (driver-a) unless a target of the same transaction provides it.
    for driver in driver-a driver-b; do
        p="$work/$driver"; pkginfo "$p" "$driver" 1.0-1 any "Provides demo-driver" provides=demo-driver
        mkdir -p "$p/usr/share/drivers"; echo "$driver" >"$p/usr/share/drivers/$driver"; pack "$dest" "$p"
    done
    p="$work/driven"; pkginfo "$p" driven 1.0-1 any "Needs some demo-driver" depend=demo-driver
    mkdir -p "$p/usr/share/driven"; echo driven >"$p/usr/share/driven/README"; pack "$dest" "$p"

    # A package with a file of tool-a's, as two packages of different sources can clash.
    p="$work/clobber"; pkginfo "$p" clobber 1.0-1 any "Holds a file that tool-a holds"
    mkdir -p "$p/usr/share/tools"; echo clobbered >"$p/usr/share/tools/tool-a"; pack "$dest" "$p"

    # A package Arch renamed, as exa became eza: the old name is in no repository, and the new
    # package says it replaces it.
    p="$work/newname"; pkginfo "$p" newname 1.0-1 any "The new name of oldname" replaces=oldname
    mkdir -p "$p/usr/share/newname"; echo new >"$p/usr/share/newname/README"; pack "$dest" "$p"

    # Needs oldtool, as libvirt needs iptables: newtool, which provides it, may take its place.
    p="$work/oldtool-user"; pkginfo "$p" oldtool-user 1.0-1 any "Needs oldtool" depend=oldtool
    mkdir -p "$p/usr/share/oldtool-user"; echo user >"$p/usr/share/oldtool-user/README"; pack "$dest" "$p"

    p="$work/nano"; pkginfo "$p" nano 7.2-1 any "A stand-in editor that the gaming layer removes" depend=sh
    mkdir -p "$p/usr/bin" "$p/usr/share/nano"; printf '#!/bin/sh\necho "nano (demo) 7.2"\n' >"$p/usr/bin/nano"
    chmod 0755 "$p/usr/bin/nano"; echo 'set autoindent' >"$p/usr/share/nano/nanorc"; pack "$dest" "$p"

    p="$work/nvidia-utils"; pkginfo "$p" nvidia-utils 550.0-1 x86_64 "A stand-in for the NVIDIA driver's user space"
    mkdir -p "$p/usr/lib/nvidia" "$p/usr/lib/modprobe.d"; echo "stand-in" >"$p/usr/lib/nvidia/README"
    echo "blacklist nouveau" >"$p/usr/lib/modprobe.d/nvidia-utils.conf"; pack "$dest" "$p"

    p="$work/game"; pkginfo "$p" game "$game_version" any "A stand-in game that the repository upgrades" depend=sh
    mkdir -p "$p/usr/bin" "$p/usr/share/game"
    printf '#!/bin/sh\necho "game %s"\n' "$game_version" >"$p/usr/bin/game"; chmod 0755 "$p/usr/bin/game"
    head -c 65536 /dev/zero | tr '\0' 'g' >"$p/usr/share/game/level1.dat"; pack "$dest" "$p"

    # A daemon with a configuration file in its backup array, as sshd_config is in openssh's: pacman
    # keeps such a file when it was changed, and puts the package's beside it (.pacnew, .pacsave).
    p="$work/confd"; pkginfo "$p" confd "$game_version" any "A stand-in daemon whose configuration pacman keeps" \
        backup=etc/confd.conf "optdepend=nano: to edit its configuration"
    mkdir -p "$p/etc"; printf '# confd %s defaults\nlisten = 127.0.0.1\n' "$game_version" >"$p/etc/confd.conf"
    pack "$dest" "$p"

    # Stand-ins for `boot:` tests: a kernel package laid out as Arch's (no real kernel in it), and an
    # initramfs generator that records every run: the kernel, the HOOKS line, and whether layerctl's
    # hook files are in place.
    local kver=${kernel_version%-*}-demo
    p="$work/linux"; rm -rf "$p"; pkginfo "$p" linux "$kernel_version" x86_64 "A stand-in kernel package: modules folder, vmlinuz, pkgbase"
    mkdir -p "$p/usr/lib/modules/$kver"; echo "stand-in kernel $kver" >"$p/usr/lib/modules/$kver/vmlinuz"
    echo linux >"$p/usr/lib/modules/$kver/pkgbase"; pack "$dest" "$p"

    p="$work/mkinitcpio"; pkginfo "$p" mkinitcpio 39-1 any "A stand-in initramfs generator that records how it ran" depend=sh
    mkdir -p "$p/usr/bin" "$p/etc"
    printf 'MODULES=()\nBINARIES=()\nFILES=()\nHOOKS=(base udev modconf block filesystems fsck)\n' >"$p/etc/mkinitcpio.conf"
    cat >"$p/usr/bin/mkinitcpio" <<'STANDIN'
#!/bin/sh
# Stand-in mkinitcpio: records the run in /var/lib/mkinitcpio-runs.log (not in /var/log, which the
# builder empties of what no package owns) and writes it as the image.
out='' kver=''
while [ $# -gt 0 ]; do
    case $1 in -g) out=$2; shift ;; -k) kver=$2; shift ;; esac
    shift
done
hook=no
[ -f /usr/lib/initcpio/hooks/layerctl ] && [ -f /usr/lib/initcpio/install/layerctl ] && [ -f /usr/lib/layerctl/layerctl.sh ] && hook=yes
line="kernel=$kver $(grep '^HOOKS=' /etc/mkinitcpio.conf) layerctl-hook=$hook"
mkdir -p /var/lib
echo "$line" >>/var/lib/mkinitcpio-runs.log
[ -z "$out" ] || echo "$line" >"$out"
STANDIN
    chmod 0755 "$p/usr/bin/mkinitcpio"
    # As Arch's mkinitcpio, a libalpm hook that makes the initramfs when a kernel is installed or
    # upgraded (and when an initcpio hook or firmware changes): it copies the kernel to /boot as
    # vmlinuz-PKGBASE and runs the generator for it. layerctl's `boot:` masks it, since its boot step
    # makes the initramfs once, with layerctl's hook in place.
    mkdir -p "$p/usr/share/libalpm/hooks" "$p/usr/share/libalpm/scripts"
    printf '%s\n' '[Trigger]' 'Type = Path' 'Operation = Install' 'Operation = Upgrade' \
        'Target = usr/lib/modules/*/vmlinuz' 'Target = usr/lib/initcpio/*' 'Target = usr/lib/firmware/*' '' \
        '[Action]' 'Description = Updating linux initcpios...' 'When = PostTransaction' \
        'Exec = /usr/share/libalpm/scripts/mkinitcpio-install' 'NeedsTargets' \
        >"$p/usr/share/libalpm/hooks/90-mkinitcpio-install.hook"
    cat >"$p/usr/share/libalpm/scripts/mkinitcpio-install" <<'STANDIN'
#!/bin/sh
# Stand-in of Arch's mkinitcpio install script: the hook's targets come on stdin.
while read -r target; do
    case $target in usr/lib/modules/*/vmlinuz) ;; *) continue ;; esac
    folder=/${target%/vmlinuz}
    read -r base <"$folder/pkgbase" || continue
    mkdir -p /boot
    cp "$folder/vmlinuz" "/boot/vmlinuz-$base"
    /usr/bin/mkinitcpio -k "${folder##*/}" -g "/boot/initramfs-$base.img"
done
STANDIN
    chmod 0755 "$p/usr/share/libalpm/scripts/mkinitcpio-install"; pack "$dest" "$p"
}

echo "make-repo: packing into $out"
rm -rf "$out/repo" "$out/repo-next" "$out/later" "$out/signed" "$out/rogue-db" "$out/keyring"
build_packages "$out/repo/demo" 1.0-1 6.1.0-1
index "$out/repo/demo"

mkdir -p "$out/repo-next/demo"
cp -a "$out/repo/demo/." "$out/repo-next/demo/"
rm -f "$out/repo-next/demo/game-"* "$out/repo-next/demo/linux-"*
mkdir -p "$work/next"; (build_packages "$work/next" 1.1-1 6.2.0-1)
cp "$work/next/game-"* "$work/next/linux-"* "$out/repo-next/demo/"
# New in the upgrade: an add-on that needs the new game, as a new package needs new libraries.
p="$work/game-addon"; pkginfo "$p" game-addon 1.1-1 any "Needs game 1.1 or later" "depend=game>=1.1-1"
mkdir -p "$p/usr/share/game-addon"; echo addon >"$p/usr/share/game-addon/README"; pack "$out/repo-next/demo" "$p"
index "$out/repo-next/demo"

# A second repository that holds a newer confd than demo's, for a layer that installs it from there
# (`later/confd`) over one that has demo's: an upgrade without moving demo.
mkdir -p "$out/later/later"
cp "$work/next/confd-"* "$out/later/later/"
index "$out/later/later" later

# --- signing -----------------------------------------------------------------------------------
signer="$out/signer"
gpgq() { gpg --homedir "$1" --batch --quiet --no-tty --pinentry-mode loopback --passphrase '' "${@:2}"; }
make_key() { # homedir uid
    [ -s "$1/fpr" ] && return 0
    mkdir -p "$1" && chmod 0700 "$1"
    gpgq "$1" --faked-system-time "$epoch!" --quick-gen-key "$2" ed25519 sign never 2>/dev/null
    gpgq "$1" --list-keys --with-colons | awk -F: '/^fpr/ {print $10; exit}' >"$1/fpr"
}
make_key "$signer/trusted" "layerctl demo packager <demo@layerctl.invalid>"
make_key "$signer/rogue" "nobody trusts this key <rogue@layerctl.invalid>"

sign() { gpgq "$1" --faked-system-time "$epoch!" --detach-sign --no-armor -o "$2.sig" "$2" 2>/dev/null; }
mkdir -p "$out/signed/demo"
cp "$out/repo/demo/"*.pkg.tar.zst "$out/signed/demo/"
p="$work/rogue"; pkginfo "$p" rogue 1.0-1 any "Signed by a key that is not in the keyring"
mkdir -p "$p/usr/share/rogue"; echo rogue >"$p/usr/share/rogue/README"; pack "$out/signed/demo" "$p"
for f in "$out/signed/demo/"*.pkg.tar.zst; do
    case $(basename "$f") in rogue-*) sign "$signer/rogue" "$f" ;; *) sign "$signer/trusted" "$f" ;; esac
done
index "$out/signed/demo"
mkdir -p "$out/rogue-db"
cp -a "$out/signed/demo" "$out/rogue-db/demo"
sign "$signer/rogue" "$out/rogue-db/demo/demo.db.tar.gz"
ln -s demo.db.tar.gz.sig "$out/rogue-db/demo/demo.db.sig"

# The keyring pacman reads: the demo key, trusted fully, and nothing else.
mkdir -p "$out/keyring" && chmod 0700 "$out/keyring"
touch "$out/keyring/pubring.gpg"   # the keyring format pacman-key makes, and libalpm looks for
gpgq "$signer/trusted" --export >"$work/trusted.gpg"
gpgq "$out/keyring" --import "$work/trusted.gpg" 2>/dev/null
echo "$(cat "$signer/trusted/fpr"):6:" | gpgq "$out/keyring" --import-ownertrust 2>/dev/null
gpgconf --homedir "$out/keyring" --kill all 2>/dev/null || true
for h in "$signer/trusted" "$signer/rogue"; do gpgconf --homedir "$h" --kill all 2>/dev/null || true; done

echo "make-repo: done: $(find "$out/repo/demo" -name '*.pkg.tar.zst' | wc -l) packages in $out/repo/demo"
