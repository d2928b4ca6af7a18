import Foundation
import Glibc
import LayerSupport
import Testing

/// The boot loaders themselves read what `stage` and `boot` wrote: QEMU boots as a PC does, OVMF
/// starts the loader from the ESP, and the loader, not the test, picks the entry, its kernel, its
/// initramfs and its command line.
extension StagingTests {
    static let systemdBoot = "/usr/lib/systemd/boot/efi/systemd-bootx64.efi"

    /// Why a boot through the firmware and `loader` cannot run here, or nil when it can.
    static func missingLoader(_ loader: String, package: String) -> String? {
        if let missing = BootMachine.missingFirmware { return missing }
        return FileManager.default.fileExists(atPath: loader)
            ? nil : "needs \(loader) (\(package), scripts/install-deps.sh)"
    }

    /// An ESP: a filesystem of its own for `--boot-dir`, so its entries' paths start at its root.
    /// The host has no vfat driver: it is ext4 here, and the firmware reads a FAT copy of it.
    func makeSystemPartition(beside disk: Disk) throws -> String {
        let file = FileSystem.split(disk.file).directory + "/esp.ext4"
        let mount = FileSystem.split(disk.file).directory + "/esp"
        try BootMachine.shell(
            """
            mkfs.ext4 -q '\(file)' 160M
            mkdir -p '\(mount)'
            mount -o loop '\(file)' '\(mount)'
            """)
        return mount
    }

    /// A fresh copy of the firmware's variable store in `folder`, for the boots that follow.
    func firmwareVariables(in folder: String, secureBoot: Bool = false) throws -> String {
        let variables = folder + "/variables.fd"
        try BootMachine.shell("cp '\(secureBoot ? BootMachine.secureFirmwareVariables : BootMachine.firmwareVariables)' '\(variables)'")
        return variables
    }

    /// The probe's lines in a boot's console output.
    static func probeLines(_ output: String) -> [String] {
        output.split(whereSeparator: \.isNewline).map { $0.trimmingCharacters(in: .whitespaces) }
            .filter { $0.hasPrefix("PROBE") }
    }

    /// A copy of `esp` as the firmware reads it, systemd-boot in its fallback path; in `folder`.
    /// With `signedWith`, systemd-boot is signed with that key, as sbctl signs it for Secure Boot.
    func systemdBootPartition(
        _ esp: String, in folder: String, signedWith key: (key: String, certificate: String)? = nil
    ) throws -> String {
        let copy = folder + "/esp-fat"
        let install =
            key.map { "sbsign --key '\($0.key)' --cert '\($0.certificate)' --output '\(copy)/EFI/BOOT/BOOTX64.EFI' '\(Self.systemdBoot)'" }
            ?? "cp '\(Self.systemdBoot)' '\(copy)/EFI/BOOT/BOOTX64.EFI'"
        try BootMachine.shell(
            """
            rm -rf '\(copy)' && mkdir -p '\(copy)/EFI/BOOT'
            cp -R '\(esp)/.' '\(copy)/' && rm -rf '\(copy)/lost+found'
            \(install)
            """)
        return copy
    }

    /// The kernel's command line as it logs it at boot.
    static func kernelCommandLine(_ output: String) -> String {
        output.split(whereSeparator: \.isNewline).first { $0.contains("Command line: ") }.map(String.init) ?? ""
    }

