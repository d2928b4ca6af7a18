import CLayerSupport
import Foundation
import Glibc
import LayerStore
import LayerSupport

/// `layerctl shell`: a throwaway root made of a layer's stack under a tmpfs upper, in private
/// namespaces. Whatever the command changes is gone when it exits; the store is never written.
public enum LayerShell {
    public static let subcommand = "__shell"

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
        // The shell takes over the terminal: stdin must stay ours, so it is not spawned like builders.
        let pid = try spawnInteractive([subcommand, jobPath], environment: Namespaces.environment(parent: getpid()))
        return waitForExit(pid)
    }

    /// Stage one, then two: namespaces, then the tmpfs-backed overlay and the command, as pid 1.
    public static func enter(jobPath: String, inner: Bool) -> Int32 {
        do {
            try Namespaces.dieWithParent()
            guard let data = FileManager.default.contents(atPath: jobPath) else { throw SystemError("read", jobPath, errno: ENOENT) }
            let job = try JSONDecoder().decode(Job.self, from: data)
            if !inner {
                return try Namespaces.enter(
                    hostname: job.name, isolateNetwork: false, arguments: [subcommand, "--inner", jobPath], eventFD: nil,
                    interactive: true)
            }
            let scratch = job.directory + "/scratch"
            try FileSystem.makeDirectories(scratch)
            try Mounter.mount("tmpfs", at: scratch, type: "tmpfs", options: "mode=0755")
            var root = BuildRoot(job: BuildJob.throwaway(name: job.name, directory: scratch, trees: job.trees))
            try root.setUp()
            try root.bindResolvConf()
            var pid: pid_t = 0
            let environment = ["PATH=/usr/local/sbin:/usr/local/bin:/usr/bin:/usr/sbin:/bin:/sbin", "HOME=/root",
                               "TERM=\(ProcessInfo.processInfo.environment["TERM"] ?? "dumb")", "LAYERCTL_LAYER=\(job.name)"]
            let path = job.command[0].hasPrefix("/") ? job.command[0] : "/bin/sh"
            let arguments = job.command[0].hasPrefix("/") ? job.command : ["/bin/sh", "-c", job.command.joined(separator: " ")]
            let err = withCStrings(arguments) { argv in
                withCStrings(environment) { envp in lc_spawn_chrooted(root.merged, path, argv, envp, 0, 1, 2, &pid) }
            }
            if err != 0 { throw SystemError("start \(path) in", job.name, errno: err) }
            return waitForExit(pid)
        } catch {
            FileHandle.standardError.write(Data("layerctl: \(error)\n".utf8))
            return 3
        }
    }
}

extension BuildJob {
    /// A job that only describes a root to mount: no packages, no sync databases.
    static func throwaway(name: String, directory: String, trees: [String]) -> BuildJob {
        BuildJob(
            layerName: name, buildDirectory: directory, lowerTrees: trees, arch: "", repos: [], syncDirectory: "",
            packageCache: "", pacmanLog: "", gpgDirectory: "", install: [], remove: [], expected: [], files: [], run: [],
            env: [], sourceDateEpoch: 0, isolateNetwork: false)
    }
}
