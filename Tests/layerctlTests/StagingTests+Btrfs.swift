import Foundation
import Glibc
import Testing

extension StagingTests {
    /// Arch on btrfs has its root in a subvolume (archinstall's `@`), and the state folder with it:
    /// a path on that filesystem starts at the top-level subvolume, `/@/var/lib/…`, as GRUB reads it
    /// and as the kernel's mount table says. Here the default subvolume is `@` too (`btrfs
    /// subvolume set-default`, which spares `rootflags=subvol=@`): a plain mount of the disk then
    /// shows `@`, where the staged path is not.
    @Test("staged on a btrfs root in the subvolume @, which is also the default subvolume, the entry names the image from the top-level subvolume, and GRUB boots it from there")
    func btrfsSubvolume() throws {
        guard FileManager.default.isExecutableFile(atPath: "/usr/sbin/mkfs.btrfs") else {
            print("StagingTests.btrfsSubvolume skipped: mkfs.btrfs is not installed (btrfs-progs, scripts/install-deps.sh)")
            return
        }
        let folder = try Harness.temporaryDirectory("staging-btrfs")
        let disk = Disk(
            file: folder + "/fs.btrfs", mount: folder + "/mnt", grub: folder + "/grub.d", run: folder + "/run")
        let top = folder + "/top"
        defer { _ = try? BootMachine.shell("umount '\(top)' '\(disk.mount)' 2>/dev/null || true") }
        try BootMachine.shell(
            """
            truncate -s 384M '\(disk.file)'
            mkfs.btrfs -q -U \(uuid) -L layerctl-boot '\(disk.file)'
            mkdir -p '\(top)' '\(disk.mount)' '\(disk.run)'
            mount -o loop '\(disk.file)' '\(top)'
            btrfs subvolume create '\(top)/@' >/dev/null
            btrfs subvolume set-default "$(btrfs subvolume list '\(top)' | awk '$NF == "@" { print $2 }')" '\(top)'
            umount '\(top)'
            mount -o loop,subvol=@ '\(disk.file)' '\(disk.mount)'
            """)
        _ = try layerctl(
            ["stage", machine.image, "--name", "probe", "--append", "console=ttyS0 panic=-1 rd.shell=0 init=/usr/bin/layerctl-probe"] + disk.options)
        let id = String(machine.imageDigest.prefix(12))
        let entry = text(disk.mount + "/boot/loader/entries/layerctl-probe.conf")
        #expect(Self.field("linux", of: entry) == "/@/boot/layerctl/probe/\(id)/vmlinuz", "\(entry)")
        #expect(
            Self.field("options", of: entry).hasPrefix("layerctl.image=/@/state/probe/\(id).squashfs layerctl.device=UUID=\(uuid) "),
            "\(entry)")
        let menu = try BootMachine.shell("sh '\(disk.grub)/42_layerctl'")
        #expect(menu.contains("linux /@/boot/layerctl/probe/\(id)/vmlinuz layerctl.image=/@/state/probe/\(id).squashfs"), "\(menu)")

        // Booted with the image copied to memory, a state folder in memory is refused, saying how to
        // mount the filesystem the image came from: at its top-level subvolume, where the path starts.
        let memory = try Harness.temporaryDirectory("staging-memory")
        defer { _ = try? BootMachine.shell("umount '\(memory)'") }
        try BootMachine.shell(
            """
            mount -t tmpfs memory '\(memory)'
            printf 'LAYERCTL_IMAGE=/@/state/probe/\(id).squashfs\nLAYERCTL_DEVICE=UUID=\(uuid)\nLAYERCTL_TORAM=1\n' >'\(disk.run)/boot.env'
            """)
        let toMemory = try Harness.run(
            ["stage", machine.image, "--name", "probe", "--state-dir", memory + "/state", "--boot-dir", disk.mount + "/boot", "--no-grub",
             "--run-dir", disk.run])
        #expect(
            toMemory.status == 3
                && toMemory.stderr.hasSuffix("is not mounted: `mount -o subvolid=5 UUID=\(uuid) /mnt`, then give --state-dir /mnt/@/state\n"),
            "\(toMemory.stderr)")
        unlink(disk.run + "/boot.env")

        // GRUB boots it, as on such a machine: its menu from 42_layerctl, its default from grubenv,
        // its prefix on the subvolume, as grub-install records it.
        if let missing = Self.missingLoader("/usr/bin/grub-mkstandalone", package: "grub-efi-amd64-bin") {
            print("StagingTests.btrfsSubvolume: the boot skipped: \(missing)")
            return
        }
        try BootMachine.shell("mkdir -p '\(disk.mount)/boot/grub'")
        try writeGrubMenu(disk, to: disk.mount + "/boot/grub/grub.cfg")
        _ = try layerctl(["boot", "probe", "--loader", "grub"] + disk.options)
        // The staged initramfs is the image's, made for an ext4 disk; in its place one with the
        // btrfs driver, as a host-only one for this root has.
        try BootMachine.shell(
            "LAYERCTL_DRACUT_DRIVERS=btrfs bash '\(Harness.packageRoot)/scripts/make-initramfs.sh' '\(disk.mount)\(Self.field("initrd", of: entry).dropFirst(2))' '\(BootMachine.kernelDirectory)'")
        let output = try bootThroughGrub(disk, uuid: uuid, prefix: "/@/boot/grub")
        let probe = Self.probeLines(output)
        #expect(probe.contains("PROBE mount / overlay layerctl"), "\(output.suffix(4000))")
        #expect(probe.contains("PROBE mount /run/layerctl/device btrfs /dev/vdb"), "\(probe)")
        #expect(probe.contains("PROBE env LAYERCTL_IMAGE=/@/state/probe/\(id).squashfs"), "\(probe)")
        #expect(probe.last == "PROBE done", "\(probe)")
    }
}
