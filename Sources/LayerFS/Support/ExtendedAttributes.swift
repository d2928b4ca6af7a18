import CLayerSupport
import Glibc

/// The extended attributes of a path, read and changed without following symlinks.
enum ExtendedAttributes {
    static func names(_ path: UnsafePointer<CChar>) -> [String] {
        let size = llistxattr(path, nil, 0)
        guard size > 0 else { return [] }
        var buffer = [CChar](repeating: 0, count: size)
        let read = llistxattr(path, &buffer, size)
        guard read > 0 else { return [] }
        return buffer[0..<read].split(separator: 0).map { String(decoding: $0.map { UInt8(bitPattern: $0) }, as: UTF8.self) }
    }

    static func value(_ path: UnsafePointer<CChar>, _ name: String) -> [UInt8]? {
        let size = lgetxattr(path, name, nil, 0)
        guard size >= 0 else { return nil }
        var buffer = [UInt8](repeating: 0, count: size)
        let read = size == 0 ? 0 : lgetxattr(path, name, &buffer, size)
        return read >= 0 ? Array(buffer[0..<read]) : nil
    }

    static func set(_ path: String, _ name: String, _ value: [UInt8]) throws {
        try sys("set attribute \(name) on", path) { lsetxattr(path, name, value, value.count, 0) }
    }

    static func remove(_ path: String, _ name: String) throws {
        if lremovexattr(path, name) != 0 && errno != ENODATA { throw SystemError("remove attribute \(name) from", path) }
    }
}
