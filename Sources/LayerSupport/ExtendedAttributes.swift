import CLayerSupport
import Glibc
import Synchronization

/// The extended attributes of a path, read and changed without following symlinks. Names are raw
/// bytes: the kernel takes any bytes but NUL after the namespace prefix, so `user.` followed by
/// 0xff 0xfe is a name a tree can hold and an image must keep.
package enum ExtendedAttributes {
    package static func value(_ path: UnsafePointer<CChar>, _ name: [UInt8]) -> [UInt8]? {
        RawPath.with(name) { name in
            let size = lgetxattr(path, name, nil, 0)
            guard size >= 0 else { return nil }
            var buffer = [UInt8](repeating: 0, count: size)
            let read = size == 0 ? 0 : lgetxattr(path, name, &buffer, size)
            return read >= 0 ? Array(buffer[0..<read]) : nil
        }
    }

    package static func value(_ path: UnsafePointer<CChar>, _ name: String) -> [UInt8]? { value(path, Array(name.utf8)) }

    package static let overlayPrefix = Array("trusted.overlay.".utf8)

    /// Every attribute of `path` by name in byte order, without overlayfs's own (`trusted.overlay.*`).
    package static func all(_ path: [UInt8]) throws -> [ExtendedAttribute] {
        try every(path).filter { !$0.name.starts(with: overlayPrefix) }
    }

    /// Every attribute of `path` by name in byte order, overlayfs's own included: one call lists
    /// the names, which for most entries are none.
    package static func every(_ path: [UInt8]) throws -> [ExtendedAttribute] {
        try RawPath.with(path) { p in
            let size = llistxattr(p, nil, 0)
            if size < 0 {
                if errno == ENOTSUP { return [] }
                throw SystemError("list attributes of", RawPath.string(path))
            }
            guard size > 0 else { return [] }
            var buffer = [CChar](repeating: 0, count: size)
            let read = llistxattr(p, &buffer, size)
            if read < 0 { throw SystemError("list attributes of", RawPath.string(path)) }
            return try values(buffer[0..<read], of: p, path: path)
        }
    }

    /// The attributes `list` names (as llistxattr lists them, each name ended by a NUL) with their
    /// values, read from `p` (`path`), by name in byte order.
    private static func values(_ list: ArraySlice<CChar>, of p: UnsafePointer<CChar>, path: [UInt8]) throws -> [ExtendedAttribute] {
        var result: [ExtendedAttribute] = []
        for raw in list.split(separator: 0) {
            let name = raw.map { UInt8(bitPattern: $0) }
            guard let value = value(p, name) else {
                throw SystemError("read attribute \(RawPath.string(name)) of", RawPath.string(path))
            }
            result.append(ExtendedAttribute(name: name, value: value))
        }
        return result.sorted { $0.name.lexicographicallyPrecedes($1.name) }
    }

    /// Whether the kernel lists attributes relative to a folder (listxattrat, Linux 6.13); cleared
    /// once a call says it does not (and by tests, to take the other way).
    package static let listsAtFolder = Atomic<Bool>(true)

    /// `every(path)` for the entry `name` of the open folder `directory` (`path` is where that
    /// is, for messages and for a kernel that cannot list relative to a folder): the names are
    /// listed without the kernel walking the whole path again, which is most of the cost for an
    /// entry with none.
    package static func every(at directory: Int32, _ name: [UInt8], path: [UInt8]) throws -> [ExtendedAttribute] {
        guard listsAtFolder.load(ordering: .relaxed) else { return try every(path) }
        var buffer = [CChar](repeating: 0, count: 256)
        let size = RawPath.with(name) { lc_listxattr_at(directory, $0, &buffer, buffer.count) }
        if size < 0 && errno == ENOSYS {
            listsAtFolder.store(false, ordering: .relaxed)
            return try every(path)
        }
        if size < 0 && errno == ERANGE { return try every(path) }  // a long list: the rare case
        if size < 0 {
            if errno == ENOTSUP { return [] }
            throw SystemError("list attributes of", RawPath.string(path))
        }
        guard size > 0 else { return [] }
        return try RawPath.with(path) { try values(buffer[0..<min(size, buffer.count)], of: $0, path: path) }
    }

    package static func set(_ path: String, _ name: String, _ value: [UInt8]) throws {
        try sys("set attribute \(name) on", path) { lsetxattr(path, name, value, value.count, 0) }
    }

    package static func remove(_ path: String, _ name: String) throws {
        if lremovexattr(path, name) != 0 && errno != ENODATA {
            throw SystemError("remove attribute \(name) from", path)
        }
    }
}

/// One extended attribute of an entry.
public struct ExtendedAttribute: Hashable, Sendable {
    /// The name as the kernel lists it: raw bytes, which need not be UTF-8.
    public var name: [UInt8]
    public var value: [UInt8]

    public init(name: [UInt8], value: [UInt8]) {
        self.name = name
        self.value = value
    }

    /// The name for messages, bytes that are not UTF-8 as `\xNN`.
    public var displayName: String { RawPath.display(name) }
}
