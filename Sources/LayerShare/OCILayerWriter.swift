import CArchive
import Crypto
import Foundation
import Glibc
import LayerEntries
import LayerExport
import LayerSupport

/// An entry of a layer that an OCI layer cannot carry: every reader of one takes a name that starts
/// with `.wh.` for a whiteout (the spec has no way to write such a name otherwise), so a file
/// `/etc/.wh.hostname` would come back from a registry as the removal of `/etc/hostname`.
public struct NameMeansWhiteout: LayerError {
    let layer: String?
    let name: [UInt8]
    public var code: ErrorCode { .input }
    public var message: String {
        let base = name.lastIndex(of: 0x2F).map { name.index(after: $0) } ?? name.startIndex
        let hidden = Array(name[..<base]) + name[base...].dropFirst(Whiteout.prefix.count)
        return
            "\(layer.map { "layer \($0) holds " } ?? "")/\(RawPath.display(name)), which cannot go into an OCI layer: "
            + "a name that starts with .wh. is a whiteout there, which every reader would take for the removal of "
            + "/\(RawPath.display(hidden)); rename it in the layer"
    }
}

/// Writes one layerctl layer as an OCI image layer: a pax tar of the layer's own entries (not the
/// merged stack), through libarchive, then compressed. overlayfs's whiteouts become `.wh.NAME` and
/// an opaque folder is followed by its `.wh..wh..opq`, as the OCI image spec says; owners are
/// numbers, names raw bytes, xattrs kept, hard links kept. The bytes depend on the layer alone, so
/// the same layer pushed from any machine has the same digests.
public struct OCILayerWriter {
    /// Attributes left out, as "NAME on PATH", because tar readers would restore them under another
    /// name (see `TarWriter.carriesAttributeName`).
    public private(set) var skippedAttributes: [String] = []
    /// The layer's name, for messages.
    let layer: String?

    public init(layer: String? = nil) { self.layer = layer }

    /// Writes the blob of `source` to `path` (and its tar beside it, removed afterwards).
    public mutating func write(_ source: any EntrySource, to path: String, compression: OCICompression) throws
        -> OCILayerBlob
    {
        let tarPath = path + ".tar"
        defer { unlink(tarPath) }
        try writeTar(source, to: tarPath)
        let diffID = try compress(tarPath, to: path, with: compression)
        let digest = try Digest.contentHash(file: Array(path.utf8))
        var st = stat()
        try sys("read", path) { stat(path, &st) }
        return OCILayerBlob(
            digest: "sha256:" + digest.hex, diffID: "sha256:" + diffID.hex, size: Int64(st.st_size),
            mediaType: compression.mediaType)
    }

