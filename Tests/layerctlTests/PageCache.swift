import Glibc
import LayerSupport

/// What of a file the kernel holds in its page cache: a file's holes that a reader read are there,
/// as pages of zeros.
enum PageCache {
    /// Pages of the file at `path` in the page cache. Not under /tmp where that is a tmpfs, which
    /// reads a hole without caching a page.
    static func residentPages(_ path: String) throws -> Int {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw SystemError("open", path) }
        defer { close(fd) }
        var st = stat()
        fstat(fd, &st)
        guard let map = mmap(nil, Int(st.st_size), PROT_READ, MAP_SHARED, fd, 0), map != MAP_FAILED else {
            throw SystemError("map", path)
        }
        defer { munmap(map, Int(st.st_size)) }
        var vector = [UInt8](repeating: 0, count: (Int(st.st_size) + 4095) / 4096)
        guard mincore(map, Int(st.st_size), &vector) == 0 else { throw SystemError("mincore", path) }
        return vector.count { $0 & 1 != 0 }
    }

    /// Drops the file's pages from the cache (written out first).
    static func evict(_ path: String) throws {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw SystemError("open", path) }
        defer { close(fd) }
        guard fsync(fd) == 0, posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED) == 0 else { throw SystemError("evict", path) }
    }
}
