import Alpm
import Foundation
import Glibc
import LayerStore
import LayerSupport

/// The sync databases of one set of repositories, kept in the store's cache (never in a tree),
/// refreshed once per build, and handed to each build as a private snapshot of copies.
struct SyncCache {
    let store: Store
    let arch: String
    let repositories: [Repository]
    let gpgDirectory: String

    /// One cache folder per distinct repository declaration: its name in `Store.syncCache`.
    var name: String {
        let identity = ([arch] + repositories.map { "\($0.name) \($0.servers) \($0.signatureLevel?.rawValue ?? -1)" })
            .joined(separator: "\n")
        return String(Digest.sha256(Data(identity.utf8)).prefix(16))
    }

    var directory: String { store.syncCache + "/" + name }

    /// Refreshes (unless `offline`; in the child `downloads`, for layer `layer`) and copies the
    /// databases into `snapshot/sync`. A refresh that fails is one line at `locate(repository)`,
    /// the place that declares the repository it names.
    func snapshot(
        into snapshot: String, offline: Bool, downloads: PackageWork.Child, layer: String,
        locate: (String) -> String? = { _ in nil }
    ) throws {
        try FileSystem.makeDirectories(directory + "/sync")
        let lock = try FileLock(path: directory + ".lock", mode: .exclusive)
        defer { lock.unlock() }
        // A layer on an image that declares no repository installs nothing: nothing to refresh.
        if !offline && !repositories.isEmpty {
            let scratch = try downloads.makeScratch("refresh")
            unlink(directory + "/db.lck")  // left by a killed refresh; we hold the lock
            // file:// servers are cheap to copy and their mtimes say little; always fetch them.
            let local = repositories.contains(where: \.hasFileServer)
            let job = PackageWork.Job(
                operation: .refresh, layer: layer, root: scratch, dbPath: directory, arch: arch, repositories: repositories,
                force: local, keyring: try PackageWork.keyringCopy(of: gpgDirectory, in: scratch),
                largestDownload: DownloadLimit.database)
            var tooLarge = false
            let parts = DownloadLimit.PartialFiles(
                repositories.flatMap { repository in
                    [".db.part", ".db.sig.part"].map { directory + "/sync/" + repository.name + $0 }
                })
            let places = repositories.map { (name: $0.name, place: locate($0.name)) }
            let servers = repositories.map(\.servers.count).max() ?? 1
            let stalls = { [directory] (pid: pid_t) in
                DownloadLimit.watchStalls(pid: pid, parts: parts, servers: servers) { stalled, seconds in
                    let named = places.first { stalled.contains(directory + "/sync/" + $0.name + ".db.part") }
                    return BuildFailure(
                        "refresh \(named.map { "repository \($0.name)" } ?? "the repositories") failed: its database brought less than "
                            + "\(formatBytes(DownloadFloor.bytes)) in \(seconds) s; the download was stopped",
                        at: named?.place, code: .packages)
                }
            }
            do {
                _ = try downloads.run(job, scratch: scratch, fileLimitReached: &tooLarge, watch: stalls)
            } catch let error as AlpmError where error.missingKeys.isEmpty {
                // libalpm names the database that failed ('core.db') in its details; our own checks
                // name its repository.
                let text = ([error.reason] + error.details).joined(separator: " ")
                let named = repositories.first { $0.name == error.subject || text.contains("'\($0.name).db") }?.name
                if !tooLarge, let line = error.retrievalFailure,
                    let unsigned = repositories.first(where: { repository in
                        error.details.contains { $0.contains("'\(repository.name).db.sig'") }
                    })
                {
                    throw BuildFailure(
                        BuildFailure.missingSignature(
                            of: "the database of repository \(unsigned.name)", line: line, level: unsigned.signatureLevel,
                            sign: "sign it (`repo-add --sign`)"),
                        at: locate(unsigned.name), code: .packages)
                }
                let reason =
                    tooLarge
                    ? "its database passed \(formatBytes(DownloadLimit.database)), the most libalpm takes; the download was stopped"
                    : DownloadLimit.isStall(error)
                    ? "its database \(DownloadLimit.stalled); the download was stopped (list a faster server)"
                    : error.retrievalFailure
                    ?? ([error.reason] + error.details.map { $0.trimmingCharacters(in: .whitespaces) }).joined(separator: ": ")
                throw BuildFailure(
                    "refresh \(named.map { "repository \($0)" } ?? "the repositories") failed: \(reason)",
                    at: named.flatMap(locate), code: BuildFailure(error, at: nil).code)
            }
        }
        try FileSystem.makeDirectories(snapshot + "/sync")
        for repository in repositories {
            let database = directory + "/sync/\(repository.name).db"
            guard FileSystem.exists(database) else {
                throw BuildFailure(
                    "there is no copy of repository \(repository.name) yet; build once without --offline",
                    at: locate(repository.name), code: .input)
            }
            // Copies, not hard links: the resolutions' child may write the session folder, and
            // through a link it would write the store's copy of the database, which later builds
            // (and --offline ones alone) read.
            for suffix in ["", ".sig"] where FileSystem.exists(database + suffix) {
                try FileSystem.copyFile(database + suffix, to: snapshot + "/sync/\(repository.name).db" + suffix)
            }
        }
    }
}
