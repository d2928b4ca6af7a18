import Foundation
import Glibc
import LayerBuilder
import LayerStore
import Testing

/// `kill -9` of a build at any point leaves a valid store, no mounts on the host, and a next build
/// that makes the same trees as an uninterrupted one.
@Suite("Killed builds", .serialized, .enabled(if: Harness.canBuild, Harness.cannotBuildReason))
struct KillTests {
    /// Starts a build with --json and kills the whole process tree at the first event `trigger`
    /// matches; `killed` gets the build's pid.
    func killBuild(
        layers: String, file: String, store: String, trigger: @escaping ([String: Any]) -> Bool, killed: (pid_t) -> Void = { _ in }
    ) throws -> Bool {
        var done = false
        _ = try Harness.runReadingEvents(["build", layers + "/" + file, "--store", store, "--json"]) { event, process in
            guard !done, trigger(event) else { return }
            Self.killTree(process.processIdentifier)
            killed(process.processIdentifier)
            done = true
        }
        return done
    }

    /// The processes below `pid`, as /proc lists each one's children.
    static func descendants(of pid: pid_t) -> [pid_t] {
        let children = (try? String(contentsOfFile: "/proc/\(pid)/task/\(pid)/children", encoding: .utf8)) ?? ""
        return children.split(separator: " ").compactMap { pid_t($0) }.flatMap { [$0] + descendants(of: $0) }
    }

    /// SIGKILL to a process and all its descendants, parents first, as `kill -9` from a shell would.
    static func killTree(_ pid: pid_t) {
        let below = descendants(of: pid)
        kill(pid, SIGKILL)
        for process in below { kill(process, SIGKILL) }
    }

    func check(trigger: @escaping ([String: Any]) -> Bool, file: String = "gaming.yaml", extra: String? = nil) throws {
        let layers = try Harness.demoLayers()
        if let extra { try Harness.edit(layers + "/gaming.yaml") { $0 + extra } }
        let store = try Harness.temporaryDirectory("store")
        var killedPid: pid_t = 0
        #expect(try killBuild(layers: layers, file: file, store: store, trigger: trigger) { killedPid = $0 }, "the trigger never came")
        Thread.sleep(forTimeInterval: 0.3)  // let the kernel finish tearing the namespaces down
        try Harness.expectValidStore(store)
        // The next build completes and gives the trees an uninterrupted build gives.
        let again = try Harness.run(["build", layers + "/" + file, "--store", store])
        #expect(again.status == 0, "\(again.stderr)")
        let clean = try Harness.temporaryDirectory("store")
        #expect(try Harness.run(["build", layers + "/" + file, "--store", clean]).status == 0)
        let a = try Store(root: store), b = try Store(root: clean)
        for name in ["base", "nvidia", "gaming"] {
            let key = try #require(try a.ref(name))
            #expect(try key == b.ref(name))
            #expect(try a.record(key).treeDigest == b.record(key).treeDigest)
        }
        #expect(try FileManager.default.contentsOfDirectory(atPath: a.tmpDirectory).isEmpty)
        // The killed build's process cgroup went with the next build (its name carries the pid).
        let left = Harness.buildCgroups().filter { ($0 as NSString).lastPathComponent.hasPrefix("\(BuildCgroup.prefix)\(killedPid)-") }
        #expect(left.isEmpty, "\(left)")
        try Harness.expectValidStore(store)
    }

    @Test("during the download of packages")
    func duringDownload() throws {
        try check { $0["kind"] as? String == "downloadStarted" }
    }

    @Test("during the installation of a package")
    func duringInstall() throws {
        try check { ($0["kind"] as? String == "package") && (($0["message"] as? String)?.contains("perl") ?? false) }
    }

    @Test("during a run: command")
    func duringRun() throws {
        try check(
            trigger: { ($0["kind"] as? String == "output") && ($0["message"] as? String == "sleeping") },
            extra: "  - echo sleeping; sleep 1\n")
    }

