import Foundation
import Glibc
import LayerSupport

/// The pids cgroup that holds one layer's build: its processes number at most `maximum`, so that a
/// fork bomb in a `run:` step or a scriptlet fails inside the build (its `fork` gets EAGAIN)
/// instead of filling the host's process table. A folder under the cgroup v2 root, or under the
/// pids hierarchy on a v1 host. The builder child moves itself into it before it starts
/// anything, so everything the build runs is counted; the parent removes it once all are gone.
package struct ProcessLimit {
    let path: String

    /// Makes a cgroup of at most `maximum` processes; nil, with why, when this host offers none to
    /// root (no pids controller mounted, or a cgroup tree root may not write).
    static func make(maximum: Int) -> (limit: ProcessLimit?, why: String?) {
        let base: String
        switch parentFolder() {
        case .success(let folder): base = folder
        case .failure(let why): return (nil, why.text)
        }
        sweep(base)
        let path = base + "/\(prefix)\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        guard mkdir(path, 0o755) == 0 else { return (nil, "\(SystemError("make the cgroup", path))") }
        do {
            try write("\(maximum)\n", to: path + "/pids.max")
        } catch {
            rmdir(path)
            return (nil, "\(error)")
        }
        return (ProcessLimit(path: path), nil)
    }

    package static let prefix = "layerctl-build-"

    package struct Unavailable: Error {
        package var text: String
    }

    /// Where a build's cgroup goes: below layerctl's own, so whatever limits layerctl's service
    /// has hold for its builds too. On a v1 host, in layerctl's own pids cgroup; with cgroup v2,
    /// beside layerctl's own cgroup (a v2 cgroup with processes may not have children that use
    /// controllers), in a parent that enables the pids controller for its children.
    package static func parentFolder() -> Result<String, Unavailable> {
        let lines = ((try? String(contentsOfFile: "/proc/self/cgroup", encoding: .utf8)) ?? "").split(separator: "\n")
        if FileSystem.exists("/sys/fs/cgroup/cgroup.controllers") {
            guard let line = lines.first(where: { $0.hasPrefix("0::") }) else { return .failure(Unavailable(text: "no cgroup v2 path in /proc/self/cgroup")) }
            let own = String(line.dropFirst(3))
            let parent = own == "/" ? "" : (own as NSString).deletingLastPathComponent
            let folder = "/sys/fs/cgroup" + (parent == "/" ? "" : parent)
            let enabled = (try? String(contentsOfFile: folder + "/cgroup.subtree_control", encoding: .utf8)) ?? ""
            guard enabled.split(whereSeparator: { $0 == " " || $0 == "\n" }).contains("pids") else {
                return .failure(Unavailable(text: "\(folder) does not enable the pids controller for its children"))
            }
            return .success(folder)
        }
        guard FileSystem.exists("/sys/fs/cgroup/pids/cgroup.procs") else {
            return .failure(Unavailable(text: "this host mounts no pids cgroup controller"))
        }
        // "8:pids:/some/path"
        let own = lines.map { $0.split(separator: ":", maxSplits: 2, omittingEmptySubsequences: false) }
            .first { $0.count == 3 && $0[1].split(separator: ",").contains("pids") }.map { String($0[2]) } ?? "/"
        return .success("/sys/fs/cgroup/pids" + (own == "/" ? "" : own))
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

    /// Moves the calling process, and so everything it starts from now on, into the cgroup.
    func enter() throws { try Self.write("\(getpid())\n", to: path + "/cgroup.procs") }

    /// Removes the cgroup once the last of its processes is gone (the kernel lets a cgroup go only
    /// then; the build's are dead, but may not all be reaped yet).
    func remove() {
        for _ in 0..<100 {
            if rmdir(path) == 0 || errno == ENOENT { return }
            usleep(10_000)
        }
    }

    private static func write(_ text: String, to path: String) throws {
        let fd = try sys("open", path) { open(path, O_WRONLY | O_CLOEXEC) }
        defer { close(fd) }
        try Data(text.utf8).withUnsafeBytes { try FileSystem.writeAll(fd, $0, to: path) }
    }
}