    private mutating func writeTar(_ source: any EntrySource, to path: String) throws {
        let fd = try sys("create", path) { open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600) }
        defer { close(fd) }
        guard let archive = archive_write_new() else { throw ArchiveError("create a tar writer for", path, nil) }
        defer { archive_write_free(archive) }
        try check(archive, "choose the pax format for", path) { archive_write_set_format_pax_restricted(archive) }
        try check(archive, "choose binary names for", path) {
            archive_write_set_option(archive, "pax", "hdrcharset", "BINARY")
        }
        try check(archive, "open", path) { archive_write_open_fd(archive, fd) }
        var firstNames: [UInt64: [UInt8]] = [:]
        let root = try source.root()
        // The root as `./`, so its mode, owner, time and xattrs travel too.
        try writeEntry(root.entry, named: Array("./".utf8), linkTo: nil, archive: archive, path: path)
        try writeChildren(of: root, at: [], source: source, archive: archive, path: path, firstNames: &firstNames)
        try check(archive, "finish", path) { archive_write_close(archive) }
    }

    /// The children of `directory` (named `prefix`, empty for the root), depth first in byte order.
    /// The folders on the way down are a list, not calls, and `PathLimit` bounds how long it gets.
    private mutating func writeChildren(
        of directory: SourceEntry, at prefix: [UInt8], source: any EntrySource, archive: OpaquePointer,
        path: String, firstNames: inout [UInt64: [UInt8]]
    ) throws {
        var folders: [(children: [SourceEntry], next: Int, prefix: [UInt8])] = []
        func enter(_ directory: SourceEntry, at prefix: [UInt8]) throws {
            if directory.isOpaque {
                try writeMarker(
                    (prefix.isEmpty ? [] : prefix + [0x2F]) + Whiteout.opaque, like: directory.entry, archive: archive,
                    path: path)
            }
            folders.append((try source.children(of: directory), 0, prefix))
        }
        try enter(directory, at: prefix)
        while let folder = folders.last {
            guard folder.next < folder.children.count else {
                folders.removeLast()
                continue
            }
            folders[folders.count - 1].next += 1
            let child = folder.children[folder.next]
            let prefix = folder.prefix
            try PathLimit.check(
                prefix.isEmpty ? 0 : prefix.count + 1, adding: child.entry.name,
                to: prefix.isEmpty ? [] : [0x2F] + prefix)
            let name = prefix.isEmpty ? child.entry.name : prefix + [0x2F] + child.entry.name
            if child.isWhiteout {
                let marker = (prefix.isEmpty ? [] : prefix + [0x2F]) + Whiteout.hiding(child.entry.name)
                try writeMarker(marker, like: child.entry, archive: archive, path: path)
                continue
            }
            if child.entry.name.starts(with: Whiteout.prefix) { throw NameMeansWhiteout(layer: layer, name: name) }
            if child.entry.kind == .socket { continue }  // tar has no type for sockets
            var linkTo: [UInt8]?
            if let group = child.linkGroup {
                if let first = firstNames[group] { linkTo = first } else { firstNames[group] = name }
            }
            try writeEntry(child.entry, named: name, linkTo: linkTo, archive: archive, path: path)
            if child.entry.kind == .directory { try enter(child, at: name) }
        }
    }

    /// An empty file that stands for a whiteout or an opaque folder, with `entry`'s owner and time.
    private mutating func writeMarker(
        _ name: [UInt8], like entry: MergedTree.Entry, archive: OpaquePointer, path: String
    ) throws {
        var marker = entry
        marker.kind = .regular
        marker.permissions = 0o600
        marker.size = 0
        marker.xattrs = []
        try writeEntry(marker, named: name, linkTo: nil, archive: archive, path: path)
    }

    private mutating func writeEntry(
        _ entry: MergedTree.Entry, named name: [UInt8], linkTo: [UInt8]?, archive: OpaquePointer, path: String
    ) throws {
        guard let header = archive_entry_new() else { throw ArchiveError("describe an entry of", path, nil) }
        defer { archive_entry_free(header) }
        TarWriter.describe(entry, named: name, hardLinkTo: linkTo, in: header) { attribute in
            skippedAttributes.append("\(attribute.displayName) on /\(RawPath.display(name))")
        }
        if archive_write_header(archive, header) < ARCHIVE_WARN {
            throw ArchiveError("write the header of /\(RawPath.display(name)) to", path, archive)
        }
        guard entry.kind == .regular, linkTo == nil, entry.size > 0 else { return }
        try copyData(from: entry.source, size: entry.size, into: archive, path: path)
    }

    /// Compresses the tar at `tarPath` into `path` (libarchive's raw format writes the data alone,
    /// through the filter) and returns the tar's sha256, taken on the way.
    private func compress(_ tarPath: String, to path: String, with compression: OCICompression) throws -> Hash256 {
        let fd = try sys("create", path) { open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644) }
        defer { close(fd) }
        guard let archive = archive_write_new() else { throw ArchiveError("create a compressor for", path, nil) }
        defer { archive_write_free(archive) }
        try check(archive, "choose the raw format for", path) { archive_write_set_format_raw(archive) }
        switch compression {
        case .zstd: try check(archive, "choose zstd for", path) { archive_write_add_filter_zstd(archive) }
        case .gzip:
            try check(archive, "choose gzip for", path) { archive_write_add_filter_gzip(archive) }
            // No time in the gzip header: the same layer gives the same bytes.
            try check(archive, "leave the time out of", path) {
                archive_write_set_filter_option(archive, "gzip", "timestamp", nil)
            }
        }
        // Whole blocks only at the end would pad the stream: write bytes as they come.
        try check(archive, "set the block size of", path) { archive_write_set_bytes_in_last_block(archive, 1) }
        try check(archive, "open", path) { archive_write_open_fd(archive, fd) }
        guard let header = archive_entry_new() else { throw ArchiveError("describe", path, nil) }
        defer { archive_entry_free(header) }
        var st = stat()
        try sys("read", tarPath) { stat(tarPath, &st) }
        archive_entry_set_pathname(header, "layer.tar")
        archive_entry_set_filetype(header, UInt32(Glibc.S_IFREG))
        archive_entry_set_size(header, la_int64_t(st.st_size))
        if archive_write_header(archive, header) < ARCHIVE_WARN { throw ArchiveError("start", path, archive) }
        var hasher = SHA256()
        try copyData(from: Array(tarPath.utf8), size: UInt64(st.st_size), into: archive, path: path) {
            hasher.update(bufferPointer: $0)
        }
        try check(archive, "finish", path) { archive_write_close(archive) }
        return Hash256(hasher.finalize())
    }

    /// Streams `size` bytes of the file at `source` (raw bytes: a name need not be UTF-8).
    private func copyData(
        from source: [UInt8], size: UInt64, into archive: OpaquePointer, path: String,
        seen: (UnsafeRawBufferPointer) -> Void = { _ in }
    ) throws {
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 1 << 20, alignment: 4096)
        defer { buffer.deallocate() }
        try FileChunks.read(source, size: Int64(size), noFollow: true, into: buffer) { bytes, _ in
            if archive_write_data(archive, bytes.baseAddress, bytes.count) < 0 {
                throw ArchiveError("write \(RawPath.display(source)) to", path, archive)
            }
            seen(bytes)
        }
    }

    private func check(_ archive: OpaquePointer, _ operation: String, _ path: String, _ call: () -> Int32) throws {
        if call() < ARCHIVE_WARN { throw ArchiveError(operation, path, archive) }
    }
}
