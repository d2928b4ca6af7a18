# shellcheck shell=sh
# layerctl's boot logic, shared by the mkinitcpio hook and the dracut module: it mounts a layerctl
# image read-only with a tmpfs overlay on top as the new root. POSIX sh; runs under busybox ash,
# dash and bash. Installed as /usr/lib/layerctl/layerctl.sh and sourced, never run.
#
# Kernel command line (see the README's "Booting" section):
#   layerctl.image=PATH|DEVICE   the image: a file on the image device, or a block device
#                                (/dev/…, UUID=, LABEL=, PARTUUID=) that is itself a squashfs
#   layerctl.device=DEVICE       the device holding the image file (/dev/…, UUID=, LABEL=, PARTUUID=);
#                                root= when absent
#   layerctl.overlay=tmpfs       what takes the writes: a tmpfs (the only kind there is for now)
#   layerctl.size=SIZE           size of the tmpfs that takes the writes (tmpfs's size=; default 50%)
#   layerctl.verify=sha256:HEX   check the image before it is mounted
#   layerctl.toram=1             copy the image to RAM first, so the device can go away
#   layerctl.timeout=SECONDS     how long to wait for a device (default 30)
#
# Mounts, all kept after switch_root under /run/layerctl:
#   device/  the image device (read-only; unmounted again with toram=1)
#   ram/     the RAM copy of the image (toram=1 only)
#   image/   the squashfs, read-only
#   rw/      the tmpfs: upper/ holds what changed this boot, work/ is overlayfs's
# and /run/layerctl/boot.env records what was booted, for `layerctl changes` and `layerctl staged`.
#
# Every failure prints one line, "layerctl: WHAT failed: WHY", undoes its mounts and returns 1;
# the initramfs flavour then drops to its emergency shell. (mkinitcpio's hook prints the line
# itself, after the emergency hooks: LAYERCTL_DEFER_FAILURE=1 and LAYERCTL_FAILURE.)

LAYERCTL_RUN=/run/layerctl

# Reads layerctl's words (and root=, init=) from /proc/cmdline into LAYERCTL_* variables.
layerctl_cmdline() {
    LAYERCTL_IMAGE='' LAYERCTL_DEVICE='' LAYERCTL_SIZE=50% LAYERCTL_VERIFY='' LAYERCTL_TORAM=0
    LAYERCTL_TIMEOUT=30 LAYERCTL_ROOT='' LAYERCTL_INIT=/sbin/init LAYERCTL_OVERLAY=tmpfs
    LAYERCTL_DEVICE_NODE=''
    read -r _layerctl_line </proc/cmdline || true
    set -f
    # Word splitting of the command line is the point here.
    # shellcheck disable=SC2086
    set -- $_layerctl_line
    set +f
    for _layerctl_word in "$@"; do
        case $_layerctl_word in
        layerctl.image=*) LAYERCTL_IMAGE=${_layerctl_word#*=} ;;
        layerctl.device=*) LAYERCTL_DEVICE=${_layerctl_word#*=} ;;
        layerctl.size=*) LAYERCTL_SIZE=${_layerctl_word#*=} ;;
        layerctl.overlay=*) LAYERCTL_OVERLAY=${_layerctl_word#*=} ;;
        layerctl.verify=*) LAYERCTL_VERIFY=${_layerctl_word#*=} ;;
        layerctl.toram=*) LAYERCTL_TORAM=${_layerctl_word#*=} ;;
        layerctl.toram) LAYERCTL_TORAM=1 ;;
        layerctl.timeout=*) LAYERCTL_TIMEOUT=${_layerctl_word#*=} ;;
        root=*) LAYERCTL_ROOT=${_layerctl_word#*=} ;;
        init=*) LAYERCTL_INIT=${_layerctl_word#*=} ;;
        esac
    done
    case $LAYERCTL_TORAM in 1 | y | yes | true) LAYERCTL_TORAM=1 ;; *) LAYERCTL_TORAM=0 ;; esac
    [ -n "$LAYERCTL_DEVICE" ] || LAYERCTL_DEVICE=$LAYERCTL_ROOT
}

