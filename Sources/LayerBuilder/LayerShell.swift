import Foundation
import Glibc
import LayerStore
import LayerSupport

/// `layerctl shell`: a throwaway root made of a layer's stack under a tmpfs upper, in private
/// namespaces. Whatever the command changes is gone when it exits; the store is never written.
///
/// The command is the user's, but the binaries it runs are the layers': a stranger's, maybe. So
/// the shell is confined as a build is, in a cgroup of its own with the same limits on processes
/// and memory (`BuildCgroup`). Its throwaway root is on a tmpfs, so everything it writes is
/// memory, and counts.
public enum LayerShell {
    struct Job: Codable {
        var name: String
        var trees: [String]
        var directory: String
        var command: [String]
        /// The cgroup folders the shell's pid 1 moves itself into first.
        var cgroups: [String]?
        /// The memory limit, which is also the size of every tmpfs of the shell's.
        var memoryLimit: Int64?
    }

    /// Runs `command` (default: an interactive /bin/sh) in the stack ending at `key`, with at most
    /// `processes` processes and `memory` bytes (nil: no limit); returns its exit status. Says
    /// through `warning` which limit this host cannot set, and what the kernel did at the memory
    /// limit; through `notRun` why the command could not be run, when it could not (its status is
    /// then 127 or 126, as a shell's).
    public static func run(
        store: Store, key: String, asked: String, command: [String], processes: Int?, memory: Int64?,
        warning: (String) -> Void, notRun: (String) -> Void
    ) throws -> Int32 {
        let lock = try store.lock(.shared)
        defer { lock.unlock() }
        let trees = try store.shownTrees(key)
        let name = try store.name(of: key, asked: asked)
        let directory = try folder(in: store)
        defer { try? FileSystem.removeTree(directory) }
        let made = BuildCgroup.make(processes: processes, memory: memory)
        defer { made.cgroup?.remove() }
        for (controller, why) in made.unlimited {
            warning("the shell's \(controller == .pids ? "processes are" : "memory is") not limited: \(why)")
        }
        let job = Job(
            name: name, trees: trees, directory: directory, command: command.isEmpty ? ["/bin/sh"] : command,
            cgroups: made.cgroup?.folders, memoryLimit: memory)
        let jobPath = directory + "/job.json"
        try FileSystem.writeFile(try JSONEncoder().encode(job), to: jobPath)
        // The shell takes over the terminal: it gets our stdin, unlike builders.
        let status = try NamespacedWork.run(.shell, jobPath: jobPath, network: true, interactive: true) { event in
            if event.kind == .error, let message = event.message { notRun(message) }
            if event.kind == .warning, let message = event.message { warning(message) }
        }
        if let note = made.cgroup?.memoryNote(limit: memory, counted: "it wrote anywhere") {
            warning("the shell " + note)
        }
        return status
    }

    /// The shell's folder: its job, and where its tmpfs is mounted. In the store's `tmp/`, whose
    /// filesystem must hold layer trees; on a read-only store (read-only media, a read-only bind
    /// of someone else's), which `ls`, `inspect`, `diff` and `export` read, in /run, since the
    /// shell writes nothing of its own in the store.
    private static func folder(in store: Store) throws -> String {
        do {
            let directory = try store.makeTemporary("shell")
            do { try store.requireTreeFileSystem(in: directory) } catch {
                try? FileSystem.removeTree(directory)
                throw error
            }
            return directory
        } catch let error as SystemError where error.errno == EROFS {
            var template = Array("/run/layerctl-shell-XXXXXX".utf8CString)
            guard let made = mkdtemp(&template) else { throw SystemError("create a folder in", "/run") }
            return String(cString: made)
        }
    }

