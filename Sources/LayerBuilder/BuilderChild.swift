import Alpm
import CLayerSupport
import Foundation
import Glibc
import LayerEntries
import LayerSupport

/// The builder child: layerctl re-executed as `layerctl __build-layer JOB`, with the event pipe on
/// fd 3. Stage one moves into new namespaces and starts stage two, which is pid 1 there and does
/// the work; when either dies, the kernel kills the rest and tears every mount down.
public enum BuilderChild {
    /// The hidden subcommand the CLI routes here.
    public static let subcommand = "__build-layer"
    static let innerFlag = "--inner"

    /// Stage one: unshare, make `/` private, name the host after the layer, start stage two.
    public static func enterNamespaces(jobPath: String) -> Int32 {
        do {
            try Namespaces.dieWithParent()
            let job = try readJob(jobPath)
            return try Namespaces.enter(
                hostname: job.layerName, isolateNetwork: job.isolateNetwork,
                arguments: [subcommand, innerFlag, jobPath], eventFD: 3)
        } catch {
            EventPipe(fd: 3, layer: "?").send(.failed, "\(error)")
            return 1
        }
    }

    /// Stage two, pid 1 of the new pid namespace: mount, install, write files, run commands,
    /// unmount, normalise, and report what was built.
    public static func build(jobPath: String) -> Int32 {
        var events = EventPipe(fd: 3, layer: "?")
        do {
            try Namespaces.dieWithParent()
            let job = try readJob(jobPath)
            events = EventPipe(fd: 3, layer: job.layerName)
            var root = BuildRoot(job: job)
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
            let packages = (error as? AlpmError)?.packages
            events.send(BuildEvent(.failed, layer: events.layer, message: "\(error)", packages: packages))
            return 1
        }
    }

    private static func readJob(_ path: String) throws -> BuildJob {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw SystemError("read", path, errno: ENOENT)
        }
        return try JSONDecoder().decode(BuildJob.self, from: data)
    }
}
