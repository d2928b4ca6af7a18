import Foundation
import Glibc
import LayerEntries
import LayerSupport

extension Store {
    /// What `gc` removed.
    public struct Collected: Sendable, Codable {
        public var layers: [String]
        public var bytes: Int64
        public var temporary: [String]
        /// Files of the package cache that no kept layer installed (packages and their signatures),
        /// and their bytes.
        public var packages: [String]
        public var packageBytes: Int64
        /// Folders of sync databases (`cache/sync/NAME`) that no kept layer was built with, and
        /// their bytes.
        public var syncDatabases: [String]
        public var syncBytes: Int64
        /// Bytes of compressed blocks dropped from the block cache (with `dropBlockCache`).
        public var blockCacheBytes: Int64
        /// Damaged store files removed, each with what was wrong: refs that hold no key or name a
        /// missing layer, layers whose record (or an ancestor's) does not read, damaged manifests.
        public var damaged: [String]
    }

    /// Where exports keep compressed blocks to reuse; see `BlockCache`.
    public var blockCacheDirectory: String { cacheDirectory + "/blocks" }

    /// Removes every layer no ref reaches (through its parents), waiting until no build runs.
    /// Each layer leaves the store by one rename(2) into `tmp/` before it is deleted, so a
    /// reader never meets half a layer.
    /// With `dropBlockCache`, the cache of compressed blocks goes too (exports refill it).
    /// Damaged refs and manifests go, and so do layers whose record, or an ancestor's, is damaged:
    /// a build makes them again. With `verify`, every tree a ref reaches is scanned (each file
    /// read) against its record, and a layer whose tree is not the one recorded goes the same way.
    /// With `dryRun`, nothing is removed: what would go is returned.
    public func collectGarbage(dropBlockCache: Bool = false, verify: Bool = false, dryRun: Bool = false) throws -> Collected {
        let lock = try self.lock(.exclusive)
        defer { lock.unlock() }
        var collected = Collected(
            layers: [], bytes: 0, temporary: [], packages: [], packageBytes: 0, syncDatabases: [], syncBytes: 0,
            blockCacheBytes: 0, damaged: [])
        var reachable = Set<String>()
        for name in try refNames() {
            do {
                guard let key = try ref(name) else { continue }
                _ = try resolve(name)
                reachable.formUnion(try chain(key))
            } catch let error as StoreError {
                switch error {
                case .damaged: collected.damaged.append("\(error)")
                case .unknownLayer(let missing, _):
                    // A layer of the chain is gone (removed by hand): the rest cannot be used.
                    collected.damaged.append(
                        "\(refsDirectory)/\(name) is damaged: its layer stands on layer \(missing), which the store does not hold; removed")
                case .ambiguous, .notAName, .rootTooLong, .controlInRoot, .privateLayers, .othersStore, .unsuitableFileSystem, .replaced,
                    .noStore:
                    throw error
                }
                if !dryRun { try sys("remove ref", refsDirectory + "/" + name) { unlink(refsDirectory + "/" + name) } }
            }
        }
        if verify {
            var damagedTrees = Set<String>()
            for key in reachable.sorted() {
                let record = try self.record(key)
                let scanned = try TreeScan.scan(
                    tree(key), opaqueDirectories: geteuid() == 0 ? nil : record.opaqueDirectories)
                guard scanned.digest != record.treeDigest else { continue }
                damagedTrees.insert(key)
                collected.damaged.append(
                    "\(tree(key)) (\(record.name)) is damaged: it is not the tree its record describes (a file changed, or lost its data to a power cut before layerctl synced new layers); removed, with the layers on it")
            }
            // The refs that reach a damaged tree go (a build or pull makes their layers again), and
            // what the others reach stays.
            reachable = []
            for name in try refNames() {
                // A dry run left the damaged refs of the loop above.
                guard let key = try? ref(name), let stack = try? chain(key) else { continue }
                if damagedTrees.isDisjoint(with: stack) {
                    reachable.formUnion(stack)
                } else if !dryRun {
                    try sys("remove ref", refsDirectory + "/" + name) { unlink(refsDirectory + "/" + name) }
                }
            }
        }
        for key in reachable where LayerManifest.isDamaged(manifestPath(key)) {
            collected.damaged.append("\(manifestPath(key)) is damaged: removed; the next export makes it again")
            if !dryRun { try sys("remove", manifestPath(key)) { unlink(manifestPath(key)) } }
        }
        collected.temporary = try FileSystem.listDirectory(tmpDirectory)
        if !dryRun { for name in collected.temporary { try FileSystem.removeTree(tmpDirectory + "/" + name) } }
        // A build links each package it checked into the package cache under a name of its own,
        // then renames it into place: one killed in between left the link. No build runs now.
        // (A `.part` stays: the next download of the package goes on from it.)
        for name in (try? FileSystem.listDirectory(packageCache)) ?? [] where name.hasPrefix(Self.incomingPackagePrefix) {
            if !dryRun { try sys("remove", packageCache + "/" + name) { unlink(packageCache + "/" + name) } }
            collected.temporary.append("cache/pkg/" + name)
        }
        for key in try FileSystem.listDirectory(layersDirectory) where !reachable.contains(key) {
            if dryRun {
                collected.bytes += FileSystem.treeSize(layerDirectory(key))
                collected.layers.append(key)
                continue
            }
            let doomed = tmpDirectory + "/gc-" + key
            try sys("move out", layerDirectory(key)) { rename(layerDirectory(key), doomed) }
            collected.bytes += FileSystem.treeSize(doomed)
            try FileSystem.removeTree(doomed)
            collected.layers.append(key)
        }
        // The package cache keeps what the kept layers installed, which a rebuild of one (--check,
        // --no-cache) reads again; the rest a build downloads again when it needs it. Without
        // this, every version of every package the store ever built with stayed.
        var installed = Set<String>()
        // The sync databases each kept layer was built with; a layer built with packages before
        // records named them keeps every folder.
        var synced = Set<String>()
        var syncUnknown = false
        for key in reachable {
            let record = try record(key)
            installed.formUnion(record.added.map(\.filename))
            if let folder = record.syncDatabases {
                synced.insert(folder)
            } else if record.origin == nil && !record.added.isEmpty {
                syncUnknown = true
            }
        }
        for name in (try? FileSystem.listDirectory(packageCache)) ?? []
        where !name.hasSuffix(".part") && !name.hasPrefix(Self.incomingPackagePrefix) {
            guard !installed.contains(name.hasSuffix(".sig") ? String(name.dropLast(4)) : name) else { continue }
            let path = packageCache + "/" + name
            var st = stat()
            guard lstat(path, &st) == 0, st.st_mode & S_IFMT == S_IFREG else { continue }
            if !dryRun { try sys("remove", path) { unlink(path) } }
            collected.packages.append(name)
            // A link another store's check borrowed frees nothing.
            if st.st_nlink == 1 { collected.packageBytes += Int64(st.st_blocks) * 512 }
        }
        // One folder for each repository declaration, and so for each `snapshot:` day: a build
        // with another one refreshes its own again. (The lock beside each is the refresh's.)
        for name in (syncUnknown ? nil : try? FileSystem.listDirectory(syncCache)) ?? []
        where !name.hasSuffix(".lock") && !synced.contains(name) {
            let path = syncCache + "/" + name
            guard FileSystem.isDirectory(path) else { continue }
            collected.syncBytes += FileSystem.treeSize(path)
            collected.syncDatabases.append(name)
            if !dryRun {
                try FileSystem.removeTree(path)
                unlink(path + ".lock")
            }
        }
        if dryRun {
            if dropBlockCache { collected.blockCacheBytes = FileSystem.treeSize(blockCacheDirectory) }
            return collected
        }
        for name in try FileSystem.listDirectory(locksDirectory) where !reachable.contains(name) {
            unlink(locksDirectory + "/" + name)
        }
        // The notes of pulled references whose image went: `build --offline` would find none.
        for name in (try? FileSystem.listDirectory(pulledImagesDirectory)) ?? [] {
            let path = pulledImagesDirectory + "/" + name
            if let data = try? FileSystem.readRegularFile(path, atMost: 64 << 10),
                let image = try? JSONDecoder().decode(PulledImage.self, from: data), reachable.contains(image.key)
            {
                continue
            }
            unlink(path)
        }
        if dropBlockCache && FileSystem.exists(blockCacheDirectory) {
            let doomed = tmpDirectory + "/gc-blocks"
            try sys("move out", blockCacheDirectory) { rename(blockCacheDirectory, doomed) }
            collected.blockCacheBytes = FileSystem.treeSize(doomed)
            try FileSystem.removeTree(doomed)
        }
        return collected
    }
}