    @Test("systemd-boot, started by the firmware, boots the entry `layerctl boot` made its default, though another sorts first")
    func systemdBootFollowsDefault() throws {
        if let missing = Self.missingLoader(Self.systemdBoot, package: "systemd-boot-efi") {
            print("StagingTests.systemdBootFollowsDefault skipped: \(missing)")
            return
        }
        let disk = try makeDisk()
        defer { unmount(disk) }
        let esp = try makeSystemPartition(beside: disk)
        defer { _ = try? BootMachine.shell("umount '\(esp)'") }
        let folder = FileSystem.split(disk.file).directory
        let options = [
            "--state-dir", disk.mount + "/state", "--boot-dir", esp, "--grub-dir", disk.grub, "--run-dir", disk.run,
            // The host's own EFI variables have no say here.
            "--efivars-dir", folder,
        ]
        // With the menu's timeout at 0: no key waits.
        try BootMachine.shell("mkdir -p '\(esp)/loader' && printf 'timeout 0\\nconsole-mode keep\\n' >'\(esp)/loader/loader.conf'")
        let append = "console=ttyS0 panic=-1 rd.shell=0 init=/usr/bin/layerctl-probe"
        // `other`, staged last, sorts first: systemd-boot would boot it without a default.
        for name in ["probe", "other"] {
            _ = try layerctl(["stage", machine.image, "--name", name, "--append", append] + options)
        }
        _ = try layerctl(["boot", "probe", "--loader", "systemd-boot"] + options)
        let variables = try firmwareVariables(in: folder)
        let booted = try frozenCopy(disk)
        defer { unlink(booted) }
        let output = try machine.bootFirmware(
            esp: try systemdBootPartition(esp, in: folder), disks: [(booted, true)], variables: variables)
        let probe = Self.probeLines(output)
        let id = String(machine.imageDigest.prefix(12))
        #expect(probe.contains("PROBE env LAYERCTL_IMAGE=/state/probe/\(id).squashfs"), "\(output.suffix(4000))")
        #expect(probe.contains("PROBE env LAYERCTL_VERIFY=sha256:\(machine.imageDigest)"), "\(probe)")
        #expect(probe.last == "PROBE done", "\(probe)")
    }

    /// systemd-boot boots its menu's first entry when nothing names a default, and an entry with a
    /// sort key (layerctl's) sorts before one without (a hand-written arch.conf). Staging must not
    /// change what the machine boots: `boot` is the command that does.
    @Test("with no default in loader.conf, stage names the entry systemd-boot booted by default until now; where it cannot know it, it says so, and the newest version sorts first")
    func stageKeepsSystemdBootDefault() throws {
        if let missing = Self.missingLoader(Self.systemdBoot, package: "systemd-boot-efi") {
            print("StagingTests.stageKeepsSystemdBootDefault skipped: \(missing)")
            return
        }
        let disk = try makeDisk()
        defer { unmount(disk) }
        let esp = try makeSystemPartition(beside: disk)
        defer { _ = try? BootMachine.shell("umount '\(esp)'") }
        let folder = FileSystem.split(disk.file).directory
        // The machine's own entry, as the Arch wiki has one write it: no sort key. Its kernel finds
        // no init and no root, and panics at once; its command line says it was the one booted.
        let loaderConf = "timeout 0\nconsole-mode keep\n"
        try BootMachine.shell(
            """
            mkdir -p '\(esp)/loader/entries'
            printf '\(loaderConf)' >'\(esp)/loader/loader.conf'
            cp '\(BootMachine.kernelDirectory)/vmlinuz' '\(esp)/vmlinuz-linux'
            printf '%s\\n' 'title Arch Linux' 'linux /vmlinuz-linux' 'options console=ttyS0 panic=-1 rdinit=/none layerctl.test=arch' \
                >'\(esp)/loader/entries/arch.conf'
            """)
        // What systemd-boot left at the boot before: its menu, arch.conf first.
        let booted = folder + "/efivars-booted"
        try FileManager.default.createDirectory(atPath: booted, withIntermediateDirectories: true)
        var entries = Data([6, 0, 0, 0])
        for id in ["arch.conf", "auto-reboot-to-firmware-setup"] {
            for unit in id.utf16 + [0] { entries += [UInt8(unit & 0xff), UInt8(unit >> 8)] }
        }
        try entries.write(to: URL(fileURLWithPath: booted + "/LoaderEntries-4a67b082-0a4c-41cf-b6c7-440b29bb8c4f"))
        func options(_ variables: String) -> [String] {
            ["--state-dir", disk.mount + "/state", "--boot-dir", esp, "--grub-dir", disk.grub, "--run-dir", disk.run,
             "--efivars-dir", variables]
        }
        let append = "console=ttyS0 panic=-1 rd.shell=0 init=/usr/bin/layerctl-probe"
        let kept = try layerctl(["stage", machine.image, "--name", "probe", "--append", append] + options(booted))
        let loaderPath = esp + "/loader/loader.conf"
        #expect(
            kept.stderr.contains(
                "systemd-boot: \(loaderPath) named no default, and systemd-boot would have booted layerctl-probe.conf first; it names arch.conf, which booted by default until now (layerctl boot probe makes probe the default)"),
            "\(kept.stderr)")
        #expect(text(loaderPath) == "default arch.conf\n" + loaderConf)
        let variables = try firmwareVariables(in: folder)
        defer { unlink(disk.file + ".boot") }
        let first = try machine.bootFirmware(
            esp: try systemdBootPartition(esp, in: folder), disks: [(try frozenCopy(disk), true)], variables: variables)
        #expect(Self.kernelCommandLine(first).contains("layerctl.test=arch"), "\(first.suffix(4000))")
        #expect(!first.contains("PROBE"), "\(first.suffix(4000))")

