import CMount

/// The mounts a process sees, read from its mountinfo through libmount (`mnt_new_table_from_file`).
public struct MountTable: Sendable {
    public struct Entry: Hashable, Sendable {
        public var target: String
        public var fstype: String
        public var source: String
    }

    public let entries: [Entry]

    /// Reads `/proc/<pid>/mountinfo`, or the calling process's own.
    public init(pid: Int32? = nil) throws {
        let path = pid.map { "/proc/\($0)/mountinfo" } ?? "/proc/self/mountinfo"
        guard let table = mnt_new_table_from_file(path) else {
            throw Mounter.MountError(operation: "read mount table", target: path, message: "libmount could not parse it")
        }
        defer { mnt_unref_table(table) }
        guard let iterator = mnt_new_iter(Int32(MNT_ITER_FORWARD)) else {
            throw Mounter.MountError(operation: "read mount table", target: path, message: "out of memory")
        }
        defer { mnt_free_iter(iterator) }
        var fs: OpaquePointer?
        var entries: [Entry] = []
        while mnt_table_next_fs(table, iterator, &fs) == 0, let fs {
            entries.append(Entry(
                target: mnt_fs_get_target(fs).map { String(cString: $0) } ?? "",
                fstype: mnt_fs_get_fstype(fs).map { String(cString: $0) } ?? "",
                source: mnt_fs_get_source(fs).map { String(cString: $0) } ?? ""))
        }
        self.entries = entries
    }

    /// The mounts at or below `path`.
    public func mounts(under path: String) -> [Entry] {
        entries.filter { $0.target == path || $0.target.hasPrefix(path.hasSuffix("/") ? path : path + "/") }
    }
}
