import Alpm
import CLayerSupport
import Foundation
import Glibc
import LayerEntries
import LayerSupport

/// The builder child, the `build` role of `NamespacedWork`: it reports on the event pipe. Stage
/// one moves into new namespaces and starts stage two, which is pid 1 there and does the work.
enum BuilderChild {
    /// Stage one: unshare, make `/` private, name the host after the layer, start stage two.
    static func enterNamespaces(_ request: NamespacedWork.Request) -> Int32 {
        do {
            try NamespacedWork.dieWithParent(request)
            let job = try readJob(request.jobPath)
            return try NamespacedWork.enter(request, hostname: job.layerName, isolateNetwork: job.isolateNetwork)
        } catch {
            EventPipe(layer: "?").send(BuildEvent(failure: error, layer: "?"))
            return 1
        }
    }

    /// Stage two, pid 1 of the new pid namespace: mount, install, write files, run commands,
    /// unmount, normalise, and report what was built.
    static func build(_ request: NamespacedWork.Request) -> Int32 {
        var events = EventPipe(layer: "?")
        do {
            try NamespacedWork.dieWithParent(request)
            let job = try readJob(request.jobPath)
            events = EventPipe(layer: job.layerName)
            // libalpm runs scriptlets with this process's environment: make it theirs, not the
            // caller's. The proxy settings stay, for the downloads libalpm makes first.
            let proxies = ProcessInfo.processInfo.environment.filter { Self.proxyVariables.contains($0.key.lowercased()) }
            clearenv()
            for (name, value) in job.commandEnvironment.merging(proxies, uniquingKeysWith: { kept, _ in kept }) {
                setenv(name, value, 1)
            }
            var root = job.root
            var result: ChildResult
            do {
                events.send(.step, "mount")
                try root.setUp()
                let transaction = try install(job, events: events)
                events.send(.step, "files")
                try writeFiles(job, into: root.merged)
                if !job.run.isEmpty {
                    events.send(.step, "run")
                    try root.bindResolvConf()
                    try runCommands(job, in: root.merged, events: events)
                }
                if let boot = job.boot {
                    events.send(.step, "boot")
                    try addBootSupport(boot, job, in: root.merged, events: events)
                }
                result = transaction
                try root.tearDown()
            }
            events.send(.step, "normalise")
            try Normaliser(tree: job.upperDirectory, epoch: job.sourceDateEpoch).run()
            let scan = try TreeScan.scan(job.upperDirectory)
            result.treeBytes = scan.bytes
            result.fileCount = scan.fileCount
            result.treeDigest = scan.digest
            result.opaqueDirectories = scan.opaqueDirectories
            try scan.manifest.write(to: job.buildDirectory + "/layer/" + LayerManifest.fileName)
            events.send(BuildEvent(.finished, layer: job.layerName, result: result))
            return 0
        } catch {
            events.send(BuildEvent(failure: error, layer: events.layer))
            return 1
        }
    }

    /// The variables libcurl reads for a proxy, in either case.
    static let proxyVariables: Set<String> = ["http_proxy", "https_proxy", "ftp_proxy", "all_proxy", "no_proxy"]

    private static func readJob(_ path: String) throws -> BuildJob {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw SystemError("read", path, errno: ENOENT)
        }
        return try JSONDecoder().decode(BuildJob.self, from: data)
    }
}
