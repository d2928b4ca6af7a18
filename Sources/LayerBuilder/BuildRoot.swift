import CLayerSupport
import Foundation
import Glibc
import LayerEntries
import LayerSupport

/// The merged root a layer is built in: an overlay of the parents' trees under a new upper
/// directory. Namespaced work mounts it in its private mount namespace, and makes the mount points
/// the build's `Confinement` needs; the parent removes those once the work is done and its mounts
/// are gone, before the upper directory is read (`removeMountPoint`).
struct BuildRoot {
    /// Holds `layer/tree` (the overlay's upper folder), `work` and `merged`.
    let directory: String
    /// The trees below, bottom first.
    let lowerTrees: [String]
    /// Paths in the tree, relative to it, this build created only to mount on, or as a link to one
    /// of its own mounts (`makeLink`): the tree should not keep them. Deepest last.
    private(set) var createdMountPoints: [String] = []

    var upper: String { directory + "/layer/tree" }
    var work: String { directory + "/work" }
    var merged: String { directory + "/merged" }

    init(directory: String, lowerTrees: [String]) {
        self.directory = directory
        self.lowerTrees = lowerTrees
    }

    /// The modes Arch's `filesystem` package gives these directories; creating them any other way
    /// makes libalpm warn that permissions differ when `filesystem` is installed.
    static let mountPointModes: [(String, mode_t)] = [
        ("proc", 0o555), ("sys", 0o555), ("dev", 0o755), ("run", 0o755), ("tmp", 0o1777),
    ]

    /// Mounts the tree at `merged` and makes sure its API folders are folders to mount on.
    mutating func setUp(resolvConf: Bool = false) throws {
        for directory in [upper, work, merged] {
            try FileSystem.makeDirectories(directory)
        }
        // nodev: a device node of the layer's, made by a command or a package or found below, can
        // be made but not opened; it would reach the host's disks and consoles.
        if lowerTrees.isEmpty {
            // A root layer has nothing below it: writing straight into the upper directory gives
            // the same tree as an overlay would, without overlayfs's cost on every file created.
            try Mounter.mount(upper, at: merged, type: nil, flags: UInt(MS_BIND) | UInt(MS_NODEV))
        } else {
            try mountOverlay()
        }
        for (name, mode) in Self.mountPointModes {
            try makeMountPoint(name, mode: mode, keep: true)
        }
        if resolvConf { try makeResolvConfMountPoint() }
    }

    /// The most trees an overlay of `BuildRoot` holds below its upper folder. Each is named in the
    /// mount's options, which the kernel takes in one page (4,096 bytes), as `/proc/self/fd/N`
    /// (at most 19 bytes with its `:`); the kernel's own limit is 500.
    static let maximumLowerTrees = 200

    /// Mounts the overlay of `lowerTrees` under `upper` at `merged`.
    private func mountOverlay() throws {
        guard lowerTrees.count <= Self.maximumLowerTrees else {
            throw BuildFailure(
                "\(lowerTrees.count) layers are more than the \(Self.maximumLowerTrees) that one overlay of layerctl's holds "
                    + "(it names their folders in one page of mount options)",
                code: .input)
        }
        try Self.mountOverlay(lowers: lowerTrees.reversed(), upper: upper, work: work, at: merged, options: "nodev")
    }

    /// Mounts an overlay of `lowers` (the top one first) under `upper`, with `work`, at `target`,
    /// without overlayfs's redirects, index and metadata-only copies, and with `options`. Each
    /// folder is named by a descriptor of it (`/proc/self/fd/N`), never by its path: a store's
    /// path may hold what the options read as their own (`,` between options, `:` between lower
    /// folders, `\` and `"`), and the full paths of the trees, about 95 bytes each, filled the
    /// page at 40 layers.
    static func mountOverlay(lowers: [String], upper: String, work: String, at target: String, options: String)
        throws
    {
        var descriptors: [Int32] = []
        defer { for fd in descriptors { close(fd) } }
        func named(_ folder: String) throws -> String {
            let fd = try sys("open", folder) { open(folder, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC) }
            descriptors.append(fd)
            return "/proc/self/fd/\(fd)"
        }
        let lowerdir = try lowers.map(named).joined(separator: ":")
        let all = "lowerdir=\(lowerdir),upperdir=\(try named(upper)),workdir=\(try named(work)),"
            + "redirect_dir=off,index=off,metacopy=off," + options
        try Mounter.mount("layerctl", at: target, type: "overlay", options: all)
    }

