import CLayerSupport
import Glibc
import LayerSupport

/// The most one download may write. libalpm's curl ends a download when its source does, and
/// never before: it checks a size only when the server announces one first. A source without
/// end (an http server of the layer author's that streams, a `file://` path that is a symlink
/// to /dev/zero in some user's folder) would fill the store's disk, and hold the build for as
/// long as it takes. So libalpm downloads with the process's file size limit (RLIMIT_FSIZE) at
/// what the file can be: a write past it fails (EFBIG), and so does the download.
enum DownloadLimit {
    /// What libalpm itself means a sync database never to exceed (be_sync.c's 128 MiB).
    static let database: Int64 = 128 << 20

    /// Runs `body` with no file of this process growing past `bytes`, then lifts the limit;
    /// `reached` says whether a write went past it. The limit is the process's: nothing else may
    /// write large files meanwhile (the downloads run alone, before a build, and a builder child
    /// starts only after).
    static func files<T>(atMost bytes: Int64, reached: inout Bool, _ body: () throws -> T) throws -> T {
        let limited = lc_limit_file_size(UInt64(max(bytes, 0)))
        if limited != 0 { throw SystemError("limit the file size of", "the downloads", errno: limited) }
        defer { reached = lc_end_file_size_limit() != 0 }
        return try body()
    }
}
