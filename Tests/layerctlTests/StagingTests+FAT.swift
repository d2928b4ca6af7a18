import Foundation
import Glibc
import Testing

extension StagingTests {
    /// Most ESPs are FAT, and systemd-boot reads its entries and kernels only from one. This host's
    /// kernel has no vfat driver, so layerctl runs in a machine whose kernel has it: an initramfs
    /// holds layerctl with every library it loads, blkid (the UUIDs, with no udev), busybox and the
    /// modules, and its init is `Fixtures/fat-staging-init`. The machine stages onto the FAT disk,
    /// the power is cut, and the next boot must find every file whole; it unstages, the power is
    /// cut again, and so must the boot after: FAT has no journal, so what was not synced is lost.
    @Test(
        "on a FAT boot partition: stage, restage, a name that differs in case, boot for systemd-boot and GRUB, unstage; after a power cut following each, every file is whole and fsck.fat finds nothing to mend"
    )
    func fatBootPartition() throws {
        guard FileManager.default.isExecutableFile(atPath: "/usr/sbin/mkfs.vfat") else {
            print("StagingTests.fatBootPartition skipped: mkfs.vfat is not installed (dosfstools, scripts/install-deps.sh)")
            return
        }
        let folder = try Harness.temporaryDirectory("fat-staging")
        let initrd = folder + "/initrd.img"
        let stateUUID = "3f0c6a52-8d1e-4b7a-9c2f-5e6d7a8b9c0d"
        try BootMachine.shell(
            """
            cd '\(folder)'
            mkdir -p root/bin root/sbin root/dev root/proc root/sys root/run root/tmp
            cp /bin/busybox root/bin/busybox
            ln -s busybox root/bin/sh
            cp '\(Harness.executable)' root/bin/layerctl
            cp /sbin/blkid root/sbin/blkid
            cp '\(Harness.packageRoot)/Tests/layerctlTests/Fixtures/fat-staging-init' root/init
            \(BootMachine.packInitramfs(
                programs: ["/bin/layerctl", "/sbin/blkid"],
                modules: ["virtio_pci", "virtio_blk", "crc32c_generic", "ext4", "vfat", "nls_cp437", "nls_ascii", "nls_utf8", "nls_iso8859-1"],
                to: initrd))

            # Two images with a kernel and an initramfs of some megabytes each: what a cut loses shows.
            mkdir -p disk
            for image in first second; do
                mkdir -p "$image/boot"
                head -c 4194304 /dev/urandom >"$image/boot/vmlinuz-linux"
                head -c 6291456 /dev/urandom >"$image/boot/initramfs-linux.img"
                mksquashfs "$image" "disk/$image.squashfs" -noappend -quiet -all-root -comp gzip >/dev/null
            done
            mkfs.ext4 -q -U \(stateUUID) -d disk state.ext4 96M
            truncate -s 64M esp.fat
            mkfs.vfat -F 32 -i 1A2B3C4D -n ESP esp.fat >/dev/null
            """)
        func digest(_ version: String) throws -> String {
            try BootMachine.shell("sha256sum '\(folder)/disk/\(version).squashfs' | cut -c1-64")
                .trimmingCharacters(in: .whitespacesAndNewlines)
        }
        let secondDigest = try digest("second")
        let (first, second) = (String(try digest("first").prefix(12)), String(secondDigest.prefix(12)))
        // The machine's lines, GUEST cut off.
        func boot(_ step: String) throws -> [String] {
            let output = try machine.boot(
                kernel: BootMachine.fastKernel, initrd: initrd,
                disks: [(folder + "/state.ext4", false), (folder + "/esp.fat", false)], append: "step=\(step)",
                memory: 1536)
            let lines = output.split(whereSeparator: \.isNewline).compactMap { line -> String? in
                guard let start = line.range(of: "GUEST ") else { return nil }
                return String(line[start.upperBound...]).trimmingCharacters(in: .whitespacesAndNewlines)
            }
            #expect(lines.last == "done", "\(output.suffix(4000))")
            return lines
        }
        func lines(_ lines: [String], of step: String) -> [String] {
            lines.filter { $0.hasPrefix(step + " ") }.map { String($0.dropFirst(step.count + 1)) }
        }

        let staging = try boot("stage")
        #expect(staging.contains { $0.hasPrefix("mount /dev/vdb /esp vfat ") }, "\(staging)")
        #expect(
            lines(staging, of: "stage-first:").first?.hasPrefix("staged arch \(first): /disk/state/arch/\(first).squashfs (") == true,
            "\(staging)")
        #expect(staging.contains("stage-second:   previous: \(first), kept as layerctl-arch-previous"), "\(staging)")
        #expect(
            lines(staging, of: "stage-case:") == [
                "layerctl: 'Arch' differs from the staged name 'arch' only in case, and on a FAT boot partition their entries would be one file; give --name another name, or unstage arch"
            ], "\(staging)")
        #expect(staging.contains("stage-case status 3"), "\(staging)")
        #expect(
            lines(staging, of: "boot:").prefix(2) == [
                "systemd-boot boots layerctl-arch.conf by default (/esp/loader/loader.conf)",
                "GRUB: saved_entry=layerctl-arch in /esp/grub/grubenv, but GRUB boots it by default only once its menu follows saved_entry and holds the entry: set GRUB_DEFAULT=saved in /etc/default/grub, then run grub-mkconfig -o /esp/grub/grub.cfg",
            ], "\(staging)")
        for step in ["stage-first", "stage-second", "boot"] { #expect(staging.contains("\(step) status 0"), "\(staging)") }
        let staged = lines(staging, of: "staged")
        // The entries name the files by their paths on the ESP, where systemd-boot looks.
        #expect(staged.contains("/esp/loader/entries/layerctl-arch.conf: linux      /layerctl/arch/\(second)/vmlinuz"), "\(staged)")
        #expect(staged.contains("/esp/loader/entries/layerctl-arch-previous.conf: initrd     /layerctl/arch/\(first)/initramfs.img"), "\(staged)")
        #expect(
            staged.contains(
                "/esp/loader/entries/layerctl-arch.conf: options    layerctl.image=/state/arch/\(second).squashfs layerctl.device=UUID=\(stateUUID) layerctl.verify=sha256:\(secondDigest)"),
            "\(staged)")
        #expect(staged.contains("/esp/loader/loader.conf: default layerctl-arch.conf"), "\(staged)")
        #expect(staged.contains("grubenv: saved_entry=layerctl-arch"), "\(staged)")
        for version in [first, second] {
            for (file, size) in [("vmlinuz", 4_194_304), ("initramfs.img", 6_291_456)] {
                #expect(staged.contains { $0.hasPrefix("path /esp/layerctl/arch/\(version)/\(file) \(size) ") }, "\(staged)")
            }
        }

        // The cut left a consistent filesystem, and the next boot finds what the machine saw before
        // the cut, every byte of it.
        expectClean(folder + "/esp.fat")
        let checking = try boot("check")
        #expect(lines(checking, of: "cut") == staged, "\(checking)")
        #expect(checking.contains("staged status 0") && checking.contains("boot status 0"), "\(checking)")
        #expect(lines(checking, of: "staged:").count == 2, "\(checking)")
        #expect(!checking.contains { $0.contains("cannot boot") }, "\(checking)")
        #expect(lines(checking, of: "unstage:") == ["unstaged arch \(second)"], "\(checking)")
        let unstaged = lines(checking, of: "unstaged")
        #expect(!unstaged.contains { $0.contains(second) }, "\(unstaged)")
        #expect(!unstaged.contains { $0.contains("layerctl-arch-previous") }, "\(unstaged)")
        #expect(unstaged.contains("/esp/loader/entries/layerctl-arch.conf: title      layerctl: arch (\(first))"), "\(unstaged)")

        // Another cut, after the unstage: the next boot finds what it left, and a clean filesystem.
        expectClean(folder + "/esp.fat")
        let after = try boot("after")
        #expect(lines(after, of: "after") == unstaged, "\(after)")
        expectClean(folder + "/esp.fat")
    }

    /// Expects `fsck.fat -n` to find nothing wrong with the FAT filesystem in `file` but what a power
    /// cut leaves on any FAT: the dirty bit (the Linux driver sets it while mounted, and leaves it set
    /// at unmount once a mount found it set), and the count of free clusters that FAT32 keeps as a
    /// hint, which Linux writes only when the whole filesystem is synced and which a mount after a
    /// cut goes on from. A file's entry that names a freed cluster, a lost chain, a cut-short file
    /// are each another line.
    func expectClean(_ file: String, sourceLocation: SourceLocation = #_sourceLocation) {
        let harmless = [
            "fsck.fat ", "There are differences between boot sector and its backup.",
            "This is mostly harmless. Differences: (offset:original/backup)", "65:01/00", "Not automatically fixing this.",
            "Dirty bit is set. Fs was not properly unmounted and some data may be corrupt.", "Automatically removing dirty bit.",
            "Free cluster summary wrong (", "Auto-correcting.", "Leaving filesystem unchanged.", file + ": ",
        ]
        do {
            let check = try KernelMount.run("/usr/sbin/fsck.fat", ["-n", file])
            let problems = check.output.split(whereSeparator: \.isNewline).map { $0.trimmingCharacters(in: .whitespaces) }
                .filter { line in !harmless.contains { line.hasPrefix($0) } }
            #expect(check.status <= 1 && problems.isEmpty, "\(check.output)", sourceLocation: sourceLocation)
            #expect(check.output.contains(file + ": "), "\(check.output)", sourceLocation: sourceLocation)
        } catch {
            Issue.record(error, sourceLocation: sourceLocation)
        }
    }
}
