import Crypto
import Foundation
import Glibc

/// Walks a layer tree in byte order and sums it up: entry count, bytes of file data, and a digest
/// over every name, type, mode, owner, mtime, device number, link target, xattr and content — so
/// two trees with equal digests are the same tree.
struct TreeScan {
    private(set) var fileCount = 0
    private(set) var bytes: Int64 = 0
    /// Directories marked opaque, relative to the tree ("/etc/foo"), in byte order.
    private(set) var opaqueDirectories: [String] = []
    private var hasher = SHA256()

    static func scan(_ root: String) throws -> TreeScan {
        var scan = TreeScan()
        try scan.visit(root, relative: "")
        return scan
    }

    var digest: String { Digest.hex(hasher.finalize()) }

    private mutating func visit(_ path: String, relative: String) throws {
        var st = stat()
        try sys("inspect", path) { lstat(path, &st) }
        var line = "\(relative.isEmpty ? "/" : relative)\0\(st.st_mode)\0\(st.st_uid):\(st.st_gid)\0"
            + "\(st.st_mtim.tv_sec)\0"
        switch st.st_mode & S_IFMT {
        case S_IFREG:
            line += "\(st.st_size)\0" + (try Digest.sha256(file: path))
            bytes += Int64(st.st_size)
        case S_IFLNK:
            var buffer = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
            let n = readlink(path, &buffer, buffer.count - 1)
            line += String(decoding: buffer[0..<max(0, n)].map { UInt8(bitPattern: $0) }, as: UTF8.self)
        case S_IFCHR, S_IFBLK:
            line += "\(st.st_rdev)"
        default:
            break
        }
        for name in ExtendedAttributes.names(path).sorted() {
            let value = ExtendedAttributes.value(path, name) ?? []
            line += "\0\(name)=" + Digest.hex(value)
            if name == "trusted.overlay.opaque" && value == Array("y".utf8) { opaqueDirectories.append(relative) }
        }
        hasher.update(data: Data((line + "\n").utf8))
        if !relative.isEmpty { fileCount += 1 }
        if (st.st_mode & S_IFMT) == S_IFDIR {
            for name in try FileSystem.listDirectory(path) {
                try visit(path + "/" + name, relative: relative + "/" + name)
            }
        }
    }
}
