import CLayerSupport
import Foundation
import Glibc
import LayerSupport

/// Reads and writes files in a layer's merged root with every path resolved inside that root
/// (openat2, RESOLVE_IN_ROOT), so a layer's absolute symlinks cannot lead a write onto the host.
struct RootedFiles {
    let root: String

    /// Writes `data` at `path` (absolute inside the root) with `mode` and owner, creating missing
    /// parent directories (0755, root). What is at `path` and is no regular file or folder (a
    /// symlink, a FIFO, a socket, a device node) is replaced, never followed or opened: opening a
    /// FIFO to write waits for a reader that never comes.
    func write(_ data: Data, to path: String, mode: UInt32, uid: uid_t, gid: gid_t) throws {
        try entry(path) { rootFD, dirFD, name, existing in
            if let existing, existing.st_mode & S_IFMT == S_IFDIR { throw Self.folderThere(path, "a file") }
            if let existing, existing.st_mode & S_IFMT != S_IFREG {
                try sys("replace", path) { unlinkat(dirFD, name, 0) }
            }
            // O_NONBLOCK: should a FIFO come back meanwhile, the open fails instead of waiting.
            let fd = lc_open_in_root(rootFD, path, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_NONBLOCK, mode_t(mode))
            guard fd >= 0 else { throw Self.openFailure("write", path) }
            try write(data, to: fd, path: path, mode: mode, uid: uid, gid: gid)
        }
    }

