#!/bin/sh
# Mounts the image as the new root. dracut sources mount hooks until the root is mounted, so this
# may run again after the emergency shell returns: layerctl_mount starts over each time.
# shellcheck disable=SC1091 # dracut-lib.sh is dracut's own
type getarg >/dev/null 2>&1 || . /lib/dracut-lib.sh
# shellcheck source=boot/layerctl.sh
. /usr/lib/layerctl/layerctl.sh

if getarg layerctl.image= >/dev/null && ! ismounted "$NEWROOT"; then
    layerctl_mount "$NEWROOT" || emergency_shell -n layerctl "layerctl: $LAYERCTL_FAILURE"
fi
