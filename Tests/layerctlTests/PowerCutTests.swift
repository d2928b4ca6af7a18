import Foundation
import Glibc
import LayerEntries
import LayerStore
import LayerSupport
import Testing

/// A power cut, as the shutdown ioctl of ext4 and xfs makes one (what xfstests' `godown` does: the
/// filesystem stops at once and the journal is not flushed, so the disk keeps only what reached it), right
/// after a command said it was done and at moments while it runs. After the filesystem is mounted
/// again, every layer in the store must be whole: its tree scans to the digest its record holds.
@Suite(
    "A power cut leaves every stored layer whole", .serialized,
    .enabled(if: Harness.canBuild, Harness.cannotBuildReason))
struct PowerCutTests {
    /// The filesystem a store is on when the power goes. ext4 with a journal (mkfs's default)
    /// writes a file's data before the metadata that names it (data=ordered), which hides a
    /// rename before the data was synced; without a journal (as this machine's own disk, and as
    /// a FAT boot partition has none), only what was synced is there, and the boot's fsck
    /// repairs the rest. xfs, as Arch users choose it, logs metadata only and allocates data late:
    /// a file renamed into place before its data was synced can come back empty.
    enum FileSystem: String, CaseIterable, CustomTestStringConvertible {
        case ext4, ext4WithoutJournal = "ext4 without a journal", xfs

        var testDescription: String { rawValue }
        var type: String { self == .xfs ? "xfs" : "ext4" }
        var make: String {
            switch self {
            case .ext4: "mkfs.ext4 -q"
            case .ext4WithoutJournal: "mkfs.ext4 -q -O ^has_journal"
            case .xfs: "mkfs.xfs -q"
            }
        }
    }

    /// A filesystem in a file, loop-mounted: the store goes on it.
    struct Disk {
        var file: String
        var mount: String
        var fileSystem: FileSystem
        var store: String { mount + "/store" }

        init(_ fileSystem: FileSystem = .ext4) throws {
            let folder = try Harness.temporaryDirectory("power-cut")
            file = folder + "/fs.img"
            mount = folder + "/mnt"
            self.fileSystem = fileSystem
            _ = try BootMachine.shell(
                """
                truncate -s 1G '\(file)'
                \(fileSystem.make) '\(file)'
                mkdir -p '\(mount)'
                mount -o loop '\(file)' '\(mount)'
                """)
        }

        /// Cuts the power (EXT4_IOC_SHUTDOWN, or XFS_IOC_GOINGDOWN, the same call, with the flag
        /// NOLOGFLUSH): nothing more reaches the disk, not even the journal's open transaction. A
        /// command still running fails on the dead filesystem.
        func cutPower() throws {
            // Only ever this disk: the same call on the folder beneath would stop the host's disk.
            guard let mounted = try MountTable().entries.last(where: { $0.target == mount }),
                mounted.fstype == fileSystem.type, mounted.source.hasPrefix("/dev/loop")
            else { throw MachineError("\(mount) is not the loop-mounted disk; the power stays on") }
            let fd = open(mount, O_RDONLY | O_DIRECTORY)
            guard fd >= 0 else { throw MachineError("open \(mount): errno \(errno)") }
            var flags: UInt32 = 2
            let shutdown: UInt = 0x8004_587D  // _IOR('X', 125, __u32)
            let status = ioctl(fd, shutdown, &flags)
            let failure = errno
            close(fd)
            guard status == 0 else { throw MachineError("the shutdown ioctl on \(mount) (\(fileSystem.type)): errno \(failure)") }
        }

        /// Unmounts what is left and mounts the disk again: the journal (xfs: the log) replays as at the next boot.
        /// The disk comes back on a loop device of its own: a build that another test runs at the
        /// same time may hold the dead filesystem in its mount namespace (this host's mounts are
        /// private, so the unmount does not reach it), and `mount -o loop` would reuse its device,
        /// and with it the dead filesystem. (`losetup -d` of a device in use detaches it when the
        /// mount goes.) xfs refuses a second filesystem of the same UUID while the dead one is held
        /// there ("wrong fs type, bad option"): `nouuid` lets it mount; the log replays all the
        /// same. Returns what e2fsck found and fixed on a disk without a journal, for the messages
        /// of a check that fails.
        @discardableResult
        func remount() throws -> String {
            try BootMachine.shell(
                """
                umount '\(mount)'
                \(fileSystem != .ext4WithoutJournal ? "" : "e2fsck -fy '\(file)' 2>&1 | grep -v '^Pass [0-9]' || [ ${PIPESTATUS[0]} -le 1 ]")
                device=$(losetup --find --show '\(file)')
                mount \(fileSystem == .xfs ? "-o nouuid " : "")"$device" '\(mount)'
                losetup -d "$device"
                """)
        }

