#!/bin/sh
# With layerctl.image= the root is the image: tell dracut's init that root= is taken care of, so
# it neither refuses to boot without one nor mounts the device named by root= as the root.
# shellcheck disable=SC1091 # dracut-lib.sh is dracut's own
type getarg >/dev/null 2>&1 || . /lib/dracut-lib.sh

if getarg layerctl.image= >/dev/null; then
    # Read by dracut's init after the cmdline hooks.
    # shellcheck disable=SC2034
    root=layerctl
    # shellcheck disable=SC2034
    rootok=1
fi
