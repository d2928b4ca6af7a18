import Foundation
import Glibc
import LayerSupport

/// How large the cache may grow, over every tag: `bytes` of packs and indexes, and `packs`
/// packs (each an open descriptor while an export runs). The least recently used go first; the
/// pack an export has just published always stays, and the packs it read from are the most
/// recently used, so the next export of the same stack finds its blocks.
public struct BlockCacheLimit: Sendable, Equatable {
    public var bytes: UInt64
    public var packs: Int

    public init(bytes: UInt64, packs: Int = 32) {
        self.bytes = bytes
        self.packs = max(1, packs)
    }

    public static let `default` = BlockCacheLimit(bytes: 4 << 30)
}

/// The cache's files: reading and checking an index, marking a pack used, and evicting.
extension BlockCache {
    enum LoadedIndex {
        case loaded(Int32, [(Hash256, Location)])
        case damaged(String)
        /// Gone before it could be read: another export evicted it.
        case gone
    }

    /// Reads and checks the index at `path` and opens its pack; its blocks become pack `number`.
    static func loadIndex(_ path: String, number: Int32) -> LoadedIndex {
        guard let index = FileSystem.contents(path) else { return .gone }
        let records: [BlockIndex.Record]
        do { records = try BlockIndex.decode(Array(index)) } catch { return .damaged(error.description) }
        let packFd = open(String(path.dropLast(6)) + ".pack", O_RDONLY | O_CLOEXEC)
        guard packFd >= 0 else { return errno == ENOENT ? .damaged("its pack is missing") : .gone }
        var st = stat()
        fstat(packFd, &st)
        do { try BlockIndex.check(records, packSize: UInt64(st.st_size)) } catch {
            close(packFd)
            return .damaged(error.description)
        }
        return .loaded(packFd, records.map { ($0.key, Location(pack: number, word: $0.word, offset: $0.offset)) })
    }

    /// An index file: its name, when its pack was last used, and its size.
    struct IndexFile {
        var name: String
        var used: timespec
        var bytes: UInt64

        /// Most recently used first, then by name.
        static func moreRecent(_ a: IndexFile, _ b: IndexFile) -> Bool {
            if a.used.tv_sec != b.used.tv_sec { return a.used.tv_sec > b.used.tv_sec }
            if a.used.tv_nsec != b.used.tv_nsec { return a.used.tv_nsec > b.used.tv_nsec }
            return a.name < b.name
        }
    }

    /// The index files in `directory`, most recently used first.
    static func packsByUse(in directory: String) -> [IndexFile] {
        let files = (try? FileSystem.listDirectory(directory)) ?? []
        return files.filter { $0.hasSuffix(".index") }.compactMap { file -> IndexFile? in
            var st = stat()
            guard stat(directory + "/" + file, &st) == 0 else { return nil }
            return IndexFile(name: file, used: st.st_mtim, bytes: UInt64(st.st_size))
        }.sorted(by: IndexFile.moreRecent)
    }

    /// Sets the index's mtime to now: its pack was just used.
    static func markUsed(_ indexPath: String) {
        _ = utimensat(AT_FDCWD, indexPath, nil, 0)
    }

    /// Removes an index and then its pack, so no export finds an index without its pack.
    static func removePack(_ indexPath: String) {
        unlink(indexPath)
        unlink(String(indexPath.dropLast(6)) + ".pack")
    }

    /// Removes a pack no process writes and no index names: what a killed export left.
    static func removeIfAbandoned(_ path: String) {
        if FileSystem.exists(String(path.dropLast(5)) + ".index") { return }
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return }
        defer { close(fd) }
        if flock(fd, LOCK_EX | LOCK_NB) == 0 { unlink(path) }
    }

    /// Removes the least recently used packs in every tag folder of `root` until the rest fit in
    /// `limit`; `keeping` (an index path) stays whatever its size. Folders left empty go too.
    static func evict(in root: String, limit: BlockCacheLimit, keeping: String?) {
        var all: [IndexFile] = []  // named by path here
        for folder in (try? FileSystem.listDirectory(root)) ?? [] {
            let directory = root + "/" + folder
            // A folder of another format (an older layerctl's) is never read again.
            guard folder.hasSuffix(formatSuffix) else {
                try? FileSystem.removeTree(directory)
                continue
            }
            for var index in packsByUse(in: directory) {
                index.name = directory + "/" + index.name
                var pack = stat()
                if stat(String(index.name.dropLast(6)) + ".pack", &pack) == 0 { index.bytes += UInt64(pack.st_size) }
                all.append(index)
            }
        }
        all.sort { a, b in
            if (a.name == keeping) != (b.name == keeping) { return a.name == keeping }
            return IndexFile.moreRecent(a, b)
        }
        var bytes: UInt64 = 0
        for (position, index) in all.enumerated() {
            bytes += index.bytes
            let fits = bytes <= limit.bytes && position < limit.packs
            if fits || index.name == keeping { continue }
            removePack(index.name)
        }
    }
}
