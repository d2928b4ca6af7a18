import CLayerSupport
import Glibc

/// Writes a `MergedTree` into a new directory: data, owners, modes, times, xattrs, device nodes
/// and hard links. It fills a hidden sibling first and renames it into place, so the directory
/// appears whole or not at all; an existing, non-empty directory is never overwritten.
struct DirectoryWriter {
    let path: String

    func write(_ tree: MergedTree, progress: (UInt64) -> Void) throws {
        if FileSystem.exists(path), !((try? FileSystem.listDirectory(path))?.isEmpty ?? false) {
            throw SystemError("export to", path, errno: EEXIST)
        }
        let staging = FileSystem.stagingPath(beside: path)
        try? FileSystem.removeTree(staging)
        do {
            try populate(tree, Array(staging.utf8), progress: progress)
            try sys("move the export to", path) { rename(staging, path) }
        } catch {
            try? FileSystem.removeTree(staging)
            throw error
        }
    }

    private func populate(_ tree: MergedTree, _ root: [UInt8], progress: (UInt64) -> Void) throws {
        var bytesIn: UInt64 = 0
        let order = tree.depthFirst()
        for index in order {
            let entry = tree.entries[index]
            let target = index == 0 ? root : root + tree.path(of: index)
            let text = { RawPath.string(target) }
            try RawPath.with(target) { p in
                switch entry.kind {
                case .directory:
                    try sys("create", text()) { mkdir(p, 0o700) }
                case .regular:
                    if let first = entry.hardLinkTarget {
                        _ = try RawPath.with(root + tree.path(of: first)) { existing in
                            try sys("link", text()) { link(existing, p) }
                        }
                        return
                    }
                    bytesIn += try copy(entry.source, to: p, text)
                    progress(bytesIn)
                case .symlink:
                    _ = try RawPath.with(entry.linkTarget) { link in try sys("create", text()) { symlink(link, p) } }
                case .characterDevice, .blockDevice, .fifo, .socket:
                    try sys("create", text()) { mknod(p, mode_t(entry.kind.typeBits) | 0o600, dev_t(entry.rdev)) }
                }
                if entry.kind != .directory { try apply(entry, p, text) }
            }
        }
        // Directories last and deepest first, so adding their entries does not move their mtime.
        for index in order.reversed() where tree.entries[index].kind == .directory {
            let target = index == 0 ? root : root + tree.path(of: index)
            try RawPath.with(target) { try apply(tree.entries[index], $0, { RawPath.string(target) }) }
        }
    }

    private func apply(_ entry: MergedTree.Entry, _ p: UnsafePointer<CChar>, _ text: () -> String) throws {
        try sys("set the owner of", text()) { lchown(p, entry.uid, entry.gid) }
        if entry.kind != .symlink {
            try sys("set the mode of", text()) { chmod(p, mode_t(entry.permissions)) }
        }
        for attribute in entry.xattrs {
            try sys("set attribute \(attribute.name) on", text()) {
                lsetxattr(p, attribute.name, attribute.value, attribute.value.count, 0)
            }
        }
        var times = [timespec(tv_sec: Int(entry.mtime), tv_nsec: 0), timespec(tv_sec: Int(entry.mtime), tv_nsec: 0)]
        try sys("set the time of", text()) { utimensat(AT_FDCWD, p, &times, AT_SYMLINK_NOFOLLOW) }
    }

    private func copy(_ source: [UInt8], to p: UnsafePointer<CChar>, _ text: () -> String) throws -> UInt64 {
        let input = RawPath.with(source) { open($0, O_RDONLY | O_CLOEXEC | O_NOFOLLOW) }
        if input < 0 { throw SystemError("read", RawPath.string(source)) }
        defer { close(input) }
        let output = open(p, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
        if output < 0 { throw SystemError("create", text()) }
        defer { close(output) }
        let buffer = UnsafeMutableRawPointer.allocate(byteCount: 1 << 20, alignment: 4096)
        defer { buffer.deallocate() }
        var total: UInt64 = 0
        while true {
            let count = read(input, buffer, 1 << 20)
            if count < 0 && errno == EINTR { continue }
            if count < 0 { throw SystemError("read", RawPath.string(source)) }
            if count == 0 { return total }
            if Glibc.write(output, buffer, count) != count { throw SystemError("write", text()) }
            total += UInt64(count)
        }
    }
}
