import Foundation
import Glibc
import LayerSupport

/// Everything a layer tree holds, as one file beside it: each entry's name, type, metadata, link
/// target, xattrs and, for regular files, the sha256 of the data. Whiteouts stay in as the 0:0
/// character devices they are, and opaque directories are marked.
///
/// The builder writes it while it digests the finished tree (`TreeScan`), so reading it costs one
/// file instead of an lstat and a listxattr per entry, and an export knows every file's content
/// without reading it. Layers are immutable, so the manifest stays true for the layer's life.
///
/// Entries are stored like `MergedTree`'s: flat, the root first, a directory's children contiguous
/// and in byte order of their names. `source` and `layer` are left empty; the merge fills them in.
public struct LayerManifest: Sendable {
    public var entries: [MergedTree.Entry]
    /// Indices of the directories marked `trusted.overlay.opaque=y`.
    public var opaque: Set<Int>

    package init(entries: [MergedTree.Entry], opaque: Set<Int>) {
        self.entries = entries
        self.opaque = opaque
    }

    package static let fileName = "manifest"
    private static let magic = Array("LCMF0001".utf8)

    package static let placeholder = MergedTree.Entry(
        name: [], parent: 0, kind: .directory, permissions: 0, uid: 0, gid: 0, mtime: 0, size: 0, rdev: 0,
        linkTarget: [], xattrs: [], source: [], layer: 0, children: 0..<0, hardLinkTarget: nil, linkCount: 1)

    // MARK: The file

    /// The manifest file: nil when there is none, `.some(nil)` when it is damaged (cut short,
    /// edited, or not a manifest at all).
    package static func read(_ path: String) throws -> LayerManifest?? {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        if fd < 0 {
            if errno == ENOENT { return nil }
            throw SystemError("read", path)
        }
        defer { close(fd) }
        var st = stat()
        try sys("read", path) { fstat(fd, &st) }
        var bytes = [UInt8](repeating: 0, count: Int(st.st_size))
        let count = bytes.withUnsafeMutableBytes { pread(fd, $0.baseAddress, $0.count, 0) }
        if count != bytes.count { throw SystemError("read", path, errno: count < 0 ? errno : EIO) }
        return .some(bytes.withUnsafeBytes { decode($0) })
    }

    /// Whether the manifest at `path` exists and does not read.
    package static func isDamaged(_ path: String) -> Bool {
        // try? flattens: nil (no file, or unreadable), .some(nil) (damaged), .some(manifest).
        guard case .some(.none) = try? read(path) else { return false }
        return true
    }

    package func write(to path: String) throws { try FileSystem.writeAtomically(Data(encoded()), to: path) }

    package func encoded() -> [UInt8] {
        var out = ByteWriter()
        out.bytes = Self.magic
        out.put(UInt32(entries.count))
        for (index, entry) in entries.enumerated() {
            let flags: UInt8 =
                (opaque.contains(index) ? 1 : 0) | (entry.content != nil ? 2 : 0)
                | (entry.hardLinkTarget != nil ? 4 : 0)
            out.put(entry.kind.rawValue)
            out.put(flags)
            out.put(entry.permissions)
            out.put(entry.uid)
            out.put(entry.gid)
            out.put(UInt64(bitPattern: entry.mtime))
            out.put(entry.size)
            out.put(entry.rdev)
            out.put(UInt32(entry.parent))
            out.put(UInt32(entry.children.lowerBound))
            out.put(UInt32(entry.children.count))
            if let target = entry.hardLinkTarget { out.put(UInt32(target)) }
            out.putBytes(entry.name)
            out.putBytes(entry.linkTarget)
            out.put(UInt32(entry.xattrs.count))
            for attribute in entry.xattrs {
                out.putBytes(attribute.name)
                out.putBytes(attribute.value)
            }
            if let content = entry.content { out.bytes += content.bytes }
        }
        return out.bytes
    }

    package static func decode(_ raw: UnsafeRawBufferPointer) -> LayerManifest? {
        var input = ByteReader(raw: raw)
        guard input.take(magic.count).map({ Array($0) }) == magic, let count = input.u32() else { return nil }
        var entries: [MergedTree.Entry] = []
        // The count is the file's word: a damaged one must not ask for more memory than the
        // entries the file can hold (each takes more than 16 bytes).
        entries.reserveCapacity(min(Int(count), raw.count / 16))
        var opaque = Set<Int>()
        for index in 0..<Int(count) {
            guard let kindByte = input.u8(), let kind = MergedTree.Kind(rawValue: kindByte), let flags = input.u8(),
                let permissions = input.u16(), let uid = input.u32(), let gid = input.u32(), let mtime = input.u64(),
                let size = input.u64(), let rdev = input.u64(), let parent = input.u32(), let first = input.u32(),
                let childCount = input.u32()
            else { return nil }
            var hardLinkTarget: Int?
            if flags & 4 != 0 {
                // Any order: the name the build met first need not come first in the manifest.
                guard let target = input.u32(), Int(target) < Int(count), Int(target) != index else { return nil }
                hardLinkTarget = Int(target)
            }
            guard let name = input.bytes(), let linkTarget = input.bytes(), let xattrCount = input.u32() else {
                return nil
            }
            var xattrs: [MergedTree.ExtendedAttribute] = []
            for _ in 0..<xattrCount {
                guard let attributeName = input.bytes(), let value = input.bytes() else { return nil }
                xattrs.append(.init(name: attributeName, value: value))
            }
            var content: Hash256?
            if flags & 2 != 0 {
                guard let digest = input.take(32) else { return nil }
                content = Hash256(digest.baseAddress!)
            }
            let children = Int(first)..<(Int(first) + Int(childCount))
            guard Int(parent) < Int(count), children.upperBound <= Int(count), children.isEmpty || first > index
            else { return nil }
            if flags & 1 != 0 { opaque.insert(index) }
            entries.append(
                MergedTree.Entry(
                    name: name, parent: Int(parent), kind: kind, permissions: permissions, uid: uid, gid: gid,
                    mtime: Int64(bitPattern: mtime), size: size, rdev: rdev, linkTarget: linkTarget, xattrs: xattrs,
                    source: [], layer: 0, children: children, hardLinkTarget: hardLinkTarget, linkCount: 1,
                    content: content))
        }
        guard input.isAtEnd, !entries.isEmpty, entries[0].kind == .directory else { return nil }
        // A link names the first name of its group, which is no link itself, of the same kind.
        for entry in entries {
            guard let target = entry.hardLinkTarget else { continue }
            let head = entries[target]
            guard head.hardLinkTarget == nil, head.kind == entry.kind, head.kind != .directory else { return nil }
        }
        return LayerManifest(entries: entries, opaque: opaque)
    }
}
