import CLayerSupport
import Foundation
import Glibc
import LayerEntries
import LayerSupport

/// An extended attribute of an unpacked layer that only a process with CAP_SYS_ADMIN may set: a
/// `trusted.*` attribute of an entry, or the opaque marker of a folder. The confined process that
/// unpacks a blob does not keep that capability, so it hands them to layerctl, which sets them once
/// that process is gone.
package struct DeferredAttribute: Codable, Equatable, Sendable {
    /// The entry, relative to the tree, as raw bytes ([] for the tree itself).
    package var path: [UInt8]
    package var name: [UInt8]
    package var value: [UInt8]

    package init(path: [UInt8], name: [UInt8], value: [UInt8]) {
        self.path = path
        self.name = name
        self.value = value
    }

    // As base64, not as JSON's lists of numbers: an unpack's answer holds one for each opaque
    // folder of a blob, in one line of at most 64 MiB (`NamespacedWork.longestEvent`).
    private enum CodingKeys: String, CodingKey { case path, name, value }

    package init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        path = Array(try container.decode(Data.self, forKey: .path))
        name = Array(try container.decode(Data.self, forKey: .name))
        value = Array(try container.decode(Data.self, forKey: .value))
    }

    package func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(Data(path), forKey: .path)
        try container.encode(Data(name), forKey: .name)
        try container.encode(Data(value), forKey: .value)
    }

    /// Why setting the attribute `name` of `size` bytes on `entry` failed with `error`. What the
    /// blob asks for and the store's filesystem cannot hold or take is the blob's, and said so: a
    /// name longer than Linux takes, a value larger than the filesystem holds on one file (ext4
    /// keeps a file's attributes in one block unless it was made with `ea_inode`), a name of no
    /// namespace the kernel has or a value it refuses (an ACL or a file capability it cannot
    /// read). Anything else is the system's error.
    static func setFailure(_ name: [UInt8], size: Int, of entry: String, blob: String, errno error: Int32) -> any Error {
        let shown = PathLimit.shortened(name)
        if name.count > nameLimit {
            return LayerBlobError(
                message: "the layer blob \(blob) gives \(entry) an attribute named \(shown), of \(name.count) bytes, "
                    + "longer than an attribute's name may be (\(nameLimit))")
        }
        switch error {
        case ENOSPC, E2BIG, ERANGE:
            return LayerBlobError(
                message: "the layer blob \(blob) gives \(entry) the attribute \(shown) of \(formatBytes(Int64(size))), "
                    + "more than the store's filesystem holds on one file")
        case EOPNOTSUPP, EINVAL:
            return LayerBlobError(
                message: "the layer blob \(blob) gives \(entry) the attribute \(shown), which the store's filesystem does not take "
                    + "(\(String(cString: strerror(error))))")
        default:
            return SystemError("set attribute \(shown) on", entry, errno: error)
        }
    }

    /// The longest name of an attribute, in bytes (XATTR_NAME_MAX).
    static let nameLimit = 255

    static let trustedPrefix = Array("trusted.".utf8)
    static let overlayPrefix = Array("trusted.overlay.".utf8)
    static let opaque = Array("trusted.overlay.opaque".utf8)

    /// Sets each of `attributes` in `tree`, which a process that is not trusted wrote: no path is
    /// followed through a symlink, and only what an unpack defers is taken, a `trusted.*`
    /// attribute but overlayfs's own, or the opaque marker `y` of a folder. Anything else is the
    /// sign of an unpack that did not do what it was asked, and is refused, naming the entry.
    package static func apply(_ attributes: [DeferredAttribute], in tree: String, blob: String) throws {
        for attribute in attributes {
            let shown = "/" + RawPath.display(attribute.path)
            let isOpaque = attribute.name == opaque
            guard
                (isOpaque && attribute.value == Array("y".utf8))
                    || (attribute.name.starts(with: trustedPrefix) && !attribute.name.starts(with: overlayPrefix)),
                !attribute.name.contains(0)
            else {
                throw LayerBlobError(
                    message: "the unpack of \(blob) handed back the attribute \(RawPath.display(attribute.name)) of \(shown), which no unpack sets")
            }
            let parts = attribute.path.split(separator: 0x2F, omittingEmptySubsequences: true).map(Array.init)
            guard !parts.contains([0x2E]), !parts.contains([0x2E, 0x2E]) else {
                throw LayerBlobError(message: "the unpack of \(blob) handed back an attribute of \(shown), which no layer entry is named")
            }
            // The folder that holds the entry, reached one real folder at a time.
            var folder = try sys("open", tree) { open(tree, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC) }
            defer { close(folder) }
            for part in parts.dropLast() {
                let next = try sys("open the folder", shown) {
                    RawPath.with(part) { openat(folder, $0, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC) }
                }
                close(folder)
                folder = next
            }
            var target = stat()
            let found = parts.last.map { last in RawPath.with(last) { fstatat(folder, $0, &target, AT_SYMLINK_NOFOLLOW) } }
                ?? fstat(folder, &target)
            guard found == 0 else { throw SystemError("set attribute \(RawPath.display(attribute.name)) on", shown) }
            if isOpaque && target.st_mode & S_IFMT != S_IFDIR {
                throw LayerBlobError(message: "the unpack of \(blob) handed back an opaque marker for \(shown), which is no folder")
            }
            let set = RawPath.with(attribute.name) { name in
                attribute.value.withUnsafeBytes { value in
                    guard let last = parts.last else { return fsetxattr(folder, name, value.baseAddress, value.count, 0) }
                    // The entry through the descriptor of its folder: lsetxattr follows no
                    // final symlink.
                    return RawPath.with(Array("/proc/self/fd/\(folder)/".utf8) + last) {
                        lsetxattr($0, name, value.baseAddress, value.count, 0)
                    }
                }
            }
            let error = errno
            if set != 0 { throw setFailure(attribute.name, size: attribute.value.count, of: shown, blob: blob, errno: error) }
        }
    }
}
