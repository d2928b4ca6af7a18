import Foundation
import Glibc
import Testing

/// Boots a demo image in QEMU through boot/'s dracut module and mkinitcpio hook: the image as a file
/// on an ext4 disk found by UUID, as a whole disk and in RAM, a tmpfs that forgets, and each failure
/// with its one line.
@Suite(
    "Booting images", .serialized,
    .enabled(if: BootMachine.missing == nil, Comment(rawValue: BootMachine.missing ?? "")))
struct BootTests {
    let machine: BootMachine
    let device = "layerctl.device=UUID=\(BootMachine.diskUUID)"
    let probe = "init=/usr/bin/layerctl-probe"

    init() throws { machine = try BootMachine.shared.get() }

    /// The console lines that start with `prefix`, or hold it after a logger's tag (systemd's
    /// journal shows a hook's output as `[time] dracut-mount[170]: layerctl: …`).
    func lines(_ output: String, _ prefix: String) -> [String] {
        output.split(whereSeparator: \.isNewline).compactMap { line in
            let text = line.trimmingCharacters(in: .whitespaces)
            if text.hasPrefix(prefix) { return text }
            guard let tag = text.range(of: "]: " + prefix) else { return nil }
            return String(text[text.index(tag.lowerBound, offsetBy: 3)...])
        }
    }