    /// Writes `data` into the file open at `fd` (which it closes), if that is a regular file, and
    /// gives it `mode` and owner.
    private func write(_ data: Data, to fd: Int32, path: String, mode: UInt32, uid: uid_t, gid: gid_t) throws {
        defer { close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0, st.st_mode & S_IFMT == S_IFREG else {
            throw SystemError("write", path, errno: EINVAL)
        }
        try data.withUnsafeBytes { try FileSystem.writeAll(fd, $0, to: path) }
        try sys("change owner of", path) { fchown(fd, uid, gid) }
        try sys("change mode of", path) { fchmod(fd, mode_t(mode)) }
    }

    /// Makes a symlink to `target` at `path` (absolute inside the root), owned by `uid:gid`, as
    /// `ln -sfn` does: what is there and is no folder is replaced, never followed. The target is
    /// only written down; the running system follows it.
    // Inlined into BuilderChild.writeFiles, this crashed Swift 6.3.1's optimizer in a release build
    // (CopyPropagation's ownership check), which `.ci/run` now makes.
    @inline(never)
    func link(to target: String, at path: String, uid: uid_t, gid: gid_t) throws {
        try entry(path) { _, dirFD, name, existing in
            if let existing {
                guard existing.st_mode & S_IFMT != S_IFDIR else { throw Self.folderThere(path, "a link") }
                try sys("replace", path) { unlinkat(dirFD, name, 0) }
            }
            try sys("make a link at", path) { symlinkat(target, dirFD, name) }
            try sys("change owner of", path) { fchownat(dirFD, name, uid, gid, AT_SYMLINK_NOFOLLOW) }
        }
    }

    /// Makes the folder `path` (absolute inside the root) with `mode` and owner when it is not
    /// there; one that is there stays as it is (a package's `/etc/skel`), and anything else there
    /// is an error.
    func makeFolder(_ path: String, mode: UInt32, uid: uid_t, gid: gid_t) throws {
        try entry(path) { _, dirFD, name, existing in
            if let existing {
                guard existing.st_mode & S_IFMT == S_IFDIR else {
                    throw BuildFailure("\(path) is in the layer already, and is no folder", code: .input)
                }
                return
            }
            try sys("create directory", path) { mkdirat(dirFD, name, mode_t(mode)) }
            try sys("change owner of", path) { fchownat(dirFD, name, uid, gid, AT_SYMLINK_NOFOLLOW) }
            try sys("change mode of", path) { fchmodat(dirFD, name, mode_t(mode), 0) }
        }
    }

    /// Opens the root and the folder of `path` in it (made, with its parents, when missing), and
    /// gives `body` both, the entry's name, and what is there now, not followed (nil for nothing).
    private func entry(
        _ path: String, _ body: (_ rootFD: Int32, _ dirFD: Int32, _ name: String, _ existing: stat?) throws -> Void
    ) throws {
        let rootFD = try openRoot()
        defer { close(rootFD) }
        let parent = FileSystem.parent(of: path)
        try makeParents(parent, rootFD: rootFD)
        let dirFD = try openDirectory(parent, rootFD: rootFD)
        defer { close(dirFD) }
        let name = (path as NSString).lastPathComponent
        var st = stat()
        try body(rootFD, dirFD, name, fstatat(dirFD, name, &st, AT_SYMLINK_NOFOLLOW) == 0 ? st : nil)
    }

    /// Reads a regular file inside the root, or nil when there is none: a FIFO is not read (it
    /// would wait for a writer), nor a device node. One of more than `limit` bytes is refused
    /// unread (`FileTooLarge`).
    func read(_ path: String, atMost limit: Int64) throws -> Data? {
        guard let rootFD = try? openRoot() else { return nil }
        defer { close(rootFD) }
        let fd = lc_open_in_root(rootFD, path, O_RDONLY | O_NONBLOCK | O_NOCTTY, 0)
        guard fd >= 0 else { return nil }
        do {
            return try FileSystem.readRegularFile(opened: fd, path: path, atMost: limit)
        } catch let large as FileTooLarge {
            throw large
        } catch {
            return nil
        }
    }

    /// Turns `user:group` (names or numbers) into ids, reading the root's /etc/passwd and /etc/group;
    /// `root` is 0 when they do not list it.
    func owner(_ spec: String) throws -> (uid_t, gid_t) {
        let parts = spec.split(separator: ":", maxSplits: 1).map(String.init)
        func lookup(_ name: String, in file: String) throws -> UInt32 {
            if let number = UInt32(name) { return number }
            let text = try read(file, atMost: ReadLimit.accounts).map { String(decoding: $0, as: UTF8.self) } ?? ""
            for line in text.split(separator: "\n") {
                let fields = line.split(separator: ":", omittingEmptySubsequences: false)
                if fields.count > 2, fields[0] == name, let id = UInt32(fields[2]) { return id }
            }
            // root is 0 on every system, listed or not (a root of a few files may have no /etc/passwd).
            if name == "root" { return 0 }
            throw BuildFailure("owner \(spec): \(name) is not in the layer's \(file)", code: .input)
        }
        return (try lookup(parts[0], in: "/etc/passwd"), try lookup(parts[1], in: "/etc/group"))
    }

    private func openRoot() throws -> Int32 {
        try sys("open", root) { open(root, O_RDONLY | O_DIRECTORY | O_CLOEXEC) }
    }

    private func openDirectory(_ path: String, rootFD: Int32) throws -> Int32 {
        let fd = lc_open_in_root(rootFD, path.isEmpty ? "/" : path, O_RDONLY | O_DIRECTORY, 0)
        if fd < 0 { throw Self.openFailure("open directory", path) }
        return fd
    }

    /// What a failed open of `path` in the root says. The root's own mounts (`/run`, `/tmp`, `/dev`,
    /// `/proc`, `/sys`, pacman's sync databases) are no part of the layer, and a path that reaches
    /// one, through a symlink such as the filesystem package's `/var/run`, is refused with EXDEV.
    private static func openFailure(_ operation: String, _ path: String) -> any Error {
        let error = errno
        guard error == EXDEV else { return SystemError(operation, path, errno: error) }
        return BuildFailure(
            "\(path) leads out of the layer, onto a filesystem mounted for the build (such as /run or /tmp, which the "
                + "running system fills); a layer's files go elsewhere", code: .input)
    }

    private static func folderThere(_ path: String, _ what: String) -> BuildFailure {
        BuildFailure("\(path) is a folder in the layer, which \(what) cannot replace", code: .input)
    }

    private func makeParents(_ path: String, rootFD: Int32) throws {
        var current = ""
        for component in path.split(separator: "/") {
            let parentFD = try openDirectory(current.isEmpty ? "/" : current, rootFD: rootFD)
            defer { close(parentFD) }
            if mkdirat(parentFD, String(component), 0o755) != 0 && errno != EEXIST {
                throw SystemError("create directory", current + "/" + component)
            }
            current += "/" + component
        }
    }
}