        // An ESP prepared elsewhere: no variables say what booted. The default stays unnamed, and
        // stage says what that means; a second version's entry comes before the first's.
        try BootMachine.shell("printf '\(loaderConf)' >'\(loaderPath)'")
        let unknown = try Harness.temporaryDirectory("efivars")
        let told = try layerctl(["stage", "probe", "--store", machine.store, "--append", append] + options(unknown))
        #expect(
            told.stderr.contains(
                "systemd-boot: \(loaderPath) names no default, so systemd-boot boots its menu's first entry, which may now be layerctl-probe.conf (an entry with a sort key comes before those without): add a default line naming the entry to boot, or run layerctl boot probe"),
            "\(told.stderr)")
        #expect(text(loaderPath) == loaderConf)
        let current = try #require((try staged(disk).first?["image"] as? [String: Any])?["id"] as? String)
        #expect(current != String(machine.imageDigest.prefix(12)))
        let second = try machine.bootFirmware(
            esp: try systemdBootPartition(esp, in: folder), disks: [(try frozenCopy(disk), true)], variables: variables)
        let probe = Self.probeLines(second)
        #expect(probe.contains("PROBE env LAYERCTL_IMAGE=/state/probe/\(current).squashfs"), "\(second.suffix(4000))")
        #expect(probe.last == "PROBE done", "\(probe)")
    }
}

extension StagingTests {
    /// A disk as a PC with an XBOOTLDR partition has it, from two folders, in `folder`: a GPT with
    /// the ESP (`esp`, systemd-boot in its fallback path added) and the XBOOTLDR partition
    /// (`xbootldr`), each FAT, filled with mtools (the host has no vfat driver to mount them).
    func xbootldrDisk(esp: String, xbootldr: String, in folder: String) throws -> String {
        let disk = folder + "/xbootldr-disk.img"
        try BootMachine.shell(
            """
            cd '\(folder)'
            export MTOOLS_SKIP_CHECK=1
            rm -rf esp-copy boot-copy && mkdir -p esp-copy/EFI/BOOT boot-copy
            cp -R '\(esp)/.' esp-copy/ && cp '\(Self.systemdBoot)' esp-copy/EFI/BOOT/BOOTX64.EFI
            cp -R '\(xbootldr)/.' boot-copy/ && rm -rf boot-copy/lost+found
            # FAT32 from 33 MiB on; room for what each holds.
            esp_mib=40
            boot_mib=$(( $(du -sm boot-copy | cut -f1) * 5 / 4 + 40 ))
            for part in esp boot; do
                if [ "$part" = esp ]; then mib=$esp_mib; else mib=$boot_mib; fi
                rm -f "$part.fat"
                mkfs.fat -F 32 -C "$part.fat" $((mib * 1024)) >/dev/null
                mcopy -s -i "$part.fat" "$part-copy"/* ::/
            done
            rm -f '\(disk)' && truncate -s $((esp_mib + boot_mib + 2))M '\(disk)'
            printf '%s\\n' 'label: gpt' \
                "start=2048, size=$((esp_mib * 2048)), type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B" \
                "start=$((2048 + esp_mib * 2048)), size=$((boot_mib * 2048)), type=BC13C2FF-59E6-4262-A352-B275FD6F7172" \
                | sfdisk --quiet '\(disk)'
            dd if=esp.fat of='\(disk)' bs=1M seek=1 conv=notrunc status=none
            dd if=boot.fat of='\(disk)' bs=1M seek=$((1 + esp_mib)) conv=notrunc status=none
            rm -rf esp-copy boot-copy esp.fat boot.fat
            """)
        return disk
    }

