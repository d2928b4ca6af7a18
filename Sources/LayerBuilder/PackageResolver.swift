import Alpm
import Foundation
import Glibc
import LayerEntries
import LayerSupport

/// Resolves a layer's transaction against its parents' package database without building
/// anything, and fetches its packages: the merged local database of the parent stack is copied
/// into a scratch folder, and libalpm prepares the transaction there, in the package work's child
/// (`PackageWork`).
struct PackageResolver {
    /// The parent stack, bottom first; empty for a layer from scratch.
    let parents: [any EntrySource]
    let arch: String
    let repositories: [Repository]
    /// A folder holding `sync/` (see SyncCache.snapshot).
    let syncSnapshot: String

    /// A layer's packages as libalpm resolves them, with what each one depends on and provides.
    struct Resolved {
        var resolution: Resolution
        var relations: [String: PackageWork.Relations]
        /// The dependencies that several packages provide, where libalpm took the first.
        var providerChoices: [ProviderChoice] = []
        /// The packages the request ignores that the repositories hold newer.
        var newer: [NewerVersion] = []

        /// `names` and every package of the resolution they need, directly or through others of
        /// them, by the sync databases' dependencies (a dependency on something a package provides
        /// counts).
        func dependencyClosure(of names: Set<String>) -> Set<String> {
            PackageResolver.dependencyClosure(of: names, within: resolution.install, relations: relations)
        }
    }

    /// Resolves `request` for the layer `layer` in the child `resolutions`; `watch` may stop the
    /// work (`ResolutionWatch`).
    func resolve(
        _ request: TransactionRequest, layer: String, in resolutions: PackageWork.Child,
        watch: ((pid_t) -> LimitWatch<any Error>)? = nil
    ) throws -> Resolved {
        let scratch = try resolutions.makeScratch("resolve")
        var job = try job(.resolve, layer: layer, scratch: scratch)
        job.request = request
        var reached = false
        let outcome = try resolutions.run(job, scratch: scratch, fileLimitReached: &reached, watch: watch)
        return Resolved(
            resolution: outcome.resolution ?? Resolution(), relations: outcome.relations ?? [:],
            providerChoices: outcome.providerChoices ?? [], newer: outcome.newer ?? [])
    }

