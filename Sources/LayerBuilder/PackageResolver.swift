import Alpm
import Foundation
import Glibc
import LayerEntries
import LayerSupport

/// Resolves a layer's transaction against its parents' package database without building
/// anything, and fetches its packages: the merged local database of the parent stack is assembled
/// from hard links in a scratch folder, and libalpm prepares the transaction there.
struct PackageResolver {
    /// The parent stack, bottom first; empty for a layer from scratch.
    let parents: [any EntrySource]
    let arch: String
    let repositories: [Repository]
    /// A folder holding `sync/` (see SyncCache.snapshot).
    let syncSnapshot: String

    func resolve(_ request: TransactionRequest, scratch: String) throws -> Resolution {
        try handle(scratch: scratch).resolve(request)
    }

    /// `names` and every package of `packages` they need, directly or through others of them, by
    /// the sync databases' dependencies (a dependency on something a package provides counts).
    func dependencyClosure(of names: Set<String>, within packages: [PackageFile], scratch: String) throws -> Set<String> {
        let handle = try handle(scratch: scratch)
        var relations: [String: (depends: [String], provides: [String])] = [:]
        for package in packages { relations[package.name] = handle.relations(of: package.name, in: package.repository) }
        // Which of `packages` satisfy a name: itself, and what provides it. Linear in the packages
        // and their relations (a layer's transaction may hold thousands of packages).
        var satisfying: [String: [String]] = [:]
        for package in packages {
            satisfying[package.name, default: []].append(package.name)
            for provided in relations[package.name]?.provides ?? [] { satisfying[provided, default: []].append(package.name) }
        }
        var closure = names
        var queue = Array(names)
        while let name = queue.popLast() {
            for dependency in relations[name]?.depends ?? [] {
                for needed in satisfying[dependency] ?? [] where closure.insert(needed).inserted { queue.append(needed) }
            }
        }
        return closure
    }

    /// Downloads every package `request` installs that `cache` lacks, and checks each one, cached
    /// or not, as its repository's signature level asks, with the keys of `keyring`. The build runs
    /// later with no network and no keyring: it installs from the cache what was checked here.
    func fetch(
        _ request: TransactionRequest, scratch: String, cache: String, keyring: String,
        observe: @escaping (AlpmEvent) -> Void
    ) throws {
        let handle = try handle(scratch: scratch)
        try handle.addCacheDir(cache)
        try handle.setGPGDir(keyring)
        try handle.setParallelDownloads(5)
        handle.observer = observe
        // gpgme starts gpg-agent for the check; none may outlive the build.
        _ = try Keyring.withoutLeftoverDaemons(home: keyring) { try handle.commit(request, downloadOnly: true) }
    }

    private func handle(scratch: String) throws -> AlpmHandle {
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
        return handle
    }

    /// The parents' `var/lib/pacman/local`, merged with overlay rules, as hard links.
    private func assembleLocalDatabase(into local: String) throws {
        guard !parents.isEmpty else { return }
        let paths = OverlayPaths(OverlayMerge(parents))
        let folder = "/var/lib/pacman/local"
        for package in try paths.names(at: Array(folder.utf8)) ?? [] {
            let entry = package.entry
            let name = RawPath.string(entry.name)
            guard entry.kind == .directory else {
                try link(entry, at: folder + "/" + name, to: local + "/" + name)
                continue
            }
            try FileSystem.makeDirectories(local + "/" + name)
            for file in try paths.names(at: Array((folder + "/" + name).utf8)) ?? []
            where file.entry.kind != .directory {
                let fileName = RawPath.string(file.entry.name)
                try link(file.entry, at: folder + "/" + name + "/" + fileName, to: local + "/" + name + "/" + fileName)
            }
        }
    }

    /// Links the regular file `entry` (at `path` in the parents' tree) to `destination`. libalpm
    /// opens what is linked here in this process, on the host, and a tree is a stranger's: a
    /// symlink would take it to a file of the host (`desc` → `/etc/shadow`), a device node to a
    /// device of the host, a FIFO would hold it. pacman writes only files and folders there.
    private func link(_ entry: MergedTree.Entry, at path: String, to destination: String) throws {
        guard entry.kind == .regular else {
            throw BuildFailure(
                "the package database of the layers below holds \(RawPath.printable(path)), which is \(entry.kind.described); "
                    + "a package database holds only files and folders, and layerctl reads no other there",
                code: .packages)
        }
        // libalpm would read it line by line, for as long as the resolution may take.
        do { try FileTooLarge.check(path, size: entry.size, limit: ReadLimit.packageDatabaseFile) } catch let large as FileTooLarge {
            throw BuildFailure("in the package database of the layers below, " + large.message, code: .packages)
        }
        _ = try RawPath.with(entry.source) { source in
            try sys("link", RawPath.string(entry.source)) { Glibc.link(source, destination) }
        }
    }
}