    /// With /boot an XBOOTLDR partition and the ESP elsewhere (/efi), systemd-boot reads entries
    /// and kernels on both, loader.conf only on the ESP: a default written to /boot's loader.conf
    /// would change nothing, and the newest staged version, which sorts first, would boot.
    @Test("with --boot-dir an XBOOTLDR partition, boot writes the default into the ESP's loader.conf, and systemd-boot follows it")
    func systemdBootWithXBOOTLDR() throws {
        if let missing = Self.missingLoader(Self.systemdBoot, package: "systemd-boot-efi") {
            print("StagingTests.systemdBootWithXBOOTLDR skipped: \(missing)")
            return
        }
        let disk = try makeDisk()
        defer { unmount(disk) }
        let xbootldr = try makeSystemPartition(beside: disk)
        defer { _ = try? BootMachine.shell("umount '\(xbootldr)'") }
        let folder = FileSystem.split(disk.file).directory
        let esp = folder + "/efi"
        let loaderConf = "timeout 0\nconsole-mode keep\n"
        try BootMachine.shell("mkdir -p '\(esp)/loader' && printf '\(loaderConf)' >'\(esp)/loader/loader.conf'")
        let options = [
            "--state-dir", disk.mount + "/state", "--boot-dir", xbootldr, "--esp-dir", esp, "--grub-dir", disk.grub,
            "--run-dir", disk.run, "--efivars-dir", folder,
        ]
        let append = "console=ttyS0 panic=-1 rd.shell=0 init=/usr/bin/layerctl-probe"
        // `other`, staged last, sorts first: systemd-boot would boot it without a default.
        for name in ["probe", "other"] {
            _ = try layerctl(["stage", machine.image, "--name", name, "--append", append] + options)
        }
        let made = try layerctl(["boot", "probe"] + options)
        #expect(made.stdout.contains("systemd-boot boots layerctl-probe.conf by default (\(esp)/loader/loader.conf)"), "\(made.stdout)")
        #expect(text(esp + "/loader/loader.conf") == "default layerctl-probe.conf\n" + loaderConf)
        #expect(!FileManager.default.fileExists(atPath: xbootldr + "/loader/loader.conf"))
        let variables = try firmwareVariables(in: folder)
        let booted = try frozenCopy(disk)
        defer { unlink(booted) }
        let output = try machine.bootFirmware(
            esp: try xbootldrDisk(esp: esp, xbootldr: xbootldr, in: folder), disks: [(booted, true)], variables: variables)
        let probe = Self.probeLines(output)
        let id = String(machine.imageDigest.prefix(12))
        #expect(probe.contains("PROBE env LAYERCTL_IMAGE=/state/probe/\(id).squashfs"), "\(output.suffix(4000))")
        #expect(probe.last == "PROBE done", "\(probe)")

        // unstage puts the ESP's default back as it was: none.
        _ = try layerctl(["unstage", "probe", "--all"] + options)
        #expect(text(esp + "/loader/loader.conf") == loaderConf)
    }
}

extension StagingTests {
    /// GRUB for UEFI, with its modules inside: what grub-install puts on an ESP, less the modules
    /// folder. It finds the filesystem of `uuid`, takes `prefix` there (as grub-install records
    /// it) and reads grub.cfg from it.
    func grubSystemPartition(uuid: String, prefix: String, in folder: String) throws -> String {
        let esp = folder + "/esp-grub"
        try BootMachine.shell(
            """
            rm -rf '\(esp)' && mkdir -p '\(esp)/EFI/BOOT'
            cat >'\(folder)/grub-early.cfg' <<'END'
            search --no-floppy --fs-uuid --set=root \(uuid)
            set prefix=($root)\(prefix)
            configfile $prefix/grub.cfg
            END
            grub-mkstandalone -O x86_64-efi -o '\(esp)/EFI/BOOT/BOOTX64.EFI' \
                --modules='part_gpt part_msdos ext2 btrfs search_fs_uuid linux chain loadenv configfile echo normal test halt' \
                'boot/grub/grub.cfg=\(folder)/grub-early.cfg'
            """)
        return esp
    }

