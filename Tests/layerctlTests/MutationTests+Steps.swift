import Foundation
import LayerBoot
import Testing

/// Layer files of a valid shape whose values and steps are a stranger's: paths onto folders, onto
/// the filesystem package's links and into pacman's database, owners the layer lacks, set-id and
/// empty modes, names that mean whiteouts, and steps that break the shell, make whiteouts, hard
/// links, sparse files, FIFOs, devices and names with line breaks. The mutants of `layerFiles`
/// rarely parse, so they never reach the builder, the image or the OCI layer with such a tree.
extension MutationTests {
    /// How many random layer files a run builds, and from which seed: 40 from 23, unless
    /// `LAYERCTL_HOSTILE_LAYERS` and `LAYERCTL_HOSTILE_SEED` say otherwise, to search further by hand.
    static let hostileLayers = ProcessInfo.processInfo.environment["LAYERCTL_HOSTILE_LAYERS"].flatMap { Int($0) } ?? 40
    static let hostileSeed = ProcessInfo.processInfo.environment["LAYERCTL_HOSTILE_SEED"].flatMap { UInt64($0) } ?? 23

    static let hostilePaths = [
        "/etc/x", "/etc", "/usr/bin", "/bin", "/bin/x", "/lib64/x", "/var/run/x", "/etc/localtime", "/etc/hostname/sub",
        "/usr/share/a b", "/opt/ä/ü", "/etc/machine-id", "/var/lib/pacman/local/x", "/usr/bin/busybox",
        String(repeating: "/x", count: 30), "/etc/.wh.hostname", "/etc/.wh..wh..opq", "/root/.ssh/authorized_keys",
        "/usr/lib/os-release", "/home", "/var/lib/pacman/sync/x.db",
    ]

    static let hostileSteps = [
        "mknod /etc/wh c 0 0", "ln /usr/bin/busybox /usr/bin/zz-link", "ln /usr/bin/busybox /aa-link",
        "rm -rf /usr/share/perl5", "rm -f /etc/hostname", "rm -rf /etc || true",
        "mkdir -p /a/b/c && ln -s ../../.. /a/b/c/loop",
        "ln -s /proc/self/root /rootlink", "truncate -s 1T /sparse",
        "dd if=/dev/zero of=/zeros bs=1M count=3 2>/dev/null",
        "mkfifo /fifo", "mkdir -p /n && printf x > \"$(printf '/n/new\\nline')\"", "chmod 000 /etc",
        "chmod 000 /usr/bin/busybox", "chmod 4755 /usr/bin/busybox", "touch -d 2099-01-01 /etc/future",
        "echo changed > /etc/machine-id", "rm -rf /var/lib/pacman/local", "mv /usr/bin /usr/bin2 || true",
        "ln -sf /nonexistent /usr/lib/os-release",
        "mkdir -p /d && for i in $(seq 300); do ln /usr/bin/busybox /d/h$i; done",
        "for i in $(seq 300); do touch /etc/f$i; done", "rm -f /usr/bin/[a-m]* || true", "mknod /blk b 8 0",
        "ln -s \"$(printf 'a%.0s' $(seq 200))\" /longlink", "echo hi > /-n",
        "printf '\\033]0;title\\007' > \"/$(printf 'e\\033[2Jx')\"",
        "chown 12345:54321 /etc/hostname", "chmod 2777 /etc", "ln -s . /selflink", "mkdir /opt/.wh.cache", "exit 3",
        "rm -rf /var/lib/pacman/sync/*", "echo x > /var/lib/pacman/sync/demo.db", "rm -rf /var/lib/pacman/sync",
        "rm -rf /var/lib/pacman",
        "rm -f /var/lib/pacman/sync && mkdir /var/lib/pacman/sync && echo x > /var/lib/pacman/sync/y.db",
        "ln -sfn /etc /var/lib/pacman/sync", "mv /var/lib/pacman /var/lib/pacman.old || true",
        "ulimit -a > /etc/limits",
    ]

    /// `text` as a YAML double-quoted scalar, every control character escaped (YAML allows none in a
    /// file, DEL included, but a tab and a line end), as `layerctl changes` writes its drafts.
    static func quoted(_ text: String) -> String { LayerDraft.quoted(text) }

