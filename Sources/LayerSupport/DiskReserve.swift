import Glibc

/// What a build or a pull leaves free on the filesystem that holds the store, for the rest of the
/// system. A layer file or an image may be a stranger's: a `run:` step can write until the disk is
/// full, and a zstd blob of a few megabytes unpacks to terabytes (or to millions of empty files).
/// The work stops once the space or the inodes free would fall under the reserve: 5% of the
/// filesystem's, at most 1 GiB and 65,536 inodes. Free means free to an unprivileged process
/// (`f_bavail`, `f_favail`): the blocks ext4 keeps for root stay root's.
package struct DiskReserve: Codable, Sendable {
    /// A folder on the filesystem watched: the store's root.
    package private(set) var folder: String
    package let bytes: UInt64
    /// 0 on a filesystem without an inode count (btrfs).
    package let inodes: UInt64
    /// Where the filesystem is mounted as the user sees it, when the watching process sees it
    /// elsewhere (`seen(at:)`).
    private var shownMountPoint: String?

    package static let largestBytes: UInt64 = 1 << 30
    package static let largestInodes: UInt64 = 65_536

    /// The reserve of the filesystem that holds `folder`.
    package init(for folder: String) throws {
        let fs = try Self.status(of: folder)
        self.folder = folder
        bytes = min(UInt64(fs.f_blocks) * UInt64(fs.f_frsize) / 20, Self.largestBytes)
        inodes = min(UInt64(fs.f_files) / 20, Self.largestInodes)
    }

    /// The same reserve, watched through `folder`: where a process with a root of its own sees
    /// the filesystem. Its messages still name the mount point the user knows.
    package func seen(at folder: String) -> DiskReserve {
        var moved = self
        moved.shownMountPoint = mountPoint
        moved.folder = folder
        return moved
    }

    /// How much work that writes as it goes may do between two checks: a quarter of the
    /// reserve, at most 8 MiB and 1,024 files, so the reserve is never all taken.
    package var checkEvery: (bytes: Int64, entries: Int) {
        (Int64(max(64 << 10, min(8 << 20, bytes / 4))), Int(max(16, min(1024, inodes == 0 ? 1024 : inodes / 4))))
    }

    /// Throws `Reached`, naming what was being done, when less than the reserve is free, or would
    /// be with `holes` bytes more written: the zeros the work left as holes, which take no disk
    /// but are bounded as if they did.
    package func check(_ doing: @autoclosure () -> String, holes: UInt64 = 0) throws {
        let fs = try Self.status(of: folder)
        let freeBytes = UInt64(fs.f_bavail) * UInt64(fs.f_frsize)
        let freeInodes = UInt64(fs.f_favail)
        if freeBytes < bytes {
            throw Reached(doing: doing(), mountPoint: mountPoint, left: formatBytes(Int64(freeBytes)), reserve: formatBytes(Int64(bytes)))
        }
        if freeBytes - bytes < holes {
            let left = formatBytes(Int64(freeBytes))
            throw Reached(
                doing: doing(), mountPoint: mountPoint, left: left, reserve: formatBytes(Int64(bytes)),
                holes: formatBytes(Int64(min(holes, UInt64(Int64.max)))))
        }
        if inodes > 0 && freeInodes < inodes {
            throw Reached(doing: doing(), mountPoint: mountPoint, left: "\(freeInodes) inodes", reserve: "\(inodes) inodes")
        }
    }

    /// Where the filesystem is mounted, which tells a user which disk is full; the folder when the
    /// mount table does not say.
    private var mountPoint: String { shownMountPoint ?? (try? MountTable().mount(holding: folder).target) ?? folder }

    /// Less than the reserve was free.
    package struct Reached: LayerError {
        package let doing: String
        package let mountPoint: String
        package let left: String
        package let reserve: String
        /// The zeros written as holes so far, when they are what passed the reserve.
        package var holes: String? = nil
        package var code: ErrorCode { .system }
        package var message: String { "\(doing) stopped: \(why)" }
        /// The reason alone, for a message that says otherwise what stopped.
        package var why: String {
            let mount = RawPath.display(Array(mountPoint.utf8))
            let kept = "layerctl leaves the last \(reserve) (5%, at most 1 GiB and 65536 inodes) to the rest of the system"
            if let holes {
                return "its files hold \(holes) of zeros, kept as holes, and written out they would not fit in the \(left) "
                    + "free on the filesystem mounted at \(mount), where \(kept)"
            }
            return "the filesystem mounted at \(mount) is down to \(left) free, and \(kept)"
        }
    }

    private static func status(of folder: String) throws -> statvfs {
        var fs = statvfs()
        try sys("read the free space of the filesystem of", folder) { statvfs(folder, &fs) }
        return fs
    }
}