    static func dependencyClosure(
        of names: Set<String>, within packages: [PackageFile], relations: [String: PackageWork.Relations]
    ) -> Set<String> {
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
    /// or not, as its repository's signature level asks, with the keys of `keyring`, each download
    /// at most `largest` bytes (`reached` says whether one passed it). The build runs later with no
    /// network and no keyring: it installs from the cache what was checked here. Returns the file
    /// names of the packages that do not open as tar archives.
    func fetch(
        _ request: TransactionRequest, layer: String, in downloads: PackageWork.Child, cache: String, keyring: String,
        largest: Int64, expected: [PackageFile], offline: Bool, reached: inout Bool, watch: ((pid_t) -> LimitWatch<any Error>)?
    ) throws -> PackageWork.Outcome {
        let scratch = try downloads.makeScratch("fetch")
        var job = try job(.fetch, layer: layer, scratch: scratch)
        job.request = request
        job.offline = offline ? true : nil
        job.expected = expected
        job.cache = cache
        job.keyring = try PackageWork.keyringCopy(of: keyring, in: scratch)
        job.largestDownload = largest
        return try downloads.run(job, scratch: scratch, fileLimitReached: &reached, watch: watch)
    }

    /// The job of `operation` on a handle in `scratch`, whose local database the parents' is (the
    /// child it goes to decides what it may read and write).
    private func job(_ operation: PackageWork.Job.Operation, layer: String, scratch: String) throws -> PackageWork.Job {
        let dbPath = scratch + "/db"
        let root = scratch + "/root"
        try FileSystem.makeDirectories(dbPath + "/local")
        try FileSystem.makeDirectories(root)
        try sys("link", dbPath + "/sync") { symlink(syncSnapshot + "/sync", dbPath + "/sync") }
        try assembleLocalDatabase(into: dbPath + "/local")
        return PackageWork.Job(operation: operation, layer: layer, root: root, dbPath: dbPath, arch: arch, repositories: repositories)
    }

    /// The parents' `var/lib/pacman/local`, merged with overlay rules: each package's `desc` and
    /// `files` (a transaction that removes a package reads its files and backups even to
    /// download), and the folder's own files (`ALPM_DB_VERSION`); not `mtree` or scriptlets, which
    /// only a commit reads. Copies, not hard links: the package work's child may write its scratch
    /// folder, and through a link it would write the stored layer's own file (root's, mode 0644:
    /// its uid may, without a capability, and Landlock sees only the path).
    func assembleLocalDatabase(into local: String) throws {
        guard !parents.isEmpty else { return }
        let paths = OverlayPaths(OverlayMerge(parents))
        let folder = "/var/lib/pacman/local"
        for package in try paths.names(at: Array(folder.utf8)) ?? [] {
            let entry = package.entry
            let name = RawPath.string(entry.name)
            guard entry.kind == .directory else {
                try copy(entry, at: folder + "/" + name, to: local + "/" + name)
                continue
            }
            try FileSystem.makeDirectories(local + "/" + name)
            for file in try paths.names(at: Array((folder + "/" + name).utf8)) ?? []
            where file.entry.kind != .directory && Self.readFiles.contains(file.entry.name) {
                let fileName = RawPath.string(file.entry.name)
                try copy(file.entry, at: folder + "/" + name + "/" + fileName, to: local + "/" + name + "/" + fileName)
            }
        }
    }

    /// What the package work's libalpm reads of an installed package's folder.
    static let readFiles: Set<[UInt8]> = [Array("desc".utf8), Array("files".utf8)]

    /// Copies the regular file `entry` (at `path` in the parents' tree) to `destination`. A tree is
    /// a stranger's: a symlink would take this process to a file of the host (`desc` →
    /// `/etc/shadow`), a device node to a device of the host, a FIFO would hold it. pacman writes
    /// only files and folders there.
    private func copy(_ entry: MergedTree.Entry, at path: String, to destination: String) throws {
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
        let bytes = try FileSystem.readRegularFile(RawPath.string(entry.source), atMost: ReadLimit.packageDatabaseFile)
        try FileSystem.writeFile(bytes, to: destination)
    }
}

extension PackageResolver.Resolved {
    /// A line for each package `ignore:` holds that the repositories hold newer: it stays, as
    /// pacman's `IgnorePkg` keeps it.
    func ignoreWarnings() -> [String] {
        newer.map { held in
            "\(clip(held.name, to: 100)) stays at \(clip(held.installed, to: 100)), as `ignore:` asks, while the repositories hold "
                + "\(clip(held.available, to: 100)): the rest is upgraded around it, a partial upgrade, which Arch does not support"
        }
    }

    /// A line for each dependency that several packages provide, saying which libalpm took and
    /// how to choose another: pacman lists them and asks, and a build cannot ask. The names come
    /// from a repository's database: each is clipped, and a long list counted.
    func providerWarnings(targets: Set<String>) -> [String] {
        var seen = Set<String>()
        return providerChoices.filter { seen.insert($0.dependency).inserted }.compactMap { choice in
            guard let taken = choice.providers.first else { return nil }
            let name = String(choice.dependency.prefix { !"<>=".contains($0) })
            let needers = resolution.install.map(\.name).filter { needer in
                relations[needer]?.depends.contains(name) ?? false
            }
            let providers = choice.providers.map { clip($0, to: 100) }
            let listed = providers.count > 6 ? providers.prefix(5) + ["and \(providers.count - 5) more"] : providers[...]
            let dependency = clip(choice.dependency, to: 100)
            let who =
                targets.contains(choice.dependency)
                ? "`\(dependency)` in packages: is no package, and \(providers.count) packages provide it"
                : "\(needers.first.map { clip($0, to: 100) + (needers.count > 1 ? " and \(needers.count - 1) more" : "") } ?? "a package") needs \(dependency), which \(providers.count) packages provide"
            return "\(who) (\(listed.joined(separator: ", "))): "
                + "took \(clip(taken, to: 100)), the first, as pacman does when not asked; name one in packages: to choose"
        }
    }
}
