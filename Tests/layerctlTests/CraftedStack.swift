import CLayerSupport
import Foundation
import Glibc
import LayerSupport

/// A store whose layers are written by hand, entry by entry, to exercise the merge with exactly the
/// trees a case needs: whiteouts, opaque directories, devices, odd names. Each layer gets a record
/// and a ref like a built one, so the real `layerctl export` reads it.
final class CraftedStack {
    let store: String
    private(set) var keys: [String] = []
    private var epoch: Int64 = 1_700_000_000

    init(_ name: String) throws {
        store = try Harness.temporaryDirectory("crafted-\(name)")
        // Explicit modes: libarchive reads the umask by setting it to 0 for a moment, and other suites
        // extract packages with it in this process, so the umask cannot be trusted here.
        for folder in ["layers", "refs", "tmp", "locks", "cache"] {
            try FileManager.default.createDirectory(
                atPath: store + "/" + folder, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o755])
        }
    }

    /// The tree of the layer `index` (0 = bottom).
    func tree(_ index: Int) -> String { store + "/layers/" + keys[index] + "/tree" }

    /// Adds a layer on top (or on layer `parent`), fills it with `fill`, and records it under
    /// `name`. With `recordOpaque`, the record lists the tree's opaque directories, as a build
    /// records them.
    @discardableResult
    func layer(
        _ name: String, on parent: Int? = nil, recordOpaque: Bool = false, key chosen: String? = nil,
        _ fill: (Tree) throws -> Void
    ) throws -> String {
        let key = chosen ?? (UUID().uuidString + UUID().uuidString).replacingOccurrences(of: "-", with: "").lowercased()
        let directory = store + "/layers/" + key
        try FileManager.default.createDirectory(
            atPath: directory + "/tree", withIntermediateDirectories: true,
            attributes: [.posixPermissions: 0o755])
        let tree = Tree(root: directory + "/tree")
        try fill(tree)
        try tree.finish()
        var record: [String: Any] = [
            "formatVersion": 1, "key": key, "parent": (parent.map { keys[$0] } ?? keys.last) ?? NSNull(), "name": name, "specDigest": key,
            "added": [], "removed": [], "installed": [], "treeBytes": 0, "fileCount": 0, "treeDigest": key,
            "sourceDateEpoch": epoch, "buildSeconds": 0, "builtAt": "2026-01-01T00:00:00Z",
        ]
        if recordOpaque { record["opaqueDirectories"] = tree.opaqueDirectories }
        try JSONSerialization.data(withJSONObject: record).write(to: URL(fileURLWithPath: directory + "/layer.json"))
        try (key + "\n").write(toFile: store + "/refs/" + name, atomically: false, encoding: .utf8)
        keys.append(key)
        return key
    }

    /// The lowerdir option for overlayfs over the layers up to `top` (default: all), top first.
    func lowerdir(upTo top: Int? = nil) -> String {
        (0...(top ?? keys.count - 1)).reversed().map(tree).joined(separator: ":")
    }

    /// Writes entries into one layer tree with raw byte names; every call names its path from the
    /// tree root, and parents must exist. Times default to a fixed epoch, owners to 0:0.
    final class Tree {
        let root: String
        private var directories: [([UInt8], Int64)] = []
        private(set) var opaqueDirectories: [String] = []

        init(root: String) { self.root = root }

        func full(_ path: [UInt8]) -> [UInt8] { Array(root.utf8) + [UInt8(ascii: "/")] + path }

        func file(
            _ path: String, _ content: String = "", mode: mode_t = 0o644, owner: (uid_t, gid_t) = (0, 0),
            mtime: Int64 = 1_600_000_000
        ) throws {
            try file(Array(path.utf8), Array(content.utf8), mode: mode, owner: owner, mtime: mtime)
        }

        func file(
            _ path: [UInt8], _ content: [UInt8], mode: mode_t = 0o644, owner: (uid_t, gid_t) = (0, 0),
            mtime: Int64 = 1_600_000_000
        ) throws {
            let target = full(path)
            let fd = withC(target) { open($0, O_WRONLY | O_CREAT | O_TRUNC, 0o600) }
            guard fd >= 0 else { throw SystemError("create", String(decoding: target, as: UTF8.self)) }
            _ = content.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
            close(fd)
            try finishEntry(target, mode: mode, owner: owner, mtime: mtime)
        }

        /// A file of `size` bytes that holds `data` at `offset` and holes elsewhere.
        func sparse(_ path: String, size: Int, data: String, at offset: Int) throws {
            try sparse(path, size: size, pieces: [(offset, Array(data.utf8))])
        }

        /// A file of `size` bytes that holds each piece's bytes at its offset and zeros elsewhere:
        /// holes, or with `holes: false` zeros written out.
        func sparse(_ path: String, size: Int, pieces: [(offset: Int, bytes: [UInt8])], holes: Bool = true) throws {
            let target = full(Array(path.utf8))
            let fd = withC(target) { open($0, O_WRONLY | O_CREAT | O_TRUNC, 0o644) }
            guard fd >= 0 else { throw SystemError("create", path) }
            defer { close(fd) }
            var written = pieces
            if !holes {
                var all = [UInt8](repeating: 0, count: size)
                for piece in pieces {
                    all.replaceSubrange(piece.offset..<(piece.offset + piece.bytes.count), with: piece.bytes)
                }
                written = [(0, all)]
            }
            for piece in written {
                let count = piece.bytes.withUnsafeBytes { pwrite(fd, $0.baseAddress, $0.count, off_t(piece.offset)) }
                guard count == piece.bytes.count else { throw SystemError("write", path) }
            }
            ftruncate(fd, off_t(size))
            try finishEntry(target, mode: 0o644, owner: (0, 0), mtime: 1_600_000_000)
        }

        func directory(
            _ path: String, mode: mode_t = 0o755, owner: (uid_t, gid_t) = (0, 0), mtime: Int64 = 1_600_000_000
        ) throws {
            try directory(Array(path.utf8), mode: mode, owner: owner, mtime: mtime)
        }

        func directory(
            _ path: [UInt8], mode: mode_t = 0o755, owner: (uid_t, gid_t) = (0, 0), mtime: Int64 = 1_600_000_000
        ) throws {
            let target = full(path)
            guard withC(target, { mkdir($0, 0o700) }) == 0 else {
                throw SystemError("mkdir", String(decoding: target, as: UTF8.self))
            }
            try finishEntry(target, mode: mode, owner: owner, mtime: nil)
            directories.append((target, mtime))
        }

        func symlink(_ path: String, to target: String) throws {
            try symlink(Array(path.utf8), to: Array(target.utf8))
        }

        func symlink(_ path: [UInt8], to target: [UInt8]) throws {
            let link = full(path)
            guard withC(link, { l in withC(target) { Glibc.symlink($0, l) } }) == 0 else {
                throw SystemError("symlink", String(decoding: path, as: UTF8.self))
            }
            try finishEntry(link, mode: nil, owner: (0, 0), mtime: 1_600_000_000)
        }

        func hardLink(_ path: String, to existing: String) throws {
            guard Glibc.link(root + "/" + existing, root + "/" + path) == 0 else { throw SystemError("link", path) }
        }

        /// overlayfs's whiteout: a character device 0:0.
        func whiteout(_ path: String) throws {
            guard mknod(root + "/" + path, S_IFCHR | 0o000, 0) == 0 else { throw SystemError("whiteout", path) }
        }

        func opaque(_ path: String) throws {
            guard lsetxattr(root + "/" + path, "trusted.overlay.opaque", "y", 1, 0) == 0 else {
                throw SystemError("opaque", path)
            }
            opaqueDirectories.append("/" + path)
        }

        func device(_ path: String, character: Bool, major: UInt32, minor: UInt32, mode: mode_t = 0o660) throws {
            let rdev = Device.make(major, minor)
            guard mknod(root + "/" + path, (character ? S_IFCHR : S_IFBLK) | 0o600, rdev) == 0 else {
                throw SystemError("mknod", path)
            }
            try finishEntry(full(Array(path.utf8)), mode: mode, owner: (0, 6), mtime: 1_600_000_000)
        }

        func fifo(_ path: String) throws {
            guard mkfifo(root + "/" + path, 0o600) == 0 else { throw SystemError("mkfifo", path) }
            try finishEntry(full(Array(path.utf8)), mode: 0o620, owner: (0, 0), mtime: 1_600_000_000)
        }

        /// A socket file, made with mknod(2): binding one would need a path shorter than sun_path.
        func socket(_ path: String) throws {
            guard mknod(root + "/" + path, S_IFSOCK | 0o600, 0) == 0 else { throw SystemError("mknod", path) }
            try finishEntry(full(Array(path.utf8)), mode: 0o755, owner: (0, 0), mtime: 1_600_000_000)
        }

        func xattr(_ path: String, _ name: String, _ value: [UInt8]) throws {
            try xattr(path, Array(name.utf8), value)
        }

        /// An attribute whose name is raw bytes, which need not be UTF-8.
        func xattr(_ path: String, _ name: [UInt8], _ value: [UInt8]) throws {
            guard withC(name, { lsetxattr(root + "/" + path, $0, value, value.count, 0) }) == 0 else {
                throw SystemError("set \(String(decoding: name, as: UTF8.self)) on", path)
            }
        }

        private func finishEntry(_ path: [UInt8], mode: mode_t?, owner: (uid_t, gid_t), mtime: Int64?) throws {
            try withC(path) { p in
                guard lchown(p, owner.0, owner.1) == 0 else { throw SystemError("chown", String(cString: p)) }
                if let mode, chmod(p, mode) != 0 { throw SystemError("chmod", String(cString: p)) }
                if let mtime {
                    var times = [timespec(tv_sec: Int(mtime), tv_nsec: 0), timespec(tv_sec: Int(mtime), tv_nsec: 0)]
                    guard utimensat(AT_FDCWD, p, &times, AT_SYMLINK_NOFOLLOW) == 0 else {
                        throw SystemError("utimensat", String(cString: p))
                    }
                }
            }
        }

        /// Sets directory times last, since adding entries moves them.
        func finish() throws {
            for (path, mtime) in directories.reversed() {
                try withC(path) { p in
                    var times = [timespec(tv_sec: Int(mtime), tv_nsec: 0), timespec(tv_sec: Int(mtime), tv_nsec: 0)]
                    guard utimensat(AT_FDCWD, p, &times, AT_SYMLINK_NOFOLLOW) == 0 else {
                        throw SystemError("utimensat", String(cString: p))
                    }
                }
            }
            var times = [timespec(tv_sec: 1_600_000_000, tv_nsec: 0), timespec(tv_sec: 1_600_000_000, tv_nsec: 0)]
            utimensat(AT_FDCWD, root, &times, 0)
        }
    }
}

func withC<T>(_ path: [UInt8], _ body: (UnsafePointer<CChar>) throws -> T) rethrows -> T {
    try (path + [0]).withUnsafeBufferPointer { try $0.withMemoryRebound(to: CChar.self) { try body($0.baseAddress!) } }
}

/// glibc's device number encoding (makedev, major, minor are macros Swift cannot see).
enum Device {
    static func make(_ major: UInt32, _ minor: UInt32) -> dev_t {
        let major = UInt64(major)
        let minor = UInt64(minor)
        return dev_t(((major & 0xfff) << 8) | (minor & 0xff) | ((major & ~0xfff) << 32) | ((minor & ~0xff) << 12))
    }

    static func major(_ device: dev_t) -> UInt64 { ((UInt64(device) >> 8) & 0xfff) | ((UInt64(device) >> 32) & ~0xfff) }
    static func minor(_ device: dev_t) -> UInt64 { (UInt64(device) & 0xff) | ((UInt64(device) >> 12) & ~0xff) }
}