    /// Checks a boot that reached the probe with `/` an overlay of the image and the tmpfs.
    func expectBooted(_ output: String, image: String, sourceLocation: SourceLocation = #_sourceLocation) {
        let probe = lines(output, "PROBE")
        #expect(
            probe.contains("PROBE mount / overlay layerctl"), "\(output.suffix(4000))", sourceLocation: sourceLocation)
        #expect(
            probe.contains("PROBE mount /run/layerctl/image squashfs \(image)"), "\(probe)",
            sourceLocation: sourceLocation)
        #expect(
            probe.contains("PROBE mount /run/layerctl/rw tmpfs layerctl-rw"), "\(probe)", sourceLocation: sourceLocation
        )
        #expect(probe.contains("PROBE wrote /probe-was-here"), "\(probe)", sourceLocation: sourceLocation)
        #expect(probe.last == "PROBE done", "\(probe)", sourceLocation: sourceLocation)
    }

    /// Checks a boot that stopped with layerctl's one line, before any init of the image ran.
    func expectStopped(_ output: String, _ line: String, sourceLocation: SourceLocation = #_sourceLocation) {
        #expect(
            lines(output, "layerctl: ").first == "layerctl: " + line, "\(output.suffix(4000))",
            sourceLocation: sourceLocation)
        #expect(lines(output, "PROBE").isEmpty, sourceLocation: sourceLocation)
        #expect(
            output.contains("Kernel panic") || output.contains("INIT emergency shell")
                || output.contains("reboot: Power down"), sourceLocation: sourceLocation)
    }

    @Test("dracut: the image file on an ext4 disk found by UUID boots, and a second boot forgets what the first wrote")
    func imageFileByUUID() throws {
        for boot in 1...2 {
            let output = try machine.boot(
                .dracut, disks: [(machine.disk, false)],
                append: "layerctl.image=\(BootMachine.imagePath) \(device) \(probe)")
            expectBooted(output, image: "/dev/loop0")
            #expect(lines(output, "PROBE").contains("PROBE clean"), "boot \(boot) saw a file an earlier boot wrote")
            #expect(lines(output, "PROBE").contains("PROBE mount /run/layerctl/device ext4 /dev/vda"))
            #expect(lines(output, "PROBE").contains("PROBE env LAYERCTL_DEVICE_NODE=/dev/vda"))
        }
    }

    @Test("dracut: root= names the device when layerctl.device= is absent, and toram=1 with verify= boots from RAM")
    func toRAM() throws {
        let output = try machine.boot(
            .dracut, disks: [(machine.disk, true)],
            append:
                "layerctl.image=\(BootMachine.imagePath) root=UUID=\(BootMachine.diskUUID) layerctl.toram=1 layerctl.verify=sha256:\(machine.imageDigest) \(probe)"
        )
        expectBooted(output, image: "/dev/loop0")
        let probe = lines(output, "PROBE")
        #expect(probe.contains("PROBE mount /run/layerctl/ram tmpfs layerctl-ram"), "\(probe)")
        #expect(
            !probe.contains { $0.hasPrefix("PROBE mount /run/layerctl/device") },
            "the device is still mounted: \(probe)")
    }

    @Test("dracut: an image that is a whole block device boots")
    func wholeDevice() throws {
        let output = try machine.boot(
            .dracut, disks: [(machine.image, true)], append: "layerctl.image=/dev/vda \(probe)")
        expectBooted(output, image: "/dev/vda")
    }

    @Test("dracut: a wrong layerctl.verify= stops the boot with its line")
    func wrongChecksum() throws {
        let wrong = String(repeating: "0", count: 64)
        let output = try machine.boot(
            .dracut, disks: [(machine.disk, true)],
            append: "layerctl.image=\(BootMachine.imagePath) \(device) layerctl.verify=sha256:\(wrong) \(probe)")
        expectStopped(
            output,
            "verify of image \(BootMachine.imagePath) failed: its sha256 is \(machine.imageDigest), not \(wrong)")
    }

    @Test(
        "dracut: a missing image, a device that never appears, junk, an unknown overlay and no init each stop the boot with their line"
    )
    func failures() throws {
        let missing = try machine.boot(
            .dracut, disks: [(machine.disk, true)], append: "layerctl.image=/images/missing.squashfs \(device) \(probe)"
        )
        expectStopped(
            missing,
            "image /images/missing.squashfs failed: no such file on UUID=\(BootMachine.diskUUID) (/dev/vda)")

        let absent = "UUID=00000000-0000-4000-8000-000000000000"
        let noDevice = try machine.boot(
            .dracut, disks: [(machine.disk, true)],
            append: "layerctl.image=\(BootMachine.imagePath) layerctl.device=\(absent) layerctl.timeout=2 \(probe)")
        expectStopped(noDevice, "device \(absent) failed: it did not appear within 2 s")

        let junk = try machine.boot(
            .dracut, disks: [(machine.junkDisk, true)],
            append: "layerctl.image=\(BootMachine.imagePath) \(device) \(probe)")
        #expect(
            lines(junk, "layerctl: ").first?.hasPrefix("layerctl: mount of image \(BootMachine.imagePath) failed: ")
                == true,
            "\(junk.suffix(3000))")
        #expect(lines(junk, "PROBE").isEmpty)

        let overlay = try machine.boot(
            .dracut, disks: [(machine.disk, true)],
            append: "layerctl.image=\(BootMachine.imagePath) \(device) layerctl.overlay=disk \(probe)")
        expectStopped(
            overlay, "layerctl.overlay=disk failed: the writes can only go to a tmpfs (layerctl.overlay=tmpfs)")

        let noInit = try machine.boot(
            .dracut, disks: [(machine.disk, true)],
            append: "layerctl.image=\(BootMachine.imagePath) \(device) init=/sbin/nothing")
        expectStopped(noInit, "image \(BootMachine.imagePath) failed: it has no /sbin/nothing to start")
    }

    @Test(
        "dracut with systemd as the initramfs's init: the image boots, and a missing image stops the boot with its line"
    )
    func dracutWithSystemd() throws {
        let output = try machine.boot(
            .dracutSystemd, disks: [(machine.disk, true)],
            append: "layerctl.image=\(BootMachine.imagePath) \(device) \(probe)")
        expectBooted(output, image: "/dev/loop0")
        let failed = try machine.boot(
            .dracutSystemd, disks: [(machine.disk, true)],
            append: "rd.emergency=poweroff layerctl.image=/images/missing.squashfs \(device) \(probe)")
        expectStopped(
            failed, "image /images/missing.squashfs failed: no such file on UUID=\(BootMachine.diskUUID) (/dev/vda)")
    }

    @Test(
        "mkinitcpio with systemd as the initramfs's init (sd-layerctl): the image boots, with root= naming its device too, and a missing image stops the boot with its line"
    )
    func mkinitcpioWithSystemd() throws {
        let output = try machine.boot(
            .mkinitcpioSystemd, disks: [(machine.disk, true)],
            append: "layerctl.image=\(BootMachine.imagePath) \(device) \(probe)")
        expectBooted(output, image: "/dev/loop0")
        // root= names the device that holds the image: systemd-fstab-generator makes a sysroot.mount
        // of it, which must not mount that device as the root while layerctl's service copies the
        // image to RAM and checks it (slow for a big image), nor on top after.
        let byRoot = try machine.boot(
            .mkinitcpioSystemd, disks: [(machine.disk, true)],
            append:
                "layerctl.image=\(BootMachine.imagePath) root=UUID=\(BootMachine.diskUUID) layerctl.toram=1 layerctl.verify=sha256:\(machine.imageDigest) \(probe)"
        )
        expectBooted(byRoot, image: "/dev/loop0")
        #expect(lines(byRoot, "PROBE").contains("PROBE mount /run/layerctl/ram tmpfs layerctl-ram"))
        // The overlay on top would still boot, over the device mounted where no one sees it.
        let rootMount = byRoot.split(whereSeparator: \.isNewline).filter { $0.contains("sysroot.mount") }
        #expect(rootMount.isEmpty, "systemd mounted root= on /sysroot: \(rootMount)")
        let failed = try machine.boot(
            .mkinitcpioSystemd, disks: [(machine.disk, true)],
            append: "layerctl.image=/images/missing.squashfs \(device) \(probe)")
        expectStopped(
            failed, "image /images/missing.squashfs failed: no such file on UUID=\(BootMachine.diskUUID) (/dev/vda)")
    }

    /// The lines of init, the hooks, layerctl's and the errors, in the order they came. A kernel
    /// message can land inside one on the shared console ("INIT root=/dev/vda[    1.873583]
    /// clocksource: …"), and is cut off.
    func initLines(_ output: String) -> [String] {
        let lines = output.split(whereSeparator: \.isNewline).map { line in
            let kernel = line.range(of: #"\[ *[0-9]+\.[0-9]+\] "#, options: .regularExpression)
            return (kernel.map { line[..<$0.lowerBound] } ?? line).trimmingCharacters(in: .whitespaces)
        }
        return lines.filter { $0.hasPrefix("INIT ") || $0.hasPrefix("layerctl: ") || $0.hasPrefix("ERROR") }
    }

    @Test(
        "mkinitcpio: the runtime hook hands init the image's device, found within layerctl.timeout=, for its wait and its fsck"
    )
    func mkinitcpioHook() throws {
        // The words `layerctl stage` writes: the image file, and the device that holds it by UUID.
        let output = try machine.boot(
            .mkinitcpio, disks: [(machine.disk, true)],
            append: "layerctl.image=\(BootMachine.imagePath) \(device) \(probe)")
        #expect(
            initLines(output) == [
                "INIT run_hook of layerctl", "INIT root=/dev/vda", "INIT fsck -Ta /dev/vda",
                "INIT layerctl_mount_handler mounted /new_root",
            ],
            "\(output.suffix(4000))")
        expectBooted(output, image: "/dev/loop0")
        #expect(lines(output, "PROBE").contains("PROBE mount /run/layerctl/device ext4 /dev/vda"))

        // A whole-device image: fsck is asked about the image itself (a squashfs: no checker, it passes).
        let whole = try machine.boot(
            .mkinitcpio, disks: [(machine.image, true)], append: "layerctl.image=/dev/vda root=/dev/sdz \(probe)")
        #expect(
            initLines(whole) == [
                "INIT run_hook of layerctl", "INIT root=/dev/vda", "INIT fsck -Ta /dev/vda",
                "INIT layerctl_mount_handler mounted /new_root",
            ],
            "\(whole.suffix(4000))")
        expectBooted(whole, image: "/dev/vda")
    }

    @Test(
        "mkinitcpio: a device that never appears costs layerctl.timeout= alone, and each failure shows after the emergency hooks"
    )
    func mkinitcpioFailures() throws {
        let absent = "UUID=00000000-0000-4000-8000-000000000000"
        let noDevice = try machine.boot(
            .mkinitcpio, disks: [(machine.disk, true)],
            append: "layerctl.image=\(BootMachine.imagePath) layerctl.device=\(absent) layerctl.timeout=2 \(probe)")
        // init's own wait (rootdelay=, 10 s) would show as "INIT waiting up to 10 s for …".
        #expect(
            initLines(noDevice) == [
                "INIT run_hook of layerctl", "INIT run_emergencyhook of splash", "INIT splash screen stopped",
                "layerctl: device \(absent) failed: it did not appear within 2 s", "INIT emergency shell",
            ],
            "\(noDevice.suffix(4000))")
        expectStopped(noDevice, "device \(absent) failed: it did not appear within 2 s")

        let missing = try machine.boot(
            .mkinitcpio, disks: [(machine.disk, true)],
            append: "layerctl.image=/images/missing.squashfs \(device) \(probe)")
        let line = "image /images/missing.squashfs failed: no such file on UUID=\(BootMachine.diskUUID) (/dev/vda)"
        #expect(
            initLines(missing) == [
                "INIT run_hook of layerctl", "INIT root=/dev/vda", "INIT fsck -Ta /dev/vda",
                "INIT run_emergencyhook of splash", "INIT splash screen stopped", "layerctl: " + line,
                "INIT emergency shell",
            ],
            "\(missing.suffix(4000))")
        expectStopped(missing, line)
    }

    /// A root layer with Debian's systemd, and a target to boot to: sysinit.target, where the units
    /// of a first boot and those with `ConditionNeedsUpdate=` run, then a poweroff.
    static let systemdLayer =
        Harness.demoRoot(["filesystem", "busybox", "glibc", "systemd"]) + """
        files:
          - path: /etc/systemd/system/layerctl-probe.target
            content: |
              [Unit]
              Description=The boot test's probe
              Requires=sysinit.target layerctl-probe.service
              After=sysinit.target layerctl-probe.service
          - path: /etc/systemd/system/layerctl-probe.service
            content: |
              [Unit]
              Description=The boot test's poweroff
              After=sysinit.target
              [Service]
              Type=oneshot
              ExecStart=/usr/bin/systemctl --no-block poweroff

        """

    @Test(
        "systemd boots an image through the hook as a machine it has seen before: no first boot (presets, the First Boot Wizard waiting at the console), and nothing to update (sysusers)"
    )
    func systemdBoot() throws {
        let folder = try Harness.temporaryDirectory("systemd-boot")
        try Self.systemdLayer.write(toFile: folder + "/systemd.yaml", atomically: false, encoding: .utf8)
        let image = folder + "/systemd.squashfs"
        let built = try Harness.run([
            "build", folder + "/systemd.yaml", "--store", folder + "/store", "-o", image, "--compression", "zstd:3",
        ])
        #expect(built.status == 0, "\(built.stderr)")
        let output = try machine.boot(
            kernel: BootMachine.fastKernel, initrd: machine.dracutInitrd, disks: [(image, true)],
            append: "layerctl.image=/dev/vda init=/usr/lib/systemd/systemd systemd.unit=layerctl-probe.target systemd.log_target=console")
        #expect(output.contains("systemd 252") && output.contains("running in system mode"), "\(output.suffix(4000))")
        #expect(output.contains("Reached target") && output.contains("System Power Off."), "\(output.suffix(4000))")
        // With an `uninitialized` machine id, every boot of an image was its first: systemd preset
        // every unit and the First Boot Wizard asked for a locale at the console until the test's
        // time ran out. Without the update stamps, sysusers ran at every boot (Debian's has
        // ConditionNeedsUpdate=/etc).
        for line in ["Detected first boot.", "Populated /etc with preset unit settings.", "First Boot Wizard", "Create System Users"] {
            #expect(!output.contains(line), "\(line): \(output.suffix(4000))")
        }
    }
}