        func remove() {
            _ = try? BootMachine.shell("umount '\(mount)' 2>/dev/null || true; rm -rf '\((file as NSString).deletingLastPathComponent)'")
        }
    }

    /// Every layer in the store has its record, and its tree is the one the record describes.
    /// Returns the names of the refs.
    @discardableResult
    static func expectWholeLayers(_ root: String, sourceLocation: SourceLocation = #_sourceLocation) throws -> [String] {
        let store = try Store(root: root)
        for key in try FileManager.default.contentsOfDirectory(atPath: store.layersDirectory) {
            #expect(store.contains(key), "layers/\(key) has no record after the power cut", sourceLocation: sourceLocation)
            guard store.contains(key) else { continue }
            let record = try store.record(key)
            let scanned = try TreeScan.scan(store.tree(key)).digest
            #expect(
                scanned == record.treeDigest,
                "layer \(key.prefix(12)) (\(record.name)) is not whole after the power cut: its tree scans to \(scanned.prefix(12)), its record says \(record.treeDigest.prefix(12))",
                sourceLocation: sourceLocation)
        }
        try Harness.expectValidStore(root, sourceLocation: sourceLocation)
        return try store.refs().map(\.name)
    }

    @Test(
        "a power cut right after a build said it was done keeps every layer it built, whole, and its refs",
        arguments: FileSystem.allCases)
    func afterBuild(fileSystem: FileSystem) throws {
        let disk = try Disk(fileSystem)
        defer { disk.remove() }
        let layers = try Harness.demoLayers()
        let build = try Harness.run(["build", layers + "/gaming.yaml", "--store", disk.store])
        #expect(build.status == 0, "\(build.stderr)")
        try disk.cutPower()
        try disk.remount()
        let refs = try Self.expectWholeLayers(disk.store)
        #expect(refs == ["base", "gaming", "nvidia"], "a build that said it was done lost refs: \(refs)")
    }

    /// Moments of a build of the demo stack, named by the event `build --json` reports there.
    static let moments: [(layer: String, kind: String, message: String?)] = [
        ("base", "step", "transaction"),  // packages being unpacked into the tree
        ("base", "step", "normalise"),  // the tree complete, being scanned before its commit
        ("base", "built", nil),  // base committed; nvidia begins
        ("gaming", "step", "transaction"),
    ]

    @Test(
        "a power cut while a build runs leaves each layer whole or absent, and the next build completes",
        arguments: moments.indices, [FileSystem.ext4, .xfs])
    func duringBuild(moment: Int, fileSystem: FileSystem) throws {
        let (layer, kind, message) = Self.moments[moment]
        let disk = try Disk(fileSystem)
        defer { disk.remove() }
        let layers = try Harness.demoLayers()
        // The power goes when the event appears; the build goes on, and fails.
        var cut = false
        let status = try Harness.runReadingEvents(["build", layers + "/gaming.yaml", "--store", disk.store, "--json"]) {
            event, _ in
            guard !cut, event["layer"] as? String == layer, event["kind"] as? String == kind,
                message == nil || event["message"] as? String == message
            else { return }
            try disk.cutPower()
            cut = true
        }
        #expect(cut, "the build never reported \(kind) \(message ?? "") of \(layer)")
        #expect(status != 0, "the build went on as if the disk had not gone")
        try disk.remount()
        try Self.expectWholeLayers(disk.store)
        let again = try Harness.run(["build", layers + "/gaming.yaml", "--store", disk.store])
        #expect(again.status == 0, "\(again.stderr)")
        try Self.expectWholeLayers(disk.store)
    }

    @Test(
        "a power cut right after a pull said it was done keeps every layer it pulled, whole",
        .enabled(if: RegistryServer.available, RegistryServer.unavailableReason), arguments: FileSystem.allCases)
    func afterPull(fileSystem: FileSystem) throws {
        let built = try ShareTests.builtDemo()
        let registry = try RegistryServer()
        defer { registry.stop() }
        let reference = "\(registry.host)/power/gaming:v1"
        let push = try Harness.run(["push", "gaming", reference, "--store", built])
        #expect(push.status == 0, "\(push.stderr)")
        let disk = try Disk(fileSystem)
        defer { disk.remove() }
        let pull = try Harness.run(["pull", reference, "--store", disk.store])
        #expect(pull.status == 0, "\(pull.stderr)")
        try disk.cutPower()
        try disk.remount()
        let refs = try Self.expectWholeLayers(disk.store)
        #expect(refs == ["gaming"], "a pull that said it was done lost its ref: \(refs)")
        let store = try Store(root: disk.store)
        #expect(try store.chain(try #require(try store.ref("gaming"))).count == 3)
    }

    /// Where `afterStage` stages from: a layer built on the disk, or an image pulled by `stage REF`,
    /// whose export reads the pulled layer while its commit waits for the disk.
    enum StageSource: CustomTestStringConvertible {
        case built, pulled
        var testDescription: String { self == .built ? "a built layer" : "stage REF" }
    }

    @Test(
        "a power cut right after stage said it was done keeps the entry, and the kernel, initramfs and image it names, whole",
        arguments: FileSystem.allCases, [StageSource.built, .pulled])
    func afterStage(fileSystem: FileSystem, source: StageSource) throws {
        var registry: RegistryServer?
        if source == .pulled {
            guard RegistryServer.available else {
                print("PowerCutTests.afterStage(stage REF) skipped: docker-registry is not installed (scripts/install-deps.sh)")
                return
            }
            registry = try RegistryServer()
        }
        defer { registry?.stop() }
        let disk = try Disk(fileSystem)
        defer { disk.remove() }
        let layers = try Harness.demoLayers()
        try """
            from: gaming
            files:
              - path: /boot/vmlinuz-demo
                content: "a stand-in kernel\\n"
              - path: /boot/initramfs-demo.img
                content: "a stand-in initramfs\\n"
            """.write(toFile: layers + "/kernel.yaml", atomically: false, encoding: .utf8)
        let run = try Harness.temporaryDirectory("power-cut-run")
        defer { try? FileManager.default.removeItem(atPath: run) }
        var target = "kernel"
        if let registry {
            // Built elsewhere and pushed; the disk's store gets it from the registry.
            let elsewhere = try Harness.temporaryDirectory("power-cut-elsewhere")
            let build = try Harness.run(["build", layers + "/kernel.yaml", "--store", elsewhere])
            #expect(build.status == 0, "\(build.stderr)")
            target = "\(registry.host)/power/kernel:v1"
            let push = try Harness.run(["push", "kernel", target, "--store", elsewhere])
            #expect(push.status == 0, "\(push.stderr)")
        } else {
            let build = try Harness.run(["build", layers + "/kernel.yaml", "--store", disk.store])
            #expect(build.status == 0, "\(build.stderr)")
        }
        let stage = try Harness.run([
            "stage", target, "--name", "kernel", "--store", disk.store, "--state-dir", disk.mount + "/state", "--boot-dir", disk.mount + "/boot",
            "--no-grub", "--run-dir", run,
        ])
        #expect(stage.status == 0, "\(stage.stderr)")
        try disk.cutPower()
        let fsck = try disk.remount()
        let entry = (try? String(contentsOfFile: disk.mount + "/boot/loader/entries/layerctl-kernel.conf", encoding: .utf8)) ?? ""
        #expect(!entry.isEmpty, "the boot entry that stage wrote is gone")
        #expect(
            (try? String(contentsOfFile: disk.mount + StagingTests.field("linux", of: entry), encoding: .utf8)) == "a stand-in kernel\n",
            "the entry's kernel is not whole: \(entry)\n\(fsck)")
        #expect(
            (try? String(contentsOfFile: disk.mount + StagingTests.field("initrd", of: entry), encoding: .utf8)) == "a stand-in initramfs\n",
            "the entry's initramfs is not whole: \(entry)\n\(fsck)")
        let options = StagingTests.field("options", of: entry)
        let image = options.split(separator: " ").first { $0.hasPrefix("layerctl.image=") }.map { String($0.dropFirst(15)) } ?? "?"
        let verify = options.split(separator: " ").first { $0.hasPrefix("layerctl.verify=sha256:") }.map { String($0.dropFirst(23)) } ?? "?"
        let sha256 = try? BootMachine.shell("sha256sum '\(disk.mount)\(image)' | cut -d' ' -f1").trimmingCharacters(in: .whitespacesAndNewlines)
        #expect(sha256 == verify, "the image the entry names is not the one staged: \(image)")
        try Self.expectWholeLayers(disk.store)
        let stored = try FileManager.default.contentsOfDirectory(atPath: try Store(root: disk.store).layersDirectory)
        #expect(stored.count == 4, "the stack's four layers are not all in the store after the power cut: \(stored.count)")
    }
}