    /// Boots `disk` (a frozen copy, vdb) through GRUB as the firmware starts it: GRUB finds the
    /// filesystem of `uuid` and reads grub.cfg in `prefix` there. Expects that the menu's own first
    /// entry did not boot.
    func bootThroughGrub(
        _ disk: Disk, uuid: String, prefix: String, sourceLocation: SourceLocation = #_sourceLocation
    ) throws -> String {
        let folder = FileSystem.split(disk.file).directory
        let esp = try grubSystemPartition(uuid: uuid, prefix: prefix, in: folder)
        let booted = try frozenCopy(disk)
        defer { unlink(booted) }
        let output = try machine.bootFirmware(esp: esp, disks: [(booted, true)], variables: try firmwareVariables(in: folder))
        #expect(!output.contains("DECOY booted"), "\(output.suffix(4000))", sourceLocation: sourceLocation)
        return output
    }

    /// A grub.cfg as grub-mkconfig writes one, in short: its header loads the environment block and
    /// defaults to saved_entry (GRUB_DEFAULT=saved), an entry of the machine's own comes first (GRUB
    /// falls back to it), then what /etc/grub.d/42_layerctl prints.
    func writeGrubMenu(_ disk: Disk, to path: String) throws {
        try BootMachine.shell(
            """
            {
                printf '%s\\n' 'load_env' 'set default="${saved_entry}"' 'set timeout=0'
                printf '%s\\n' "menuentry 'Arch Linux' --id 'arch' {" '    echo "DECOY booted"' '    halt' '}'
                sh '\(disk.grub)/42_layerctl'
            } >'\(path)'
            """)
    }

    @Test("GRUB, started by the firmware, boots the entry of the grub.d script's that `layerctl boot` saved in grubenv, not the menu's first; a unified kernel image too")
    func grubFollowsSavedEntry() throws {
        if let missing = Self.missingLoader("/usr/bin/grub-mkstandalone", package: "grub-efi-amd64-bin") {
            print("StagingTests.grubFollowsSavedEntry skipped: \(missing)")
            return
        }
        let disk = try makeDisk()
        defer { unmount(disk) }
        let append = "console=ttyS0 panic=-1 rd.shell=0 init=/usr/bin/layerctl-probe"
        _ = try layerctl(["stage", machine.image, "--name", "probe", "--append", append] + disk.options)
        try BootMachine.shell("mkdir -p '\(disk.mount)/boot/grub'")
        try writeGrubMenu(disk, to: disk.mount + "/boot/grub/grub.cfg")
        let made = try layerctl(["boot", "probe", "--loader", "grub"] + disk.options)
        #expect(made.stdout.contains("GRUB boots layerctl-probe by default"), "\(made.stdout)")
        let output = try bootThroughGrub(disk, uuid: uuid, prefix: "/boot/grub")
        let probe = Self.probeLines(output)
        let id = String(machine.imageDigest.prefix(12))
        #expect(probe.contains("PROBE env LAYERCTL_IMAGE=/state/probe/\(id).squashfs"), "\(output.suffix(4000))")
        #expect(probe.last == "PROBE done", "\(probe)")

        // A unified kernel image, which GRUB's menu chainloads: its own command line boots the image.
        let staged = try layerctl(
            ["stage", try BootMachine.stubProbe(), "--name", "uki", "--uki", "--append", append, "--json"] + disk.options)
        let object = try JSONSerialization.jsonObject(with: Data(staged.stdout.utf8)) as? [String: Any]
        let ukiID = try #require((object?["staged"] as? [String: Any])?["id"] as? String)
        try writeGrubMenu(disk, to: disk.mount + "/boot/grub/grub.cfg")
        #expect(text(disk.mount + "/boot/grub/grub.cfg").contains("    chainloader /boot/layerctl/uki/\(ukiID)/linux.efi\n"))
        _ = try layerctl(["boot", "uki", "--loader", "grub"] + disk.options)
        let chained = try bootThroughGrub(disk, uuid: uuid, prefix: "/boot/grub")
        let ukiProbe = Self.probeLines(chained)
        #expect(ukiProbe.contains("PROBE env LAYERCTL_IMAGE=/state/uki/\(ukiID).squashfs"), "\(chained.suffix(4000))")
        #expect(ukiProbe.last == "PROBE done", "\(ukiProbe)")
    }
}