    /// Makes sure every folder on the way to `relative` is a folder of the tree, creating those
    /// missing. A symlink on the way is refused: these paths are walked by the host's root before
    /// the build pivots into the tree, where a symlink would lead a mount onto a host path.
    private mutating func makeMountPoint(_ relative: String, mode: mode_t, keep: Bool) throws {
        var path = ""
        for component in relative.split(separator: "/") {
            path += (path.isEmpty ? "" : "/") + component
            let full = merged + "/" + path
            var st = stat()
            if lstat(full, &st) == 0 {
                guard (st.st_mode & S_IFMT) == S_IFDIR else { throw Self.notAFolder(path, st, needed: relative) }
                continue
            }
            try sys("create", full) { mkdir(full, mode) }
            _ = chmod(full, mode)  // whatever the umask took away
            if !keep { createdMountPoints.append(path) }
        }
    }

    /// Makes `relative` a symlink to `target`, its folders made as a mount point's are, where the
    /// tree has nothing there; returns false, and makes nothing, where it has a folder there (the
    /// caller mounts on it instead), and refuses anything else.
    mutating func makeLink(_ relative: String, to target: String) throws -> Bool {
        let (folder, _) = FileSystem.split(relative)
        if folder != "." { try makeMountPoint(folder, mode: 0o755, keep: false) }
        let full = merged + "/" + relative
        var st = stat()
        if lstat(full, &st) == 0 {
            guard (st.st_mode & S_IFMT) == S_IFDIR else { throw Self.notAFolder(relative, st, needed: relative) }
            return false
        }
        try sys("create", full) { symlink(target, full) }
        createdMountPoints.append(relative)
        return true
    }

    /// The layer's `path` (relative), of `st`, where the build needs a folder for its own `needed`.
    private static func notAFolder(_ path: String, _ st: stat, needed: String) -> BuildFailure {
        let kind = MergedTree.Kind(mode: st.st_mode)?.described ?? "no kind of file"
        return BuildFailure(
            "the layer's /\(path) is not a folder (it is \(kind)): the build puts its own /\(needed) there",
            code: .input)
    }

    /// A file to bind the host's resolv.conf on, when the layer has a regular one or none; a
    /// symlink (into /run, as systemd-resolved makes it) is left be, and nothing is bound.
    private mutating func makeResolvConfMountPoint() throws {
        try makeMountPoint("etc", mode: 0o755, keep: true)
        let target = merged + "/etc/resolv.conf"
        var st = stat()
        if lstat(target, &st) == 0 { return }
        let fd = try sys("create", target) { open(target, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0o644) }
        close(fd)
        createdMountPoints.append("etc/resolv.conf")
    }

    /// Removes the mount point `relative` from the tree at `upper` if it is still what the build
    /// made: an empty folder, the empty resolv.conf, or a symlink into the build's own
    /// `/run/layerctl` (`makeLink`). Its folder is opened as the build's
    /// `files:` are written (`lc_open_in_root`): the layer's commands may have made a folder on the
    /// way a symlink to a host folder, and it resolves inside the tree, never on the host.
    static func removeMountPoint(_ relative: String, in upper: String) {
        let root = open(upper, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
        guard root >= 0 else { return }
        defer { close(root) }
        let (directory, name) = FileSystem.split(relative)
        let folder = lc_open_in_root(root, directory, O_RDONLY | O_DIRECTORY, 0)
        guard folder >= 0 else { return }
        defer { close(folder) }
        var st = stat()
        guard name != "..", fstatat(folder, name, &st, AT_SYMLINK_NOFOLLOW) == 0 else { return }
        switch st.st_mode & S_IFMT {
        case S_IFDIR: _ = unlinkat(folder, name, AT_REMOVEDIR)  // only if empty
        case S_IFREG where st.st_size == 0: _ = unlinkat(folder, name, 0)
        case S_IFLNK:
            var target = [UInt8](repeating: 0, count: 256)
            let count = readlinkat(folder, name, &target, target.count)
            if count > 0, String(decoding: target.prefix(count), as: UTF8.self).hasPrefix(buildOwnFolder + "/") {
                _ = unlinkat(folder, name, 0)
            }
        default: break
        }
    }

    /// The build's own folder in its root's `/run`, a tmpfs no layer keeps.
    static let buildOwnFolder = "/run/layerctl"

    /// Whether the host's resolv.conf can be bound in: the layer's is a regular file.
    var canBindResolvConf: Bool {
        var st = stat()
        return lstat(merged + "/etc/resolv.conf", &st) == 0 && (st.st_mode & S_IFMT) == S_IFREG
    }
}
