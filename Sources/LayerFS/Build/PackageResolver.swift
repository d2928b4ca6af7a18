import Alpm
import Foundation
import Glibc

/// Resolves a layer's transaction against its parents' package database without building
/// anything: the merged local database of the parent stack is assembled from hard links in a
/// scratch folder, and libalpm prepares the transaction there.
struct PackageResolver {
    let parents: StackView
    let arch: String
    let repositories: [Repository]
    /// A folder holding `sync/` (see SyncCache.snapshot).
    let syncSnapshot: String

    func resolve(_ request: TransactionRequest, scratch: String) throws -> Resolution {
        let dbPath = scratch + "/db"
        let root = scratch + "/root"
        try FileSystem.makeDirectories(dbPath + "/local")
        try FileSystem.makeDirectories(root)
        try sys("link", dbPath + "/sync") { symlink(syncSnapshot + "/sync", dbPath + "/sync") }
        try assembleLocalDatabase(into: dbPath + "/local")
        let handle = try AlpmHandle(root: root, dbPath: dbPath)
        try handle.setArchitectures([arch])
        for repository in repositories { try handle.register(repository, arch: arch) }
        try handle.checkDatabasesValid()
        return try handle.resolve(request)
    }

    /// The parents' `var/lib/pacman/local`, merged with overlay rules, as hard links.
    private func assembleLocalDatabase(into local: String) throws {
        let relative = "var/lib/pacman/local"
        for entry in try parents.list(relative) {
            if !entry.isDirectory {
                try sys("link", entry.path) { link(entry.path, local + "/" + entry.name) }
                continue
            }
            try FileSystem.makeDirectories(local + "/" + entry.name)
            for file in try parents.list(relative + "/" + entry.name) where !file.isDirectory {
                try sys("link", file.path) { link(file.path, local + "/" + entry.name + "/" + file.name) }
            }
        }
    }
}
