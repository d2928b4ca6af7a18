import CLayerSupport
import CMount
import Glibc

/// The mounts a process sees, read from its mountinfo through libmount (`mnt_new_table_from_file`).
public struct MountTable: Sendable {
    public struct Entry: Hashable, Sendable {
        public var target: String
        public var fstype: String
        public var source: String
        /// The filesystem's device number (st_dev of what is on it) and the directory of that
        /// filesystem mounted here ("/" unless it is a bind mount of a subdirectory).
        public var device: UInt64 = 0
        public var root: String = "/"
        /// The mount's id (the first field of mountinfo).
        public var id: Int32 = 0
    }

    public let entries: [Entry]

    /// Reads `/proc/<pid>/mountinfo`, or the calling process's own.
    public init(pid: Int32? = nil) throws {
        let path = pid.map { "/proc/\($0)/mountinfo" } ?? "/proc/self/mountinfo"
        guard let table = mnt_new_table_from_file(path) else {
            throw Mounter.MountError(operation: "read mount table", target: path, reason: "libmount could not parse it")
        }
        defer { mnt_unref_table(table) }
        guard let iterator = mnt_new_iter(Int32(MNT_ITER_FORWARD)) else {
            throw Mounter.MountError(operation: "read mount table", target: path, reason: "out of memory")
        }
        defer { mnt_free_iter(iterator) }
        var fs: OpaquePointer?
        var entries: [Entry] = []
        while mnt_table_next_fs(table, iterator, &fs) == 0, let fs {
            entries.append(Entry(
                target: mnt_fs_get_target(fs).map { String(cString: $0) } ?? "",
                fstype: mnt_fs_get_fstype(fs).map { String(cString: $0) } ?? "",
                source: mnt_fs_get_source(fs).map { String(cString: $0) } ?? "",
                device: UInt64(mnt_fs_get_devno(fs)),
                root: mnt_fs_get_root(fs).map { String(cString: $0) } ?? "/",
                id: mnt_fs_get_id(fs)))
        }
        self.entries = entries
    }

    /// The mount that holds `path` (an existing file): the one statx names, or, on a kernel before
    /// 5.8, the last one mounted for its device whose target is a prefix of it. (On btrfs, a file's
    /// device number is its subvolume's, which mountinfo never shows: every lookup by device
    /// failed there, and with it `stage` on a btrfs root.)
    public func mount(holding path: String) throws -> Entry {
        let id = lc_mount_id(path)
        if id >= 0, let entry = entries.last(where: { Int64($0.id) == id }) { return entry }
        var st = stat()
        guard stat(path, &st) == 0 else { throw SystemError("inspect", path) }
        let candidates = entries.filter {
            $0.device == UInt64(st.st_dev)
                && ($0.target == "/" || path == $0.target || path.hasPrefix($0.target + "/"))
        }
        guard let entry = candidates.max(by: { $0.target.count < $1.target.count }) else {
            if !entries.contains(where: { $0.target == "/" }) {
                // In a chroot of a plain folder the mount that holds it is outside, and unseen.
                throw UnmountedRoot(
                    message: "no mount this process sees holds \(path), since / is no mount point here, as in a chroot of a plain "
                        + "folder; \(UnmountedRoot.advice)")
            }
            throw SystemError("find the mount that holds", path, errno: ENOENT)
        }
        return entry
    }

    /// The mounts at or below `path`.
    public func mounts(under path: String) -> [Entry] {
        entries.filter { $0.target == path || $0.target.hasPrefix(path.hasSuffix("/") ? path : path + "/") }
    }
}
