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
}
