import Alpm
import CLayerSupport
import Foundation
import Glibc

/// The builder child: layerctl re-executed as `layerctl __build-layer JOB`, with the event pipe on
/// fd 3. Stage one moves into new namespaces and starts stage two, which is pid 1 there and does
/// the work; when either dies, the kernel kills the rest and tears every mount down.
public enum BuilderChild {
    /// The hidden subcommand the CLI routes here.
    public static let subcommand = "__build-layer"
    static let innerFlag = "--inner"
    static let parentVariable = "LAYERCTL_BUILDER_PARENT"

    /// Stage one: unshare, make `/` private, name the host after the layer, start stage two.
    public static func enterNamespaces(jobPath: String) -> Int32 {
        let events = EventPipe(fd: 3, layer: "?")
        do {
            try dieWithParent()
            let job = try readJob(jobPath)
            let err = lc_unshare_build_namespaces(job.isolateNetwork ? 1 : 0)
            if err != 0 { throw SystemError("create namespaces for", job.layerName, errno: err) }
            try Mounter.makePrivate("/")
            _ = sethostname(job.layerName, job.layerName.utf8.count)
            let environment = ProcessInfo.processInfo.environment.filter { $0.key != parentVariable }
                .map { "\($0.key)=\($0.value)" } + ["\(parentVariable)=0"]  // pid 1 of a new pid namespace has no parent pid
            let pid = try spawn(
                currentExecutable(), [subcommand, innerFlag, jobPath], environment: environment, eventFD: 3)
            return waitForExit(pid)
        } catch {
            events.send(.failed, "\(error)")
            return 1
        }
    }

    /// Stage two, pid 1 of the new pid namespace: mount, install, write files, run commands,
    /// unmount, normalise, and report what was built.
    public static func build(jobPath: String) -> Int32 {
        var events = EventPipe(fd: 3, layer: "?")
        do {
            try dieWithParent()
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
                result = transaction
                try root.tearDown()
            }
            events.send(.step, "normalise")
            try Normaliser(tree: job.upperDirectory, epoch: job.sourceDateEpoch).run()
            let scan = try TreeScan.scan(job.upperDirectory)
            result.treeBytes = scan.bytes
            result.fileCount = scan.fileCount
            result.treeDigest = scan.digest
            events.send(BuildEvent(.finished, layer: job.layerName, result: result))
            return 0
        } catch {
            events.send(.failed, "\(error)")
            return 1
        }
    }

    private static func readJob(_ path: String) throws -> BuildJob {
        guard let data = FileManager.default.contents(atPath: path) else { throw SystemError("read", path, errno: ENOENT) }
        return try JSONDecoder().decode(BuildJob.self, from: data)
    }

    private static func dieWithParent() throws {
        guard let text = ProcessInfo.processInfo.environment[parentVariable], let parent = pid_t(text) else {
            throw BuildFailure("\(subcommand) is started by `layerctl build`, not by hand")
        }
        let err = lc_die_with_parent(parent)
        if err != 0 { throw BuildFailure("the build was abandoned: its parent process is gone") }
    }
}
