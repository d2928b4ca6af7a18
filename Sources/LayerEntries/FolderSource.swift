import Glibc
import LayerSupport

/// A folder's entries, read from the filesystem: a layer tree, an overlay's upper folder, or the
/// running system. Whiteouts and `trusted.overlay.opaque` mean what they mean to overlayfs.
///
/// Reading `trusted.*` attributes needs CAP_SYS_ADMIN, so a folder's opaque directories may be given
/// as a list instead (the store records them when it builds a layer); as root, the attribute decides.
public struct FolderSource: EntrySource {
    public let path: [UInt8]
    /// The opaque folders relative to `path` ("" for the root, "/etc/x" below it), or nil to read
    /// `trusted.overlay.opaque`.
    private let opaque: Set<[UInt8]>?
    /// Leave out what is on other filesystems than the root (mounts such as /proc), as `find -xdev`.
    private let oneFilesystem: Bool

    public init(_ path: String, opaqueDirectories: [String]? = nil, oneFilesystem: Bool = false) throws {
        self.path = Array(path.utf8)
        self.oneFilesystem = oneFilesystem
        if geteuid() == 0 {
            opaque = nil
        } else if let list = opaqueDirectories {
            opaque = Set(list.map { Array($0.utf8) })
        } else {
            throw MergeError.needsPrivilege(path)
        }
    }

    public func root() throws -> SourceEntry {
        var st = stat()
        _ = try RawPath.with(path) { p in try sys("read layer tree", RawPath.string(path)) { lstat(p, &st) } }
        guard st.st_mode & S_IFMT == S_IFDIR else { throw MergeError.notADirectory(RawPath.string(path)) }
        return try sourceEntry(path, name: [], st)
    }

    public func children(of directory: SourceEntry) throws -> [SourceEntry] {
        let folder = directory.entry.source
        guard let dir = RawPath.with(folder, { opendir($0) }) else {
            throw SystemError("read directory", RawPath.string(folder))
        }
        defer { closedir(dir) }
        let fd = dirfd(dir)
        var here = stat()
        if oneFilesystem { fstat(fd, &here) }
        var result: [SourceEntry] = []
        while let dirent = readdir(dir) {
            let name: [UInt8] = withUnsafeBytes(of: dirent.pointee.d_name) { Array($0.prefix { $0 != 0 }) }
            if name == [0x2E] || name == [0x2E, 0x2E] { continue }
            var st = stat()
            let childPath = RawPath.join(folder, name)
            if RawPath.with(name, { fstatat(fd, $0, &st, AT_SYMLINK_NOFOLLOW) }) != 0 {
                throw SystemError("read", RawPath.string(childPath))
            }
            if oneFilesystem && st.st_dev != here.st_dev { continue }
            result.append(try sourceEntry(childPath, name: name, st))
        }
        return result.sorted { $0.entry.name.lexicographicallyPrecedes($1.entry.name) }
    }

    private func sourceEntry(_ full: [UInt8], name: [UInt8], _ st: stat) throws -> SourceEntry {
        var entry = try MergedTree.Entry.read(full, st, epoch: Int64.max)
        entry.name = name
        let isFolder = st.st_mode & S_IFMT == S_IFDIR
        let group = !isFolder && st.st_nlink > 1 ? UInt64(st.st_ino) : nil
        return SourceEntry(entry: entry, isOpaque: isFolder && isOpaque(full), linkGroup: group)
    }

    private func isOpaque(_ full: [UInt8]) -> Bool {
        if let opaque { return opaque.contains(Array(full.dropFirst(path.count))) }
        return RawPath.with(full) { ExtendedAttributes.value($0, "trusted.overlay.opaque") } == Array("y".utf8)
    }
}
