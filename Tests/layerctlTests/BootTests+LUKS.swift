import Foundation
import Glibc
import LayerSupport
import Testing

extension BootTests {
    /// A LUKS disk that holds the image file: made in a machine whose kernel has dm-crypt (this
    /// host's has none), with `Fixtures/luks-setup-init`. Returns the disk, the key file and the two
    /// UUIDs: the LUKS container's and the ext4 filesystem's inside it.
    func makeEncryptedDisk() throws -> (disk: String, key: String, luksUUID: String, fsUUID: String) {
        let folder = try Harness.temporaryDirectory("luks")
        let (luksUUID, fsUUID) = (UUID().uuidString.lowercased(), UUID().uuidString.lowercased())
        let initrd = folder + "/setup.img"
        try BootMachine.shell(
            """
            cd '\(folder)'
            mkdir -p root/bin root/sbin root/dev root/proc root/sys root/run root/tmp root/disk/images
            cp /bin/busybox root/bin/busybox
            ln -s busybox root/bin/sh
            # Where the kernel asks for the cipher modules dm-crypt needs (aes, ecb, xts).
            ln -s ../bin/busybox root/sbin/modprobe
            cp /usr/sbin/cryptsetup /usr/sbin/mke2fs root/sbin/
            cp '\(Harness.packageRoot)/Tests/layerctlTests/Fixtures/luks-setup-init' root/init
            cp '\(machine.image)' root/disk\(BootMachine.imagePath)
            head -c 64 /dev/urandom >keyfile
            cp keyfile root/keyfile
            \(BootMachine.packInitramfs(
                programs: ["/sbin/cryptsetup", "/sbin/mke2fs"],
                modules: ["virtio_pci", "virtio_blk", "crc32c_generic", "ext4", "dm_mod", "dm_crypt", "aes_generic", "ecb", "xts", "aesni_intel", "algif_skcipher"],
                to: initrd))
            truncate -s 192M luks.img
            """)
        let output = try machine.boot(
            kernel: BootMachine.fastKernel, initrd: initrd, disks: [(folder + "/luks.img", false)],
            append: "luks_uuid=\(luksUUID) fs_uuid=\(fsUUID)", memory: 1024)
        guard output.contains("SETUP done") else { throw MachineError("make the LUKS disk:\n\(output.suffix(4000))") }
        return (folder + "/luks.img", folder + "/keyfile", luksUUID, fsUUID)
    }

    /// Most Arch laptops keep their root on LUKS: the device that holds the image appears only
    /// once the initramfs's crypt step has opened it, and the hook must wait for that, not fail
    /// first, nor find it before it is there.
    @Test(
        "dracut, with its shell init and with systemd, and mkinitcpio with systemd: the image file on an ext4 filesystem inside LUKS, opened by the crypt step, boots"
    )
    func imageInsideLUKS() throws {
        let (disk, key, luksUUID, fsUUID) = try makeEncryptedDisk()
        let folder = FileSystem.split(disk).directory
        for flavour in ["dracut", "dracut-systemd", "mkinitcpio-systemd"] {
            let initrd = folder + "/initrd-crypt-\(flavour).img"
            if flavour == "mkinitcpio-systemd" {
                // systemd's cryptsetup, as mkinitcpio's sd-encrypt gives it; sd-layerctl's service
                // comes after it.
                try BootMachine.shell(
                    BootMachine.makeMkinitcpioSystemdInitramfs(
                        in: folder + "/sd-layerctl", to: initrd, dracutModules: ["crypt"],
                        include: (key, "/etc/layerctl-test.key")))
            } else {
                try BootMachine.shell(
                    """
                    LAYERCTL_DRACUT_MODULES=crypt LAYERCTL_DRACUT_INCLUDE='\(key) /etc/layerctl-test.key' \
                        LAYERCTL_DRACUT_SYSTEMD=\(flavour == "dracut-systemd" ? "1" : "") \
                        bash '\(Harness.packageRoot)/scripts/make-initramfs.sh' '\(initrd)' '\(BootMachine.kernelDirectory)'
                    """)
            }
            // The key file is in the initramfs: dracut's own crypt step says so with `:/`, systemd's
            // takes an absolute path there.
            let keyArgument = "rd.luks.key=/etc/layerctl-test.key" + (flavour == "dracut" ? ":/" : "")
            let output = try machine.boot(
                kernel: BootMachine.fastKernel, initrd: initrd, disks: [(disk, true)],
                append:
                    "rd.luks.uuid=\(luksUUID) \(keyArgument) layerctl.image=\(BootMachine.imagePath) layerctl.device=UUID=\(fsUUID) \(probe)",
                memory: 1024)
            expectBooted(output, image: "/dev/loop0")
            #expect(
                lines(output, "PROBE").contains {
                    $0.hasPrefix("PROBE mount /run/layerctl/device ext4 /dev/") && ($0.contains("/dm-") || $0.contains("/mapper/"))
                },
                "\(flavour): \(lines(output, "PROBE"))")
        }
    }
}
