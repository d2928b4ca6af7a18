import CLayerSupport
import Glibc
import LayerEntries
import LayerSupport

/// Writes a `MergedTree` into a new directory: data, owners, modes, times, xattrs, device nodes
/// and hard links. It fills a hidden sibling first and renames it into place, so the directory
/// appears whole or not at all; an existing, non-empty directory is never overwritten.
struct DirectoryWriter {
    let path: String

    /// `beforeCommit` runs once the folder is whole, before it is moved into place; what it throws
    /// leaves nothing.
    func write(_ tree: MergedTree, progress: (UInt64) -> Void, beforeCommit: () throws -> Void = {}) throws {
        let staging = try FileSystem.folderStaging(for: path, what: "a folder export", operation: "export to")
        do {
            try populate(tree, Array(staging.utf8), progress: progress)
            try beforeCommit()
            try sys("move the export to", path) { rename(staging, path) }
        } catch {
            try? FileSystem.removeTree(staging)
            throw StagedPathError(error, staging: staging, path: path)
        }
    }

    private func populate(_ tree: MergedTree, _ root: [UInt8], progress: (UInt64) -> Void) throws {
        var bytesIn: UInt64 = 0
        let order = tree.depthFirstWithLinks()
        for (index, linkTo) in order {
            let entry = tree.entries[index]
            let target = index == 0 ? root : root + tree.path(of: index)
            let text = { RawPath.string(target) }
            try RawPath.with(target) { p in
                if let first = linkTo {
                    // link(2) makes a further name of the entry itself, a symlink included.
                    _ = try RawPath.with(root + tree.path(of: first)) { existing in
                        try sys("link", text()) { link(existing, p) }
                    }
                    return
                }
                switch entry.kind {
                case .directory:
                    try sys("create", text()) { mkdir(p, 0o700) }
                case .regular:
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
        for (index, _) in order.reversed() where tree.entries[index].kind == .directory {
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
            try sys("set attribute \(attribute.displayName) on", text()) {
                RawPath.with(attribute.name) { lsetxattr(p, $0, attribute.value, attribute.value.count, 0) }
            }
        }
        var times = [timespec(tv_sec: Int(entry.mtime), tv_nsec: 0), timespec(tv_sec: Int(entry.mtime), tv_nsec: 0)]
        try sys("set the time of", text()) { utimensat(AT_FDCWD, p, &times, AT_SYMLINK_NOFOLLOW) }
    }

    /// Copies the data extents of `source` and leaves its holes as holes (SEEK_DATA, SEEK_HOLE),
    /// so a sparse file stays sparse; returns the bytes of data copied.
    private func copy(_ source: [UInt8], to p: UnsafePointer<CChar>, _ text: () -> String) throws -> UInt64 {
        let input = RawPath.with(source) { open($0, O_RDONLY | O_CLOEXEC | O_NOFOLLOW) }
        if input < 0 { throw SystemError("read", RawPath.string(source)) }
        defer { close(input) }
        var st = stat()
        if fstat(input, &st) != 0 { throw SystemError("read", RawPath.string(source)) }
        let output = open(p, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
        if output < 0 { throw SystemError("create", text()) }
        defer { close(output) }
        let buffer = UnsafeMutableRawPointer.allocate(byteCount: 1 << 20, alignment: 4096)
        defer { buffer.deallocate() }
        let size = off_t(st.st_size)
        var total: UInt64 = 0
        var offset: off_t = 0
        while offset < size {
            let data = lc_seek_extent(input, offset, 0)
            if data < 0 && errno == ENXIO { break }  // only a hole is left
            if data < 0 { throw SystemError("read", RawPath.string(source)) }
            var end = lc_seek_extent(input, data, 1)
            if end < 0 { end = size }
            var at = data
            while at < end {
                let count = pread(input, buffer, min(1 << 20, Int(end - at)), at)
                if count < 0 && errno == EINTR { continue }
                if count < 0 { throw SystemError("read", RawPath.string(source)) }
                if count == 0 { break }
                try FileSystem.writeAll(
                    output, UnsafeRawBufferPointer(start: buffer, count: count), at: UInt64(at), to: text())
                at += off_t(count)
                total += UInt64(count)
            }
            offset = max(end, at)
        }
        if ftruncate(output, size) != 0 { throw SystemError("write", text()) }
        return total
    }
}
