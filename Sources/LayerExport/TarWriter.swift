import CArchive
import Glibc
import LayerEntries
import LayerSupport

/// Writes a `MergedTree` as a pax tarball through libarchive, for users who want a tarball of the
/// same merge the image holds. Owners are numbers only (no host user names) and names are
/// stored as raw bytes, so the archive depends on the tree alone.
package final class TarWriter {
    private let archive: OpaquePointer
    private let path: String
    private let fd: Int32

    init(fd: Int32, path: String) throws {
        guard let archive = archive_write_new() else { throw ArchiveError("create a tar writer for", path, nil) }
        self.archive = archive
        self.path = path
        self.fd = fd
        try check("choose the pax format for") { archive_write_set_format_pax_restricted(archive) }
        try check("choose binary names for") { archive_write_set_option(archive, "pax", "hdrcharset", "BINARY") }
        try check("open") { archive_write_open_fd(archive, fd) }
    }

    deinit { archive_write_free(archive) }

    /// Sockets left out: tar has no type for them.
    private(set) var skippedSockets: [String] = []
    /// Attributes left out, as "NAME on PATH": libarchive writes a name outside printable ASCII, or
    /// with `%` or `=`, percent-encoded (`SCHILY.xattr.user.%C3%A9`), which GNU tar then restores
    /// under that encoded name. Leaving one out beats restoring it under the wrong name.
    private(set) var skippedAttributes: [String] = []

    /// Whether every reader restores attribute `name` as it is: printable ASCII without `%`, `=`.
    package static func carriesAttributeName(_ name: [UInt8]) -> Bool {
        name.allSatisfy { $0 > 0x20 && $0 < 0x7F && $0 != UInt8(ascii: "%") && $0 != UInt8(ascii: "=") }
    }

    /// Writes every entry, the root first as `./` (so its mode, owner and xattrs travel too), parents
    /// before children; returns the archive's size in bytes.
    func write(_ tree: MergedTree, progress: (UInt64) -> Void) throws -> UInt64 {
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 1 << 20, alignment: 4096)
        defer { buffer.deallocate() }
        var bytesIn: UInt64 = 0
        for (index, linkTo) in tree.depthFirstWithLinks() {
            let entry = tree.entries[index]
            if entry.kind == .socket {
                skippedSockets.append(RawPath.string(tree.path(of: index)))
                continue
            }
            guard let header = archive_entry_new() else { throw ArchiveError("describe an entry of", path, nil) }
            defer { archive_entry_free(header) }
            let name = index == 0 ? Array("./".utf8) : Array(tree.path(of: index).dropFirst())
            let link = linkTo.map { Array(tree.path(of: $0).dropFirst()) }
            Self.describe(entry, named: name, hardLinkTo: link, in: header) { attribute in
                skippedAttributes.append("\(attribute.displayName) on \(RawPath.display(tree.path(of: index)))")
            }
            let pathText = RawPath.string(tree.path(of: index))
            let status = archive_write_header(archive, header)
            if status < ARCHIVE_WARN { throw ArchiveError("write the header of \(pathText) to", path, archive) }
            guard entry.kind == .regular, linkTo == nil else { continue }
            try FileChunks.read(entry.source, size: Int64(entry.size), noFollow: true, into: buffer) { bytes, _ in
                if archive_write_data(archive, bytes.baseAddress, bytes.count) < 0 {
                    throw ArchiveError("write \(pathText) to", path, archive)
                }
                bytesIn += UInt64(bytes.count)
            }
            progress(bytesIn)
        }
        try check("finish") { archive_write_close(archive) }
        return UInt64(max(0, lseek(fd, 0, SEEK_END)))
    }

    /// Fills `header` for `entry` under `name`: type, permissions, numeric owner, time, the xattrs
    /// every reader restores as they are (the others go to `skip`), and the hard-link target, link
    /// target, size or device. Shared by every tar layerctl writes.
    package static func describe(
        _ entry: MergedTree.Entry, named name: [UInt8], hardLinkTo linkTo: [UInt8]?, in header: OpaquePointer,
        skip: (ExtendedAttribute) -> Void
    ) {
        RawPath.with(name) { archive_entry_copy_pathname(header, $0) }
        archive_entry_set_filetype(header, entry.kind.typeBits)
        archive_entry_set_perm(header, mode_t(entry.permissions))
        archive_entry_set_uid(header, la_int64_t(entry.uid))
        archive_entry_set_gid(header, la_int64_t(entry.gid))
        archive_entry_set_mtime(header, time_t(entry.mtime), 0)
        for attribute in entry.xattrs {
            guard carriesAttributeName(attribute.name) else {
                skip(attribute)
                continue
            }
            attribute.value.withUnsafeBytes { value in
                RawPath.with(attribute.name) { archive_entry_xattr_add_entry(header, $0, value.baseAddress, value.count) }
            }
        }
        if let linkTo {
            // A further name of any kind (files, symlinks, device nodes can all be hard links).
            RawPath.with(linkTo) { archive_entry_copy_hardlink(header, $0) }
            archive_entry_set_size(header, 0)
            return
        }
        switch entry.kind {
        case .regular: archive_entry_set_size(header, la_int64_t(entry.size))
        case .symlink: RawPath.with(entry.linkTarget) { archive_entry_copy_symlink(header, $0) }
        case .characterDevice, .blockDevice: archive_entry_set_rdev(header, dev_t(entry.rdev))
        case .directory, .fifo, .socket: break
        }
    }

    private func check(_ operation: String, _ call: () -> Int32) throws {
        if call() < ARCHIVE_WARN { throw ArchiveError(operation, path, archive) }
    }
}

/// A libarchive call that failed, with archive_error_string; where that is libarchive's "Write
/// error" or "Read error", the system's reason instead ("No space left on device").
public struct ArchiveError: LayerError {
    public let message: String
    public let cause: (any Error)?

    package init(_ operation: String, _ path: String, _ archive: OpaquePointer?) {
        message = "\(operation) \(path) failed"
        let text = archive.flatMap { archive_error_string($0) }.map { String(cString: $0) } ?? "libarchive failed"
        let number = archive.map { archive_errno($0) } ?? 0
        cause = ["Write error", "Read error"].contains(text) && number > 0 ? Reason(errno: number) : Reason(text)
    }

    public var code: ErrorCode { .system }
}
