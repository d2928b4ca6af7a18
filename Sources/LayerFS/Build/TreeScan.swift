import Crypto
import Foundation
import Glibc

/// Walks a layer tree in byte order and sums it up: entry count, bytes of file data, and a digest
/// over every name, type, mode, owner, mtime, device number, link target, xattr and content — so
/// two trees with equal digests are the same tree.
struct TreeScan {
    private(set) var fileCount = 0
    private(set) var bytes: Int64 = 0
    /// Directories marked opaque, relative to the tree ("/etc/foo"), in byte order; nil when one of
    /// their names is not UTF-8 and so cannot be written down as text.
    private(set) var opaqueDirectories: [String]? = []
    private var hasher = SHA256()

    static func scan(_ root: String) throws -> TreeScan {
        var scan = TreeScan()
        try scan.visit(Array(root.utf8), relative: [])
        return scan
    }

    var digest: String { Digest.hex(hasher.finalize()) }

    /// Names are raw bytes, so names that are not UTF-8 are hashed as they are; for UTF-8 names the
    /// line is the same text as before.
    private mutating func visit(_ path: [UInt8], relative: [UInt8]) throws {
        var st = stat()
        guard RawPath.with(path, { lstat($0, &st) }) == 0 else { throw SystemError("inspect", RawPath.string(path)) }
        var line: [UInt8] = relative.isEmpty ? Array("/".utf8) : relative
        line += Array("\0\(st.st_mode)\0\(st.st_uid):\(st.st_gid)\0\(st.st_mtim.tv_sec)\0".utf8)
        switch st.st_mode & S_IFMT {
        case S_IFREG:
            line += Array("\(st.st_size)\0".utf8) + Array(try Digest.sha256(file: path).utf8)
            bytes += Int64(st.st_size)
        case S_IFLNK:
            var buffer = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
            let n = RawPath.with(path) { readlink($0, &buffer, buffer.count - 1) }
            line += buffer[0..<max(0, n)].map { UInt8(bitPattern: $0) }
        case S_IFCHR, S_IFBLK:
            line += Array("\(st.st_rdev)".utf8)
        default:
            break
        }
        try RawPath.with(path) { p in
            for name in ExtendedAttributes.names(p).sorted() {
                let value = ExtendedAttributes.value(p, name) ?? []
                line += Array("\0\(name)=".utf8) + Array(Digest.hex(value).utf8)
                if name == "trusted.overlay.opaque" && value == Array("y".utf8) {
                    if let text = String(validating: relative, as: UTF8.self) {
                        opaqueDirectories?.append(text)
                    } else {
                        opaqueDirectories = nil
                    }
                }
            }
        }
        line.append(0x0A)
        hasher.update(data: line)
        if !relative.isEmpty { fileCount += 1 }
        if (st.st_mode & S_IFMT) == S_IFDIR {
            for name in try FileSystem.listDirectory(path) {
                try visit(RawPath.join(path, name), relative: relative + [0x2F] + name)
            }
        }
    }
}