    /// A process inherits its signal mask: the Swift test runner starts its children with SIGTERM
    /// blocked, and so may any runner or service. layerctl unblocks the signals that stop it, so
    /// `kill` and `timeout` stop a build wherever it was started from.
    @Test("a build started with SIGTERM blocked still stops on SIGTERM, at once, and leaves a valid store")
    func termWhileBlocked() throws {
        let layers = try Harness.demoLayers()
        try Harness.edit(layers + "/gaming.yaml") { $0 + "  - echo sleeping; sleep 60\n" }
        let store = try Harness.temporaryDirectory("store")
        var build: Process?
        var blocked: String?
        var descendants: [pid_t] = []
        _ = try Harness.runReadingEvents(
            ["build", layers + "/gaming.yaml", "--store", store, "--json"], launcher: ["/usr/bin/env", "--block-signal=TERM"]
        ) { event, process in
            guard build == nil, event["kind"] as? String == "output", event["message"] as? String == "sleeping" else { return }
            build = process
            blocked = Harness.processStatus(process.processIdentifier)["SigBlk"]
            descendants = Self.descendants(of: process.processIdentifier)
            kill(process.processIdentifier, SIGTERM)
            // Ignored, the build would end with its step, a minute on; that is no hang of the test.
        }
        let process = try #require(build, "the step never started")
        #expect(process.terminationReason == .uncaughtSignal && process.terminationStatus == SIGTERM,
                "layerctl went on after SIGTERM: \(process.terminationReason) \(process.terminationStatus)")
        // The kernel's word that env does block SIGTERM for what it starts, and that layerctl's
        // own mask, read while it ran, did not.
        let probe = try KernelMount.run("/usr/bin/env", ["--block-signal=TERM", "/bin/grep", "SigBlk", "/proc/self/status"])
        let termBit = UInt64(1) << (SIGTERM - 1)
        let launched = UInt64(probe.output.split(separator: "\t").last?.trimmingCharacters(in: .whitespacesAndNewlines) ?? "", radix: 16)
        #expect(launched.map { $0 & termBit != 0 } == true, "env did not block SIGTERM: \(probe.output)")
        #expect(UInt64(blocked ?? "", radix: 16).map { $0 & termBit == 0 } == true, "layerctl ran with SigBlk \(blocked ?? "unknown")")
        Thread.sleep(forTimeInterval: 0.3)  // let the kernel finish tearing the namespaces down
        // Its children and the step's sleep went with it (a zombie that nobody reaps has gone).
        #expect(descendants.count >= 2, "\(descendants)")
        let alive = descendants.filter { !(Harness.processStatus($0)["State"]?.hasPrefix("Z") ?? true) }
        #expect(alive.isEmpty, "left running: \(alive.map { Harness.link("/proc/\($0)/exe") ?? "?" })")
        try Harness.expectValidStore(store)
        #expect(try Harness.leakedMounts(under: store).isEmpty)
        // The next build, without the minute's sleep, completes.
        try Harness.edit(layers + "/gaming.yaml") { $0.replacingOccurrences(of: "; sleep 60", with: "") }
        let again = try Harness.run(["build", layers + "/gaming.yaml", "--store", store])
        #expect(again.status == 0, "\(again.stderr)")
    }

    /// Runs `command` with its first call of `call` held, and kills the process that made it.
    /// Its pid; nil when it never made the call.
    static func killHeld(at call: String, _ command: [String], trace: String) throws -> pid_t? {
        guard let held = try HeldCall.start(call, command, trace: trace) else { return nil }
        held.kill()
        return held.pid
    }

    /// `stage` of an image file copied it to `incoming.squashfs` under its own name first: killed
    /// while the copy waited for the disk (a Ctrl-C on a slow one), that file stayed, holding the
    /// space, until the next stage of the name. strace holds the copy's fsync, so the kill comes
    /// while the copy is whole and not yet on disk, every time.
    @Test("a stage killed while its copy of an image waits for the disk leaves no part of the image")
    func stageKilledWhileCopying() throws {
        let folder = try Harness.temporaryDirectory("killed-stage")
        try FileManager.default.createDirectory(atPath: folder + "/src/boot", withIntermediateDirectories: true)
        try Data(count: 4 << 20).write(to: URL(fileURLWithPath: folder + "/src/boot/vmlinuz-linux"))
        let made = try KernelMount.run("/usr/bin/mksquashfs", [folder + "/src", folder + "/image.squashfs", "-quiet", "-no-progress"])
        try #require(made.status == 0, "\(made.output)")
        let pid = try Self.killHeld(
            at: "fsync",
            [Harness.executable, "stage", folder + "/image.squashfs", "--state-dir", folder + "/state", "--boot-dir", folder + "/boot", "--no-grub"],
            trace: folder + "/trace")
        #expect(pid != nil, "the stage never reached its fsync")
        // The name's folder was made before the copy began; nothing is in it.
        #expect(try FileManager.default.contentsOfDirectory(atPath: folder + "/state/image") == [])
        // What was killed is no staged image.
        let staged = try Harness.run(["staged", "--state-dir", folder + "/state", "--boot-dir", folder + "/boot"])
        #expect(staged.stdout == "nothing is staged\n", "\(staged.stdout)")
    }

    /// A dir or oci export fills a hidden `.NAME.layerctl-PID` beside its output and renames it into
    /// place; stopped by Ctrl-C or a kill, the whole tree stayed there, hidden, and no later export
    /// (another pid) looked at it. strace holds the rename, so the kill comes when the tree is whole.
    @Test("a dir or oci export killed before its rename leaves a hidden folder that the next export removes; a live process's and another user's stay")
    func exportInterrupted() throws {
        let stack = try CraftedStack("interrupted-export")
        try stack.layer("only") { t in try t.file("file", "content\n") }
        let folder = try Harness.temporaryDirectory("interrupted-export")
        // The first export writes the layer's manifest (by rename); the ones below rename only their output.
        #expect(try Harness.run(["export", "only", "--store", stack.store, "-o", folder + "/first", "--format", "dir"]).status == 0)
        try FileManager.default.removeItem(atPath: folder + "/first")
        let gone = try Harness.pidOfExited()
        for format in ["dir", "oci"] {
            let output = folder + "/" + format
            let exporting = try Self.killHeld(
                at: "rename",
                [Harness.executable, "export", "only", "--store", stack.store, "-o", output, "--format", format],
                trace: folder + "/trace-" + format)
            let pid = try #require(exporting, "\(format): the export never reached its rename")
            let left = "." + format + ".layerctl-\(pid)"
            #expect(try FileManager.default.contentsOfDirectory(atPath: folder).contains(left), "\(format)")
            // Others' names: a process still running (pid 1), and another user's folder.
            let live = folder + "/." + format + ".layerctl-1"
            let others = folder + "/." + format + ".layerctl-\(gone)"
            for name in [live, others] { try FileManager.default.createDirectory(atPath: name, withIntermediateDirectories: false) }
            #expect(chown(others, 65534, 65534) == 0)
            let again = try Harness.run(["export", "only", "--store", stack.store, "-o", output, "--format", format])
            #expect(again.status == 0, "\(format): \(again.stderr)")
            let names = try FileManager.default.contentsOfDirectory(atPath: folder)
            #expect(!names.contains(left), "\(format): \(names)")
            #expect(names.contains("." + format + ".layerctl-1") && names.contains("." + format + ".layerctl-\(gone)"))
        }
    }
}