    /// A layer file on `parent` that picks its packages, removals, env, files and steps at random.
    static func hostileLayer(on parent: String, _ random: inout Random) -> String {
        let packages = [
            "game", "demo-app", "nano", "greeter", "confd", "tool-a", "newtool", "clobber", "shadow", "capped",
        ]
        var lines = ["from: \(parent)"]
        if random.below(10) < 6 {
            lines.append(
                "packages: [\((0...random.below(2)).map { _ in random.pick(packages) }.joined(separator: ", "))]")
        }
        if random.below(10) < 2 {
            lines.append("remove: [\(random.pick(["nano", "greeter", "perl", "busybox", "zlib"]))]")
        }
        if random.below(10) < 3 {
            lines.append("env:")
            for name in Set((0...random.below(2)).map { _ in random.pick(["A", "PATH", "LD_PRELOAD", "HOME", "X_1"]) })
                .sorted()
            {
                lines.append(
                    "  \(name): \(quoted(random.pick(["", "/x", "a b", "é", "$(id)", String(repeating: "x", count: 200)])))"
                )
            }
        }
        if random.below(10) < 6 {
            lines.append("files:")
            for path in Set((0...random.below(3)).map { _ in random.pick(hostilePaths) }).sorted() {
                lines.append("  - path: \(quoted(path))")
                switch random.below(10) {
                case 0..<6:
                    lines.append(
                        "    content: \(quoted(random.pick(["", "x", String(repeating: "a\n", count: 1000), "\u{1}\u{7f}", "é"])))"
                    )
                    if random.below(2) == 0 {
                        lines.append("    mode: \"\(random.pick(["0644", "4755", "1777", "0000", "2755"]))\"")
                    }
                case 6..<9:
                    lines.append(
                        "    link: \(quoted(random.pick(["/usr/bin", "..", "../../../../etc/shadow", "x", "/proc/1/root"])))"
                    )
                default: lines.append("    source: files/nvidia.conf")
                }
                if random.below(2) == 0 {
                    lines.append(
                        "    owner: \(random.pick(["root:root", "1000:1000", "nobody:nobody", "bin:bin", "65534:65534"]))"
                    )
                }
            }
        }
        if random.below(10) < 8 {
            lines.append("run:")
            for _ in 0...random.below(3) { lines.append("  - \(quoted(random.pick(hostileSteps)))") }
        }
        return lines.joined(separator: "\n") + "\n"
    }

    /// What is wrong with a layer that built, or nil: its image must mount and read as the stack,
    /// to `diff` and to the kernel; its OCI layout must unpack, with umoci, to the stack (or be
    /// refused in one line for a name OCI cannot carry); with `check`, its layer file
    /// (`layers/NAME.yaml`) must build again to the same trees and image under another umask, time
    /// zone and locale (`build --check`, some 20 s); and nothing `diff`, `ls` or `inspect` print of it may hold a control byte but a
    /// tab and a line end.
    static func fault(ofBuilt name: String, in layers: String, store: String, work: String, check: Bool) throws
        -> String?
    {
        let image = work + "/image.squashfs"
        try? FileManager.default.removeItem(atPath: image)
        let export = try Harness.run(["export", name, "--store", store, "-o", image])
        if export.status != 0 { return "export: \(export.stderr.suffix(300))" }
        let same = try Harness.run(["diff", image, name, "--store", store])
        if same.status != 0 {
            return "the image is not the stack to diff: \(same.stdout.suffix(300)) \(same.stderr.suffix(300))"
        }
        let mounted = try KernelMount.squashfs(image)
        defer { KernelMount.unmount(mounted) }
        let kernel = try Harness.run(["diff", mounted, name, "--store", store])
        if kernel.status != 0 {
            return "the mounted image is not the stack: \(kernel.stdout.suffix(300)) \(kernel.stderr.suffix(300))"
        }
        let layout = work + "/oci"
        let bundle = work + "/bundle"
        for path in [layout, bundle] { try? FileManager.default.removeItem(atPath: path) }
        let oci = try Harness.run([
            "export", name, "--store", store, "--format", "oci", "--compression", "gzip", "-o", layout,
        ])
        if oci.status == 0 {
            let unpacked = try KernelMount.run("/usr/bin/umoci", ["unpack", "--image", "\(layout):\(name)", bundle])
            if unpacked.status != 0 { return "umoci: \(unpacked.output.suffix(300))" }
            let umoci = try Harness.run(["diff", bundle + "/rootfs", name, "--store", store])
            if umoci.status != 0 {
                return "umoci's tree is not the stack: \(umoci.stdout.suffix(300)) \(umoci.stderr.suffix(300))"
            }
        } else if !(oci.status == 3 && oci.stderr.hasSuffix("rename it in the layer\n")
            && oci.stderr.split(separator: "\n").count == 1)
        {
            return "OCI export: \(oci.stderr.suffix(300))"
        }
        if check {
            let again = try Harness.run(["build", "\(layers)/\(name).yaml", "--store", store, "--check"])
            if again.status != 0 { return "build --check: \(again.stdout.suffix(400)) \(again.stderr.suffix(200))" }
        }
        for command in [
            ["diff", "nvidia", name], ["diff", "nvidia", name, "--name-only"], ["ls"], ["inspect", name],
        ] {
            let result = try Harness.run(command + ["--store", store])
            if result.status > 1 { return "\(command): \(result.stderr.suffix(300))" }
            let raw = Set(
                (result.stdout + result.stderr).unicodeScalars.filter {
                    ($0.value < 0x20 && $0 != "\t" && $0 != "\n") || $0.value == 0x7F
                        || (0x80..<0xA0).contains($0.value)
                })
            if !raw.isEmpty { return "\(command) printed control characters \(raw.map(\.value))" }
        }
        return nil
    }

