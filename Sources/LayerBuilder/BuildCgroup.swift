import Foundation
import Glibc
import LayerSupport

/// The cgroup that holds one layer's build, so that what a layer file or a package runs cannot take
/// the host's processes or memory. At most `processes` processes at once: a fork bomb in a `run:`
/// step or a scriptlet fails inside the build (its `fork` gets EAGAIN) instead of filling the
/// host's process table. At most `memory` bytes of memory, without swap, counting what the build
/// writes to its tmpfs folders (`/tmp`, `/run`, `/dev/shm`): past it the kernel ends a process of
/// the build, not of the host. Files on a tmpfs are no process's, so without the limit a step that
/// filled them would leave the host's OOM killer only the host's processes to end.
///
/// With cgroup v2, one folder beside layerctl's own; on a v1 host, a folder of the same name in
/// the pids and in the memory hierarchy, below layerctl's own cgroup in each. The builder child
/// moves itself in before it starts anything, so everything the build runs is counted; the parent
/// removes the folders once all of it is gone.
package struct BuildCgroup {
    /// One folder per hierarchy the build is in (one with cgroup v2).
    package let folders: [String]
    /// The folder whose memory is limited, and the file in it that counts the OOM killer's work
    /// (`memory.events` with v2, `memory.oom_control` with v1; both have an `oom_kill N` line).
    let memoryEvents: String?

    package init(folders: [String], memoryEvents: String? = nil) {
        self.folders = folders
        self.memoryEvents = memoryEvents
    }

    package static let prefix = "layerctl-build-"

    package enum Controller: String, CaseIterable {
        case pids, memory
    }

    package struct Unavailable: Error {
        package var text: String
    }

    /// Makes the cgroup, with each limit that is not nil. Also says, for each limit this host
    /// cannot set (no such controller mounted, or a cgroup tree root may not write), why: the build
    /// runs without that one. nil when it could set none.
    static func make(processes: Int?, memory: Int64?) -> (cgroup: BuildCgroup?, unlimited: [(Controller, String)]) {
        var wanted: [(Controller, String)] = []
        if let processes { wanted.append((.pids, "\(processes)")) }
        if let memory { wanted.append((.memory, "\(memory)")) }
        let name = "\(prefix)\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        var folders: [String] = []
        var memoryEvents: String?
        var unlimited: [(Controller, String)] = []
        for (controller, value) in wanted {
            let base: String
            switch parentFolder(controller) {
            case .success(let folder): base = folder
            case .failure(let why):
                unlimited.append((controller, why.text))
                continue
            }
            let path = base + "/" + name
            do {
                if !folders.contains(path) {
                    sweep(base)
                    guard mkdir(path, 0o755) == 0 else { throw SystemError("make the cgroup", path) }
                    folders.append(path)
                }
                switch controller {
                case .pids:
                    try write(value, to: path + "/pids.max")
                case .memory where unified:
                    try write(value, to: path + "/memory.max")
                    // Absent where the kernel has no swap accounting; then there is nothing to keep.
                    if FileSystem.exists(path + "/memory.swap.max") { try write("0", to: path + "/memory.swap.max") }
                    memoryEvents = path + "/memory.events"
                case .memory:
                    try write(value, to: path + "/memory.limit_in_bytes")
                    // Memory and swap together: the same figure leaves no swap.
                    if FileSystem.exists(path + "/memory.memsw.limit_in_bytes") {
                        try write(value, to: path + "/memory.memsw.limit_in_bytes")
                    }
                    memoryEvents = path + "/memory.oom_control"
                }
            } catch {
                unlimited.append((controller, "\(error)"))
            }
        }
        let cgroup = BuildCgroup(folders: folders, memoryEvents: memoryEvents)
        guard unlimited.count < wanted.count else {
            cgroup.remove()
            return (nil, unlimited)
        }
        return (cgroup, unlimited)
    }

    private static var unified: Bool { FileSystem.exists("/sys/fs/cgroup/cgroup.controllers") }

    /// Where a build's cgroup goes for `controller`: below layerctl's own, so whatever limits
    /// layerctl's service has hold for its builds too. On a v1 host, in layerctl's own cgroup of
    /// that controller's hierarchy; with cgroup v2, beside layerctl's own cgroup (a v2 cgroup with
    /// processes may not have children that use controllers), in a parent that enables the
    /// controller for its children.
    package static func parentFolder(_ controller: Controller) -> Result<String, Unavailable> {
        let lines = ((try? String(contentsOfFile: "/proc/self/cgroup", encoding: .utf8)) ?? "").split(separator: "\n")
        if unified {
            guard let line = lines.first(where: { $0.hasPrefix("0::") }) else { return .failure(Unavailable(text: "no cgroup v2 path in /proc/self/cgroup")) }
            let own = String(line.dropFirst(3))
            let parent = own == "/" ? "" : FileSystem.parent(of: own)
            let folder = "/sys/fs/cgroup" + (parent == "/" ? "" : parent)
            let enabled = (try? String(contentsOfFile: folder + "/cgroup.subtree_control", encoding: .utf8)) ?? ""
            guard enabled.split(whereSeparator: { $0 == " " || $0 == "\n" }).contains(Substring(controller.rawValue)) else {
                return .failure(Unavailable(text: "\(folder) does not enable the \(controller) controller for its children"))
            }
            return .success(folder)
        }
        let hierarchy = "/sys/fs/cgroup/" + controller.rawValue
        guard FileSystem.exists(hierarchy + "/cgroup.procs") else {
            return .failure(Unavailable(text: "this host mounts no \(controller) cgroup controller"))
        }
        // "8:pids:/some/path"
        var own = "/"
        for line in lines {
            let fields = line.split(separator: ":", maxSplits: 2, omittingEmptySubsequences: false)
            guard fields.count == 3, fields[1].split(separator: ",").contains(Substring(controller.rawValue)) else { continue }
            own = String(fields[2])
            break
        }
        return .success(hierarchy + (own == "/" ? "" : own))
    }

    /// Removes the cgroups of builds whose layerctl is gone (killed before it could remove them):
    /// their names carry its pid. A cgroup goes only when it is empty, so none in use is touched.
    private static func sweep(_ base: String) {
        for name in (try? FileSystem.listDirectory(base)) ?? [] where isLeft(name) { rmdir(base + "/" + name) }
    }

    /// Whether `name` is a build cgroup whose layerctl, the pid in its name, is gone.
    package static func isLeft(_ name: String) -> Bool {
        guard name.hasPrefix(prefix), let owner = name.dropFirst(prefix.count).split(separator: "-").first.flatMap({ pid_t($0) })
        else { return false }
        return kill(owner, 0) != 0 && errno == ESRCH
    }

    /// Moves the calling process, and so everything it starts from now on, into each folder.
    func enter() throws {
        for folder in folders { try Self.write("\(getpid())\n", to: folder + "/cgroup.procs") }
    }

    /// How many processes of the build the kernel's OOM killer ended at the memory limit.
    func oomKills() -> Int {
        guard let memoryEvents, let text = try? String(contentsOfFile: memoryEvents, encoding: .utf8) else { return 0 }
        for line in text.split(separator: "\n") where line.hasPrefix("oom_kill ") {
            return Int(line.dropFirst("oom_kill ".count)) ?? 0
        }
        return 0
    }

    /// What the kernel did at the memory limit `limit` (nil for none), if it did anything:
    /// "reached its memory limit of …", for a subject ("the build", "the shell"). `counted` says
    /// which of its tmpfs folders the limit covers.
    func memoryNote(limit: Int64?, counted: String = "its /tmp, /run and /dev/shm hold") -> String? {
        guard let limit else { return nil }
        let kills = oomKills()
        guard kills > 0 else { return nil }
        return "reached its memory limit of \(formatBytes(limit)) (--memory; what \(counted) "
            + "counts), where the kernel ended \(kills == 1 ? "one of its processes" : "\(kills) of its processes")"
    }

    /// Removes the folders once the last of the build's processes is gone (the kernel lets a
    /// cgroup go only then; the build's are dead, but may not all be reaped yet).
    func remove() {
        for folder in folders {
            for _ in 0..<100 {
                if rmdir(folder) == 0 || errno == ENOENT { break }
                usleep(10_000)
            }
        }
    }

    private static func write(_ text: String, to path: String) throws {
        let fd = try sys("open", path) { open(path, O_WRONLY | O_CLOEXEC) }
        defer { close(fd) }
        try Data(text.utf8).withUnsafeBytes { try FileSystem.writeAll(fd, $0, to: path) }
    }
}