# Prints the failure (unless the flavour prints it itself: LAYERCTL_DEFER_FAILURE=1), undoes this
# boot's mounts and returns 1.
layerctl_fail() {
    [ "${LAYERCTL_DEFER_FAILURE:-0}" = 1 ] || echo "layerctl: $*" >&2
    # Read by the flavour's hook, for its emergency shell.
    # shellcheck disable=SC2034
    LAYERCTL_FAILURE=$*
    layerctl_unmount
    return 1
}

layerctl_unmount() {
    for _layerctl_dir in rw image ram device; do
        if layerctl_is_mounted "$LAYERCTL_RUN/$_layerctl_dir"; then
            umount "$LAYERCTL_RUN/$_layerctl_dir" 2>/dev/null || umount -l "$LAYERCTL_RUN/$_layerctl_dir" 2>/dev/null
        fi
    done
    return 0
}

layerctl_is_mounted() {
    while read -r _ _layerctl_point _; do
        [ "$_layerctl_point" = "$1" ] && return 0
    done </proc/mounts
    return 1
}

# Prints the device node for /dev/…, UUID=, LABEL= or PARTUUID=, or returns 1 when there is none yet.
layerctl_find_device() {
    case $1 in
    /dev/*)
        [ -b "$1" ] && echo "$1" && return 0
        return 1
        ;;
    UUID=* | LABEL=* | PARTUUID=*) ;;
    *) return 2 ;;
    esac
    _layerctl_key=${1%%=*}
    _layerctl_value=${1#*=}
    case $_layerctl_key in
    UUID) _layerctl_link=/dev/disk/by-uuid/$_layerctl_value ;;
    LABEL) _layerctl_link=/dev/disk/by-label/$_layerctl_value ;;
    PARTUUID) _layerctl_link=/dev/disk/by-partuuid/$_layerctl_value ;;
    esac
    if [ -b "$_layerctl_link" ]; then
        readlink -f "$_layerctl_link"
        return 0
    fi
    # Without udev there are no /dev/disk links: ask findfs (util-linux and busybox), then blkid
    # (util-linux's knows PARTUUID=, which busybox's findfs does not), whose output both versions
    # share: /dev/vda: UUID="…" TYPE="…".
    if command -v findfs >/dev/null 2>&1; then
        _layerctl_found=$(findfs "$1" 2>/dev/null) && [ -b "$_layerctl_found" ] && echo "$_layerctl_found" && return 0
    fi
    command -v blkid >/dev/null 2>&1 || return 1
    _layerctl_found=$(blkid 2>/dev/null | while IFS= read -r _layerctl_entry; do
        case " ${_layerctl_entry#*:} " in
        *" $_layerctl_key=\"$_layerctl_value\""*) echo "${_layerctl_entry%%:*}" && break ;;
        esac
    done)
    [ -n "$_layerctl_found" ] && [ -b "$_layerctl_found" ] && echo "$_layerctl_found" && return 0
    return 1
}

# Prints the filesystem type blkid reports for a device node, or nothing.
layerctl_fstype() {
    command -v blkid >/dev/null 2>&1 || return 0
    _layerctl_entry=$(blkid "$1" 2>/dev/null) || return 0
    case $_layerctl_entry in
    *' TYPE="'*)
        _layerctl_entry=${_layerctl_entry#*' TYPE="'}
        echo "${_layerctl_entry%%\"*}"
        ;;
    esac
}

# Waits up to LAYERCTL_TIMEOUT seconds for a device and prints its node.
layerctl_wait_device() {
    layerctl_find_device "$1"
    case $? in 0) return 0 ;; 2) return 2 ;; esac
    _layerctl_ticks=$((LAYERCTL_TIMEOUT * 5))
    while [ "$_layerctl_ticks" -gt 0 ]; do
        sleep 0.2 2>/dev/null || sleep 1
        layerctl_find_device "$1" && return 0
        _layerctl_ticks=$((_layerctl_ticks - 1))
    done
    return 1
}

# Waits for the device that holds the image (for a whole-device image, the image itself) and sets
# LAYERCTL_DEVICE_NODE to its node. The mkinitcpio hook calls it before its init waits for root=;
# layerctl_mount calls it again, and then the device is there at once.
layerctl_find_boot_device() {
    case $LAYERCTL_IMAGE in
    /dev/* | UUID=* | LABEL=* | PARTUUID=*)
        LAYERCTL_DEVICE_NODE=$(layerctl_wait_device "$LAYERCTL_IMAGE") ||
            layerctl_fail "image device $LAYERCTL_IMAGE failed: it did not appear within $LAYERCTL_TIMEOUT s" ||
            return 1
        ;;
    /*)
        [ -n "$LAYERCTL_DEVICE" ] ||
            layerctl_fail "image $LAYERCTL_IMAGE failed: neither layerctl.device= nor root= names the device that holds it" ||
            return 1
        LAYERCTL_DEVICE_NODE=$(layerctl_wait_device "$LAYERCTL_DEVICE")
        case $? in
        0) ;;
        2) layerctl_fail "device $LAYERCTL_DEVICE failed: not /dev/…, UUID=, LABEL= or PARTUUID=" || return 1 ;;
        *) layerctl_fail "device $LAYERCTL_DEVICE failed: it did not appear within $LAYERCTL_TIMEOUT s" || return 1 ;;
        esac
        ;;
    *)
        layerctl_fail "image $LAYERCTL_IMAGE failed: give an absolute path on the device, or a device" || return 1
        ;;
    esac
}

# Follows symlinks inside the image (absolute ones relative to its root) and succeeds when PATH
# ends at an executable file.
layerctl_has_init() {
    _layerctl_path=$2
    _layerctl_hops=0
    while [ "$_layerctl_hops" -lt 16 ]; do
        if [ -L "$1$_layerctl_path" ]; then
            _layerctl_target=$(readlink "$1$_layerctl_path")
            case $_layerctl_target in
            /*) _layerctl_path=$_layerctl_target ;;
            *) _layerctl_path=${_layerctl_path%/*}/$_layerctl_target ;;
            esac
            _layerctl_hops=$((_layerctl_hops + 1))
            continue
        fi
        [ -f "$1$_layerctl_path" ] && [ -x "$1$_layerctl_path" ]
        return
    done
    return 1
}

# Mounts the image named on the command line as an overlay on NEWROOT. Does nothing (and
# succeeds) when there is no layerctl.image=, so the hook can stay in a generic initramfs.
layerctl_mount() {
    _layerctl_newroot=$1
    layerctl_cmdline
    [ -n "$LAYERCTL_IMAGE" ] || return 0
    layerctl_is_mounted "$_layerctl_newroot" && return 0
    layerctl_unmount
    [ "$LAYERCTL_OVERLAY" = tmpfs ] ||
        layerctl_fail "layerctl.overlay=$LAYERCTL_OVERLAY failed: the writes can only go to a tmpfs (layerctl.overlay=tmpfs)" ||
        return 1
    for _layerctl_module in loop squashfs overlay; do modprobe -q "$_layerctl_module" 2>/dev/null; done
    mkdir -p "$LAYERCTL_RUN/device" "$LAYERCTL_RUN/image" "$LAYERCTL_RUN/rw" "$LAYERCTL_RUN/ram"

    layerctl_find_boot_device || return 1
    _layerctl_source=$LAYERCTL_DEVICE_NODE
    case $LAYERCTL_IMAGE in
    /dev/* | UUID=* | LABEL=* | PARTUUID=*) ;;
    *)
        # Busybox's mount only tries filesystems the kernel already knows: load the device's first.
        _layerctl_type=$(layerctl_fstype "$LAYERCTL_DEVICE_NODE")
        [ -z "$_layerctl_type" ] || modprobe -q "$_layerctl_type" 2>/dev/null
        # On btrfs the image's path starts at the top-level subvolume (`layerctl stage` writes
        # /@/var/lib/… for a root in the subvolume @), while a plain mount shows the default
        # subvolume, which `btrfs subvolume set-default` may have made another.
        _layerctl_options=ro
        [ "$_layerctl_type" != btrfs ] || _layerctl_options=ro,subvolid=5
        _layerctl_out=$(mount -o "$_layerctl_options" ${_layerctl_type:+-t "$_layerctl_type"} "$LAYERCTL_DEVICE_NODE" "$LAYERCTL_RUN/device" 2>&1) ||
            layerctl_fail "mount of device $LAYERCTL_DEVICE ($LAYERCTL_DEVICE_NODE) failed: $_layerctl_out" || return 1
        _layerctl_source=$LAYERCTL_RUN/device$LAYERCTL_IMAGE
        [ -f "$_layerctl_source" ] ||
            layerctl_fail "image $LAYERCTL_IMAGE failed: no such file on $LAYERCTL_DEVICE ($LAYERCTL_DEVICE_NODE)" || return 1
        ;;
    esac

    if [ "$LAYERCTL_TORAM" = 1 ]; then
        _layerctl_out=$(mount -t tmpfs -o mode=0700 layerctl-ram "$LAYERCTL_RUN/ram" 2>&1) ||
            layerctl_fail "mount of the RAM copy's tmpfs failed: $_layerctl_out" || return 1
        _layerctl_out=$(cat "$_layerctl_source" 2>&1 >"$LAYERCTL_RUN/ram/image.squashfs") ||
            layerctl_fail "copy of image $LAYERCTL_IMAGE to RAM failed: $_layerctl_out" || return 1
        _layerctl_source=$LAYERCTL_RUN/ram/image.squashfs
        if layerctl_is_mounted "$LAYERCTL_RUN/device"; then umount "$LAYERCTL_RUN/device"; fi
    fi

    if [ -n "$LAYERCTL_VERIFY" ]; then
        case $LAYERCTL_VERIFY in
        sha256:*) ;;
        *) layerctl_fail "verify of image $LAYERCTL_IMAGE failed: layerctl.verify= must be sha256:HEX" || return 1 ;;
        esac
        _layerctl_sum=$(sha256sum "$_layerctl_source" 2>&1) ||
            layerctl_fail "verify of image $LAYERCTL_IMAGE failed: $_layerctl_sum" || return 1
        _layerctl_sum=${_layerctl_sum%% *}
        [ "$_layerctl_sum" = "${LAYERCTL_VERIFY#sha256:}" ] ||
            layerctl_fail "verify of image $LAYERCTL_IMAGE failed: its sha256 is $_layerctl_sum, not ${LAYERCTL_VERIFY#sha256:}" ||
            return 1
    fi

    if [ -b "$_layerctl_source" ]; then
        _layerctl_out=$(mount -t squashfs -o ro "$_layerctl_source" "$LAYERCTL_RUN/image" 2>&1)
    else
        _layerctl_out=$(mount -t squashfs -o ro,loop "$_layerctl_source" "$LAYERCTL_RUN/image" 2>&1)
    fi || layerctl_fail "mount of image $LAYERCTL_IMAGE failed: ${_layerctl_out:-not a squashfs the kernel can read}" ||
        return 1
    layerctl_has_init "$LAYERCTL_RUN/image" "$LAYERCTL_INIT" ||
        layerctl_fail "image $LAYERCTL_IMAGE failed: it has no $LAYERCTL_INIT to start" || return 1

    _layerctl_out=$(mount -t tmpfs -o "mode=0755,size=$LAYERCTL_SIZE" layerctl-rw "$LAYERCTL_RUN/rw" 2>&1) ||
        layerctl_fail "mount of the tmpfs (layerctl.size=$LAYERCTL_SIZE) failed: $_layerctl_out" || return 1
    mkdir -p "$LAYERCTL_RUN/rw/upper" "$LAYERCTL_RUN/rw/work"
    _layerctl_out=$(mount -t overlay layerctl \
        -o "lowerdir=$LAYERCTL_RUN/image,upperdir=$LAYERCTL_RUN/rw/upper,workdir=$LAYERCTL_RUN/rw/work" \
        "$_layerctl_newroot" 2>&1) ||
        layerctl_fail "mount of the overlay on $_layerctl_newroot failed: $_layerctl_out" || return 1

    {
        echo "LAYERCTL_IMAGE=$LAYERCTL_IMAGE"
        echo "LAYERCTL_DEVICE=$LAYERCTL_DEVICE"
        echo "LAYERCTL_DEVICE_NODE=$LAYERCTL_DEVICE_NODE"
        echo "LAYERCTL_VERIFY=$LAYERCTL_VERIFY"
        echo "LAYERCTL_TORAM=$LAYERCTL_TORAM"
    } >"$LAYERCTL_RUN/boot.env"
    return 0
}
