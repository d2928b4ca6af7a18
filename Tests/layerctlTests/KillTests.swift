import Foundation
import Glibc
import LayerBuilder
import LayerStore
import Testing

/// `kill -9` of a build at any point leaves a valid store, no mounts on the host, and a next build
/// that makes the same trees as an uninterrupted one.
@Suite("Killed builds", .serialized, .enabled(if: Harness.canBuild, Harness.cannotBuildReason))
struct KillTests {
    /// Starts a build with --json and kills the whole process tree at the first event `trigger` matches.
    func killBuild(
        layers: String, file: String, store: String, trigger: @escaping ([String: Any]) -> Bool, started: (pid_t) -> Void = { _ in }
    ) throws -> Bool {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: Harness.executable)
        process.arguments = ["build", layers + "/" + file, "--store", store, "--json"]
        let out = Pipe()
        process.standardOutput = out
        process.standardError = FileHandle.nullDevice
        try process.run()
        started(process.processIdentifier)
        var killed = false
        var pending = Data()
        while !killed {
            let chunk = out.fileHandleForReading.availableData
            if chunk.isEmpty { break }
            pending.append(chunk)
            while let newline = pending.firstIndex(of: 0x0A) {
                let line = pending[pending.startIndex..<newline]
                pending.removeSubrange(pending.startIndex...newline)
                if let event = try? JSONSerialization.jsonObject(with: line) as? [String: Any], trigger(event) {
                    Self.killTree(process.processIdentifier)
                    killed = true
                    break
                }
            }
        }
        process.waitUntilExit()
        return killed
    }

    /// SIGKILL to a process and all its descendants, parents first, as `kill -9` from a shell would.
    static func killTree(_ pid: pid_t) {
        let children = (try? String(contentsOfFile: "/proc/\(pid)/task/\(pid)/children", encoding: .utf8)) ?? ""
        kill(pid, SIGKILL)
        for child in children.split(separator: " ").compactMap({ pid_t($0) }) { killTree(child) }
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
        let left = Harness.buildCgroups().filter { $0.hasPrefix("\(ProcessLimit.prefix)\(killedPid)-") }
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
}