    /// What is wrong with where a failed build's one line says the fault is, or nil: in one of the
    /// two layer files, at a line and column (each of these files' failures has a place there).
    static func unplaced(_ result: Harness.Result, in layers: String) -> String? {
        guard result.status != 0, let line = result.stderr.split(separator: "\n").last else { return nil }
        for file in ["hostile", "above"] {
            let prefix = "layerctl: \(layers)/\(file).yaml:"
            guard line.hasPrefix(prefix) else { continue }
            let place = line.dropFirst(prefix.count).split(separator: ":", maxSplits: 2)
            if place.count == 3, Int(place[0]) != nil, Int(place[1]) != nil { return nil }
        }
        return "no line and column in the layer file: \(line.prefix(300))"
    }

    @Test(
        "random layer files of valid shape with hostile values and steps end in one short line at their place, or build a layer again the same, whose image the kernel and whose OCI layout umoci read as the stack"
    )
    func hostileLayerFiles() throws {
        let layers = try Harness.demoLayers()
        let store = try Harness.temporaryDirectory("hostile-store")
        let work = try Harness.temporaryDirectory("hostile-work")
        #expect(try Harness.run(["build", layers + "/gaming.yaml", "--store", store]).status == 0)
        var random = Random(state: Self.hostileSeed)
        var faults: [String] = []
        var built = 0
        for number in 0..<Self.hostileLayers {
            // A second layer on the first, half the time: the first's tree is then a lower layer.
            let parent = random.pick(["base", "nvidia", "gaming"])
            try Self.hostileLayer(on: parent, &random).write(
                toFile: layers + "/hostile.yaml", atomically: false, encoding: .utf8)
            var target = "hostile"
            if random.below(2) == 0 {
                try Self.hostileLayer(on: "hostile", &random).write(
                    toFile: layers + "/above.yaml", atomically: false, encoding: .utf8)
                target = "above"
            }
            let result = try Harness.run(["build", "\(layers)/\(target).yaml", "--store", store])
            var fault = try Self.fault(of: result, store: store) ?? Self.unplaced(result, in: layers)
            if fault == nil, result.status == 0 {
                built += 1
                // Every fourth is built twice more, for --check.
                fault = try Self.fault(ofBuilt: target, in: layers, store: store, work: work, check: built % 4 == 1)
            }
            if let fault {
                for file in ["hostile", "above"] where FileManager.default.fileExists(atPath: "\(layers)/\(file).yaml")
                {
                    try FileManager.default.copyItem(
                        atPath: "\(layers)/\(file).yaml", toPath: "\(layers)/fault-\(number)-\(file).yaml")
                }
                faults.append("layer file \(number) (kept in \(layers)/fault-\(number)-*.yaml): \(fault)")
            }
            try? FileManager.default.removeItem(atPath: layers + "/above.yaml")
        }
        print("hostile layer files: \(built) of \(Self.hostileLayers) built (seed \(Self.hostileSeed))")
        #expect(built > 0, "no layer file built: the oracles were never asked")
        #expect(faults.isEmpty, "\(faults.prefix(5).joined(separator: "\n"))")
    }
}
