#!/bin/bash
# dracut module "layerctl": boots a layerctl image read-only with a tmpfs overlay on / (the logic is
# in /usr/lib/layerctl/layerctl.sh, shared with the mkinitcpio hook). Add it with
# `dracut --add layerctl` or `add_dracutmodules+=" layerctl "` in dracut.conf.d.

# Only when asked for: a generic initramfs does not need it.
check() {
    return 255
}

depends() {
    echo base udev-rules
}

installkernel() {
    hostonly='' instmods loop squashfs overlay
}

# moddir is set by dracut.
# shellcheck disable=SC2154
install() {
    local shared="$moddir/layerctl.sh"
    [ -f "$shared" ] || shared=/usr/lib/layerctl/layerctl.sh
    inst_simple "$shared" /usr/lib/layerctl/layerctl.sh
    inst_multiple blkid cat mount umount modprobe readlink sha256sum sleep
    # After 99base's parse-root-opts.sh (cmdline 10), which sets root from root=.
    inst_hook cmdline 20 "$moddir/layerctl-cmdline.sh"
    inst_hook mount 10 "$moddir/layerctl-mount.sh"
}
