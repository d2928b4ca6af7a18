import Alpm
import CLayerSupport
import Foundation
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

    /// A download slower than `DownloadFloor` is stopped. curl gives up only on less than a byte a
    /// second for 10 s (pacman's setting): a server that sends a byte every half second held the
    /// build without end. So curl is given the floor instead (download_floor.c) and ends such a
    /// download, and libalpm tries the repository's next server, as after any failed download;
    /// when none is left, the refresh or the fetch fails, and `isStall` tells that failure, which
    /// `stalled` words.
    static let stalled = "came at less than \(formatBytes(DownloadFloor.bytes)) in \(DownloadFloor.seconds) s from each of its servers"

    /// Whether libalpm's failure is curl's, ending a download under the floor.
    static func isStall(_ error: AlpmError) -> Bool {
        ([error.reason] + error.details).contains { $0.contains("Operation too slow") }
    }

    /// How long the watch below waits when repositories have at most `servers` servers each:
    /// long enough for curl to have given each server its `DownloadFloor.seconds`.
    static func watchSeconds(servers: Int) -> Double { Double(DownloadFloor.seconds * (max(servers, 1) + 1)) }

    /// What curl cannot end: a download blocked in a system call, such as a `file://` server's
    /// file that is a FIFO no one writes. Watches the partial files `parts` (libalpm's
    /// `FILE.part`) while the package work `pid` downloads, and kills it with
    /// `failure(those still partial, the seconds waited)` when, for `watchSeconds(servers:)` on
    /// end, some were there and all of them together grew by less than `DownloadFloor.bytes`. Nothing is
    /// half written then: a `.part` is a download's prefix, which the next run may go on from.
    static func watchStalls(
        pid: pid_t, parts: PartialFiles, servers: Int, failure: @escaping @Sendable ([String], Int) -> any Error
    ) -> LimitWatch<any Error> {
        let window = watchSeconds(servers: servers)
        let progress = StallProgress()
        progress.idle = parts.before
        let parts = parts.paths
        return LimitWatch(name: "download stalls", every: 1, killing: pid) {
            var present: [String] = []
            var brought: Int64 = 0
            for part in parts {
                guard let look = look(at: part) else { continue }
                if let idle = progress.idle[part] {
                    guard look != idle else { continue }
                    progress.idle[part] = nil
                }
                let size = look.size
                present.append(part)
                brought += max(0, size - (progress.sizes[part] ?? 0))
                progress.sizes[part] = size
            }
            let now = Date()
            // Only time with something downloading counts.
            guard !present.isEmpty else {
                progress.samples.removeAll()
                return nil
            }
            progress.total += brought
            progress.samples.append((now, progress.total))
            progress.samples.removeAll { now.timeIntervalSince($0.time) > window + 0.5 }
            guard let first = progress.samples.first, now.timeIntervalSince(first.time) >= window else { return nil }
            return progress.total - first.total < DownloadFloor.bytes ? failure(present, Int(window)) : nil
        }
    }

    /// The partial files a download may write, and those of them there already, as they were
    /// before the work was handed its job: one left by an earlier run, which this one does not
    /// download, never changes, and counts only once it does (libalpm opening it again to go on,
    /// or anew, changes its time). Taken before the job goes out: a child already at work (the
    /// downloads' child answers one job after another) makes its `.part` within milliseconds,
    /// and a watch that first looked after that took an empty `.part` of a blocked download for
    /// an old one, and waited for it without end.
    struct PartialFiles: Sendable {
        let paths: [String]
        fileprivate let before: [String: Look]

        init(_ paths: [String]) {
            self.paths = paths
            var before: [String: Look] = [:]
            for path in paths {
                if let look = DownloadLimit.look(at: path) { before[path] = look }
            }
            self.before = before
        }
    }

    /// A file's size and modification time, if it is there.
    fileprivate struct Look: Equatable, Sendable {
        var size: Int64
        var modified: timespec
        static func == (a: Look, b: Look) -> Bool {
            a.size == b.size && a.modified.tv_sec == b.modified.tv_sec && a.modified.tv_nsec == b.modified.tv_nsec
        }
    }

    fileprivate static func look(at path: String) -> Look? {
        var st = stat()
        return stat(path, &st) == 0 ? Look(size: Int64(st.st_size), modified: st.st_mtim) : nil
    }

    /// What the stall watch saw, on its one thread.
    private final class StallProgress: @unchecked Sendable {
        /// The partial files there before the downloads began, as they were, until they change.
        var idle: [String: Look] = [:]
        var sizes: [String: Int64] = [:]
        var total: Int64 = 0
        var samples: [(time: Date, total: Int64)] = []
    }

    /// Runs `body` with no file of this process growing past `bytes`, then lifts the limit;
    /// `reached` says whether a write went past it. The limit is the process's: nothing else may
    /// write large files meanwhile (the package work's child downloads, and does nothing else).
    static func files<T>(atMost bytes: Int64, reached: inout Bool, _ body: () throws -> T) throws -> T {
        let limited = lc_limit_file_size(UInt64(max(bytes, 0)))
        if limited != 0 { throw SystemError("limit the file size of", "the downloads", errno: limited) }
        defer { reached = lc_end_file_size_limit() != 0 }
        // And no download slower than the floor: curl ends it, and libalpm tries the next server.
        lc_set_download_floor(DownloadFloor.bytesPerSecond, DownloadFloor.seconds)
        defer { lc_set_download_floor(0, 0) }
        return try body()
    }
}