/// `layerctl vm`: the image on a virtio disk, booted with its own kernel and initramfs.
@Suite(
    "layerctl vm", .serialized, .enabled(if: BootMachine.missing == nil, Comment(rawValue: BootMachine.missing ?? "")))
struct VMTests {
    let machine: BootMachine

    init() throws { machine = try BootMachine.shared.get() }

    @Test("vm boots a built layer with the kernel and initramfs from the image's /boot")
    func bootsLayer() throws {
        let result = try Harness.run([
            "vm", "probe", "--store", machine.store, "--memory", "768M", "--no-network",
            "--append", "panic=-1 rd.shell=0", "--append", "init=/usr/bin/layerctl-probe",
        ])
        #expect(result.status == 0, "\(result.stderr)")
        #expect(
            result.stderr.contains("with the image's /boot/vmlinuz-linux and the image's /boot/initramfs-linux.img"))
        let probe = result.stdout.split(whereSeparator: \.isNewline).map { $0.trimmingCharacters(in: .whitespaces) }
            .filter { $0.hasPrefix("PROBE") }
        #expect(probe.contains("PROBE mount / overlay layerctl"), "\(result.stdout.suffix(4000))")
        #expect(probe.contains("PROBE mount /run/layerctl/image squashfs /dev/vda"), "\(probe)")
        #expect(probe.last == "PROBE done", "\(probe)")
    }

    @Test("vm --print-command shows the QEMU command: the image read-only as vda, found by layerctl.image=/dev/vda")
    func printsCommand() throws {
        let result = try Harness.run([
            "vm", machine.image, "--print-command", "--kernel", "/k", "--initrd", "/i", "--append", "quiet",
        ])
        #expect(result.status == 0, "\(result.stderr)")
        #expect(
            result.stdout.contains("-drive file=\(machine.image),format=raw,if=virtio,readonly=on"), "\(result.stdout)")
        #expect(result.stdout.contains("-append 'console=ttyS0 layerctl.image=/dev/vda quiet'"), "\(result.stdout)")
        #expect(result.stdout.contains("-kernel /k -initrd /i"), "\(result.stdout)")
    }

    /// An image file is read whole first, and its /boot is then read by the same reader.
    @Test("vm IMAGE takes the kernel and initramfs out of the image file's /boot, and they are gone when it ends")
    func bootFilesOfImageFile() throws {
        let folder = try Harness.temporaryDirectory("vm-file")
        try FileManager.default.createDirectory(atPath: folder + "/src/boot", withIntermediateDirectories: true)
        let kernel = Data((0..<300_000).map { UInt8(truncatingIfNeeded: $0 &* 7) })
        try kernel.write(to: URL(fileURLWithPath: folder + "/src/boot/vmlinuz-linux"))
        try Data(repeating: 0x5A, count: 70_000).write(
            to: URL(fileURLWithPath: folder + "/src/boot/initramfs-linux.img"))
        let image = folder + "/boot.squashfs"
        let made = try Harness.run([folder + "/src", image, "-quiet", "-no-progress"], tool: "/usr/bin/mksquashfs")
        #expect(made.status == 0, "\(made.stderr)")
        let printed = try Harness.run(["vm", image, "--print-command", "--json"])
        #expect(printed.status == 0, "\(printed.stderr)")
        let object = try JSONSerialization.jsonObject(with: Data(printed.stdout.utf8)) as? [String: Any]
        let command = try #require(object?["command"] as? [String])
        let kernelPath = try #require(command.firstIndex(of: "-kernel").map { command[$0 + 1] })
        let initrdPath = try #require(command.firstIndex(of: "-initrd").map { command[$0 + 1] })
        #expect(kernelPath.hasPrefix("/var/tmp/layerctl-vm-") && initrdPath.hasPrefix("/var/tmp/layerctl-vm-"))
        #expect(
            !FileManager.default.fileExists(atPath: kernelPath) && !FileManager.default.fileExists(atPath: initrdPath))
    }

    /// QEMU reads `-drive file=NAME,…` as options: a comma in the image's name ended the name, and
    /// what followed was an option (`b,readonly=off.squashfs`).
    @Test("vm hands QEMU an image whose name holds commas and an option's words, and QEMU opens that file")
    func commaInImageName() throws {
        let folder = try Harness.temporaryDirectory("comma")
        let image = folder + "/b,readonly=off,if=ide.squashfs"
        try FileManager.default.copyItem(atPath: machine.image, toPath: image)
        let printed = try Harness.run([
            "vm", image, "--print-command", "--json", "--kernel", BootMachine.kernelDirectory + "/vmlinuz", "--initrd",
            machine.dracutInitrd,
        ])
        #expect(printed.status == 0, "\(printed.stderr)")
        let object = try JSONSerialization.jsonObject(with: Data(printed.stdout.utf8)) as? [String: Any]
        let command = try #require(object?["command"] as? [String])
        // Paused (-S), QEMU makes the machine and opens its disk, then waits; an option it cannot
        // take ends it at once, with its message.
        let qemu = Process()
        qemu.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        qemu.arguments = [command[0]] + command.dropFirst().filter { $0 != "-nographic" } + ["-display", "none", "-S"]
        let messages = folder + "/qemu.stderr"
        _ = FileManager.default.createFile(atPath: messages, contents: nil)
        qemu.standardInput = FileHandle.nullDevice
        qemu.standardOutput = FileHandle.nullDevice
        qemu.standardError = try FileHandle(forWritingTo: URL(fileURLWithPath: messages))
        try qemu.run()
        defer {
            // SIGKILL: QEMU inherits the test runner's blocked SIGTERM.
            kill(qemu.processIdentifier, SIGKILL)
            qemu.waitUntilExit()
        }
        let pid = qemu.processIdentifier
        var opened: [String] = []
        for _ in 0..<600 where qemu.isRunning && !opened.contains(image) {
            Thread.sleep(forTimeInterval: 0.1)
            opened = ((try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/fd")) ?? []).compactMap {
                Harness.link("/proc/\(pid)/fd/" + $0)
            }
        }
        #expect(opened.contains(image), "QEMU: \((try? String(contentsOfFile: messages, encoding: .utf8)) ?? "")")
    }

    @Test("vm of an image without a kernel in /boot, and of an unknown layer, each fail with one line")
    func errors() throws {
        let noKernel = try Harness.run(["vm", "gaming", "--store", machine.store, "--print-command"])
        #expect(noKernel.status == 3)
        // Named as the user named it: the export it was made into is a temporary file.
        #expect(
            noKernel.stderr.hasPrefix("layerctl: gaming has no kernel and initramfs in /boot"), "\(noKernel.stderr)")
        let unknown = try Harness.run(["vm", "no-such-layer", "--store", machine.store])
        #expect(unknown.status == 3)
        #expect(unknown.stderr.contains("no-such-layer"), "\(unknown.stderr)")
        let corrupt = try Harness.run(["vm", machine.junkDisk, "--print-command"])
        #expect(corrupt.status == 3)
        #expect(corrupt.stderr.contains("read \(machine.junkDisk) as a squashfs image"), "\(corrupt.stderr)")
    }

    /// A machine without QEMU: vm says what to install before it looks up, exports or pulls
    /// anything, and --print-command, which runs nothing, still prints the command.
    @Test(
        "vm on a machine without QEMU fails with one line naming the package, before anything else; --print-command still works"
    )
    func withoutQEMU() throws {
        // QEMU hidden in a mount namespace of its own.
        func vm(_ arguments: [String]) throws -> Harness.Result {
            try Harness.runWithout("qemu-system-x86_64", ["vm"] + arguments)
        }
        // A layer that is not there: the check comes before the lookup, as before an export.
        let missing = try vm(["no-such-layer", "--store", machine.store])
        #expect(missing.status == 8, "\(missing.stderr)")
        #expect(
            missing.stderr
                == "layerctl: qemu-system-x86_64 is not installed (Debian: apt install qemu-system-x86; Arch: pacman -S qemu-base)\n",
            "\(missing.stderr)")
        let printed = try vm([machine.image, "--print-command"])
        #expect(printed.status == 0, "\(printed.stderr)")
        #expect(printed.stdout.hasPrefix("qemu-system-x86_64 "), "\(printed.stdout)")
    }
}
