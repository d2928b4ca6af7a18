import Foundation
import Glibc
import LayerStore
import LayerSupport

/// `layerctl shell`: a throwaway root made of a layer's stack under a tmpfs upper, in private
/// namespaces. Whatever the command changes is gone when it exits; the store is never written.
public enum LayerShell {
    struct Job: Codable {
        var name: String
        var trees: [String]
        var directory: String
        var command: [String]
    }

    /// Runs `command` (default: an interactive /bin/sh) in the stack ending at `key`; returns its
    /// exit status.
    public static func run(store: Store, key: String, command: [String]) throws -> Int32 {
        let lock = try store.lock(.shared)
        defer { lock.unlock() }
        let trees = try store.chain(key).map(store.tree)
        let name = try store.record(key).name
        let directory = try store.makeTemporary("shell")
        defer { try? FileSystem.removeTree(directory) }
        let job = Job(name: name, trees: trees, directory: directory, command: command.isEmpty ? ["/bin/sh"] : command)
        let jobPath = directory + "/job.json"
        try FileSystem.writeAtomically(try JSONEncoder().encode(job), to: jobPath)
        // The shell takes over the terminal: it gets our stdin, unlike builders.
        return try NamespacedWork.run(.shell, jobPath: jobPath, interactive: true) { _ in }
    }

    /// Stage one: namespaces named after the layer, then stage two.
    static func enterNamespaces(_ request: NamespacedWork.Request) -> Int32 {
        failing {
            try NamespacedWork.dieWithParent(request)
            let job = try readJob(request.jobPath)
            return try NamespacedWork.enter(request, hostname: job.name, isolateNetwork: false, interactive: true)
        }
    }

    /// Stage two, pid 1: the tmpfs-backed overlay, then the command.
    static func work(_ request: NamespacedWork.Request) -> Int32 {
        failing {
            try NamespacedWork.dieWithParent(request)
            let job = try readJob(request.jobPath)
            let scratch = job.directory + "/scratch"
            try FileSystem.makeDirectories(scratch)
            try Mounter.mount("tmpfs", at: scratch, type: "tmpfs", options: "mode=0755")
            var root = BuildRoot(directory: scratch, lowerTrees: job.trees)
            try root.setUp()
            try root.bindResolvConf()
            let environment = ["PATH=/usr/local/sbin:/usr/local/bin:/usr/bin:/usr/sbin:/bin:/sbin", "HOME=/root",
                               "TERM=\(ProcessInfo.processInfo.environment["TERM"] ?? "dumb")", "LAYERCTL_LAYER=\(job.name)"]
            let path = job.command[0].hasPrefix("/") ? job.command[0] : "/bin/sh"
            let arguments = job.command[0].hasPrefix("/") ? job.command : ["/bin/sh", "-c", job.command.joined(separator: " ")]
            do {
                return waitForExit(try spawnChrooted(root: root.merged, path, arguments, environment: environment))
            } catch let error as SystemError {
                throw SystemError("start \(path) in", job.name, errno: error.errno)
            }
        }
    }

    private static func readJob(_ path: String) throws -> Job {
        guard let data = FileManager.default.contents(atPath: path) else { throw SystemError("read", path, errno: ENOENT) }
        return try JSONDecoder().decode(Job.self, from: data)
    }

    /// The exit status of `body`; an error is reported on the event pipe, for `run` to throw.
    private static func failing(_ body: () throws -> Int32) -> Int32 {
        do { return try body() } catch {
            EventPipe(layer: "shell").send(BuildEvent(failure: error, layer: "shell"))
            return 1
        }
    }
}
