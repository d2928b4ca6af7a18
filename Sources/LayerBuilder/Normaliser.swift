import CLayerSupport
import Foundation
import Glibc
import LayerSupport

/// Makes a freshly built upper directory reproducible and clean: install dates and mtimes set to
/// the layer epoch, overlayfs's bookkeeping xattrs dropped, and nothing left that belongs to the
/// package manager's working state (lock, log, package cache, sync databases).
struct Normaliser {
    let tree: String
    let epoch: Int64

    /// overlayfs's own bookkeeping (`origin`, `impure`, `nlink`, the upper root's `uuid`) names inode
    /// numbers and ids of the build host. Opaque markers are content and stay.
    static func isBookkeeping(_ attribute: [UInt8]) -> Bool {
        attribute.starts(with: ExtendedAttributes.overlayPrefix) && attribute != Array("trusted.overlay.opaque".utf8)
    }

    /// Working state that must never be part of a layer.
    static let strayPaths = ["var/lib/pacman/db.lck", "var/log/pacman.log"]

    func run() throws {
        for relative in Self.strayPaths { unlink(tree + "/" + relative) }
        try removeContents(of: "var/cache/pacman/pkg")
        try fixInstallDates()
        try clamp(Array(tree.utf8))
    }

    private func removeContents(of relative: String) throws {
        let path = tree + "/" + relative
        guard FileSystem.isDirectory(path) else { return }
        for name in try FileSystem.listDirectory(path) { try FileSystem.removeTree(path + "/" + name) }
    }

    /// `%INSTALLDATE%` is the only varying field libalpm writes into the local database.
    private func fixInstallDates() throws {
        let local = tree + "/var/lib/pacman/local"
        guard FileSystem.isDirectory(local) else { return }
        for entry in try FileSystem.listDirectory(local) {
            let desc = local + "/" + entry + "/desc"
            guard FileSystem.exists(desc), let data = FileManager.default.contents(atPath: desc) else { continue }
            var lines = String(decoding: data, as: UTF8.self).components(separatedBy: "\n")
            guard let index = lines.firstIndex(of: "%INSTALLDATE%"), index + 1 < lines.count else { continue }
            lines[index + 1] = String(epoch)
            // In place and without fsync: the tree is not a layer until its commit, and a crash
            // before that discards it whole.
            try Data(lines.joined(separator: "\n").utf8).write(to: URL(fileURLWithPath: desc))
        }
    }

    /// Depth first, so a directory's time is set after its entries stopped changing it. Paths are
    /// raw bytes: a package may ship names that are not UTF-8.
    private func clamp(_ path: [UInt8]) throws {
        var st = stat()
        guard RawPath.with(path, { lstat($0, &st) }) == 0 else { return }
        if (st.st_mode & S_IFMT) == S_IFDIR {
            for name in try FileSystem.listDirectory(path) { try clamp(RawPath.join(path, name)) }
        }
        try RawPath.with(path) { p in
            for name in ExtendedAttributes.names(p) where Self.isBookkeeping(name) {
                if RawPath.with(name, { lremovexattr(p, $0) }) != 0 && errno != ENODATA {
                    throw SystemError("remove attribute \(RawPath.string(name)) from", RawPath.string(path))
                }
            }
            let mtime = min(Int64(st.st_mtim.tv_sec), epoch)
            if Int64(st.st_mtim.tv_sec) != mtime || st.st_mtim.tv_nsec != 0 || st.st_atim.tv_sec != mtime {
                var times = [timespec(tv_sec: Int(mtime), tv_nsec: 0), timespec(tv_sec: Int(mtime), tv_nsec: 0)]
                try sys("set time of", RawPath.string(path)) { utimensat(AT_FDCWD, p, &times, AT_SYMLINK_NOFOLLOW) }
            }
        }
    }
}