    /// pid 1 of the shell's namespaces (named after the layer, with the host's network): the
    /// tmpfs-backed overlay, then the command, confined as a build's commands are.
    static func work(_ request: NamespacedWork.Request) -> Int32 {
        failing {
            // The umask and the limits a build's steps have (`BuilderChild.build`), whatever the
            // caller's: a step tried here runs as it ran in the build.
            umask(0o022)
            let short = try BuildLimits.apply()
            try NamespacedWork.dieWithParent(request)
            if let warning = BuildLimits.warning(short, for: "the shell's command gets") {
                EventPipe(layer: "shell").send(BuildEvent(.warning, layer: "shell", message: warning))
            }
            let job = try NamespacedWork.readJob(Job.self, at: request.jobPath)
            if let folders = job.cgroups { try BuildCgroup(folders: folders).enter() }
            try NamespacedWork.settleNamespaces(hostname: job.name, network: true)
            try FileSystem.makeDirectories(scratch(job))
            let size = job.memoryLimit.map { ",size=\($0)" } ?? ""
            try Mounter.mount("tmpfs", at: scratch(job), type: "tmpfs", options: "mode=0755" + size)
            var root = BuildRoot(directory: scratch(job), lowerTrees: job.trees)
            try root.setUp(resolvConf: true)
            var confinement = Confinement(root: root.merged)
            confinement.tmpfsSize = job.memoryLimit
            if root.canBindResolvConf {
                confinement.binds.append(.init(source: "/etc/resolv.conf", target: "/etc/resolv.conf"))
            }
            try confinement.enter()
            try Confinement.dropPrivileges()
            let environment = [
                "PATH=" + searchPath.joined(separator: ":"), "HOME=/root",
                "TERM=\(ProcessInfo.processInfo.environment["TERM"] ?? "dumb")", "LAYERCTL_LAYER=\(job.name)",
            ]
            let path: String
            do { path = try program(job.command[0], layer: job.name) } catch let error as SystemError {
                return notRun(error, status: 127)
            }
            let arguments = Array(job.command.dropFirst())
            do {
                return waitForExit(try spawn(path, arguments, environment: environment, keepStdin: true))
            } catch let error as SystemError {
                return notRun(
                    SystemError("start \(path) in", job.name, errno: error.errno),
                    status: error.errno == ENOENT ? 127 : 126)
            }
        }
    }

    /// A command the shell could not run, which exits as a shell's would (`sh -c`, `env`, `chroot`,
    /// `docker run`): 127 when it is not there, 126 when it is and cannot be run. The error, one
    /// line, goes to the parent to print.
    private static func notRun(_ error: SystemError, status: Int32) -> Int32 {
        EventPipe(layer: "shell").send(BuildEvent(.error, layer: "shell", message: error.explanation))
        return status
    }

    /// The shell's PATH, as an Arch login shell has it.
    static let searchPath = ["/usr/local/sbin", "/usr/local/bin", "/usr/bin", "/usr/sbin", "/bin", "/sbin"]

    /// The program `name` names, found as a shell finds it: a name with a slash is a path, any other
    /// is looked up in `searchPath`, in the layer (this process's root is the layer's by now). The
    /// arguments then go to it as they were given. (A command that was not a path was run as
    /// `/bin/sh -c` of the words joined with spaces, so `sh -c 'echo hi'` ran `sh -c echo hi`.)
    static func program(_ name: String, layer: String) throws -> String {
        if name.contains("/") { return name }
        for folder in searchPath {
            let candidate = folder + "/" + name
            var st = stat()
            if stat(candidate, &st) == 0 && st.st_mode & S_IFMT == S_IFREG && access(candidate, X_OK) == 0 {
                return candidate
            }
        }
        throw SystemError("find \(name) on the PATH (\(searchPath.joined(separator: ":"))) of", layer, errno: ENOENT)
    }

    /// The tmpfs, mounted in the shell's namespace, that holds the throwaway root's upper folder.
    private static func scratch(_ job: Job) -> String { job.directory + "/scratch" }

    /// The exit status of `body`; an error is reported on the event pipe, for `run` to throw.
    private static func failing(_ body: () throws -> Int32) -> Int32 {
        do { return try body() } catch {
            EventPipe(layer: "shell").send(BuildEvent(failure: error, layer: "shell"))
            return 1
        }
    }
}
