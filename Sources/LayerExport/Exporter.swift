import Glibc
import LayerEntries
import LayerStore
import LayerSupport
import SquashfsImage

/// Writes the merged stack up to a layer as a squashfs image, a tarball or a directory.
public struct Exporter: Sendable {
    public enum Format: String, Sendable, CaseIterable {
        case squashfs, tar, dir
    }

    public struct Request: Sendable {
        public var format: Format
        public var output: String
        public var options: ImageOptions
        /// Reuse and remember compressed blocks in the store's block cache.
        public var useBlockCache: Bool
        /// How large the block cache may grow; the least recently used blocks go first.
        public var blockCacheLimit: BlockCacheLimit
        /// Take the image's sha256 (squashfs and tar), while its fsync waits for the disk.
        public var digest: Bool
        /// Digests of files' blocks taken by whoever last held their bytes (a pull, as it
        /// unpacked): a squashfs block the cache holds under one is copied without reading its file.
        public var knownBlocks: BlockDigests?
        /// The layer exported, when its commit is still under way (a pull's top layer, while the
        /// disk takes it): read from where it is, the layers below it from the store.
        public var uncommitted: UncommittedLayer?
        /// Looks at the merged stack before anything is written, and may refuse it: `stage` and
        /// `vm` of a stack without a kernel fail in a moment, not after the export.
        public var check: (@Sendable (MergedTree) throws -> Void)?

        public init(
            format: Format = .squashfs, output: String, options: ImageOptions, useBlockCache: Bool = true,
            blockCacheLimit: BlockCacheLimit = .default, digest: Bool = false, knownBlocks: BlockDigests? = nil,
            uncommitted: UncommittedLayer? = nil
        ) {
            self.uncommitted = uncommitted
            self.format = format
            self.output = output
            self.options = options
            self.useBlockCache = useBlockCache
            self.blockCacheLimit = blockCacheLimit
            self.digest = digest
            self.knownBlocks = knownBlocks
        }
    }

    public struct Progress: Sendable {
        public var bytesIn: UInt64
        public var bytesOut: UInt64
        /// All the file data the export will read.
        public var totalIn: UInt64
        /// Compressed bytes per byte of file data, over the blocks finished so far.
        public var ratio: Double?
    }

    public struct Result: Sendable, Codable {
        public var format: String
        public var output: String
        public var layer: String
        public var entries: Int
        public var bytesIn: UInt64
        /// The part of `bytesIn` read from the files; the block cache held the rest, or it lay in holes.
        public var bytesRead: UInt64
        public var bytesOut: UInt64
        public var seconds: Double
        public var cacheHits: Int
        public var cacheMisses: Int
        /// Blocks of zeros (a sparse file's holes), stored as nothing: neither compressed nor cached.
        public var zeroBlocks: Int
        /// Earlier packs of the block cache this export opened (one descriptor each).
        public var cachePacks: Int
        /// The image's sha256, when the request asked for it.
        public var sha256: String?
    }

    /// The block cache's update after a squashfs export (its new pack synced, its index
    /// published, the least recently used packs evicted), running on a thread of its own from the
    /// moment the image is whole: it overlaps the image's own sync and whatever the caller does
    /// next with the image, such as staging it. The store stays locked until it is done.
    public final class CacheUpdate: @unchecked Sendable {
        // @unchecked: `work` is read by the thread that made it only.
        private let work: Background<Void>

        init(_ publish: @escaping @Sendable () throws -> Void, holding lock: FileLock) {
            work = Background {
                defer { lock.unlock() }
                try publish()
            }
        }

        /// Waits for the update; a line for `warning` when it failed. The image is whole either
        /// way: a cache that was not updated only costs the next export compression time.
        public func finish() -> String? {
            do {
                try work.value()
                return nil
            } catch {
                return "the block cache was not updated (\(error)); the next export compresses these blocks again"
            }
        }
    }

    public let store: Store

    public init(store: Store) { self.store = store }

    /// Exports the stack whose top layer is `key`. `warning` receives lines worth a user's notice,
    /// such as attributes the format cannot hold.
    public func export(
        _ key: String, _ request: Request, progress: @escaping (Progress) -> Void = { _ in },
        warning: (String) -> Void = { _ in }
    ) throws -> Result {
        let (result, update) = try exportLeavingCacheUpdate(key, request, progress: progress, warning: warning)
        if let problem = update?.finish() { warning(problem) }
        return result
    }

    /// `export`, returning while the block cache's update may still run; the caller calls its
    /// `finish()` once it has done what it had to do with the image.
    public func exportLeavingCacheUpdate(
        _ key: String, _ request: Request, progress: @escaping (Progress) -> Void = { _ in },
        warning: (String) -> Void = { _ in }
    ) throws -> (Result, CacheUpdate?) {
        let started = MonotonicClock.seconds()
        if request.format == .squashfs && request.useBlockCache {
            // The block cache's probe is worked out while the manifests are read and merged.
            _ = Background { [options = request.options] in SquashfsWriter.prepareBlockCache(options) }
        }
        let lock = try store.lock(.shared)
        var update: CacheUpdate?
        defer { if update == nil { lock.unlock() } }
        let top = request.uncommitted.flatMap { $0.key == key ? $0 : nil }
        // The stored layers from the root up: all of the stack, or all below the uncommitted top.
        let stored = try top.map { try $0.record.parent.map(store.chain) ?? [] } ?? store.chain(key)
        // Layer trees do not change, but a layer built again under its key may take another's place
        // while this export reads it (`checkUnchanged`, before anything is written).
        let identities = try stored.map(store.directoryIdentity)
        let records = try stored.map(store.record) + (top.map { [$0.record] } ?? [])
        let epoch = try SourceDateEpoch.fromEnvironment() ?? records.last?.sourceDateEpoch ?? 0
        let unscanned = stored.contains { !FileSystem.exists(store.manifestPath($0)) }
        let sources =
            try zip(stored, records).map { ManifestSource(try store.manifest($0, record: $1), tree: store.tree($0)) }
            + (top.map { [ManifestSource($0.manifest, tree: $0.tree)] } ?? [])
        let tree = try OverlayMerge(sources, epoch: epoch).merge()
        try request.check?(tree)
        if geteuid() != 0 && unscanned {
            warning("without root, trusted.* attributes cannot be read; any in the layers are left out")
        }
        let total = tree.dataBytes
        var result = Result(
            format: request.format.rawValue, output: request.output, layer: key, entries: tree.entries.count,
            bytesIn: total, bytesRead: total, bytesOut: 0, seconds: 0, cacheHits: 0, cacheMisses: 0, zeroBlocks: 0,
            cachePacks: 0)
        switch request.format {
        case .squashfs:
            let output = try ImageOutput(path: request.output)
            var skipped: [String: (count: Int, first: String)] = [:]
            do {  // the writer closes its own handle on the file before the image is committed
                let writer = try SquashfsWriter(
                    fd: output.fd, output: request.output, options: request.options,
                    cacheRoot: request.useBlockCache ? store.blockCacheDirectory : nil,
                    cacheLimit: request.blockCacheLimit)
                if let reason = writer.cacheUnavailable { warning("exporting without the block cache: \(reason)") }
                for damaged in writer.cacheDamaged {
                    warning("block cache: \(damaged); removed it and its pack, so its blocks are compressed again")
                }
                // A read that failed because the layer took another's place is said as that.
                try Self.sayingReplaced(store, identities) {
                    try writer.write(
                        tree, knownBlocks: request.knownBlocks,
                        progress: {
                            progress(Progress(bytesIn: $0.bytesIn, bytesOut: $0.bytesOut, totalIn: total, ratio: $0.ratio))
                        },
                        skippedAttribute: { name, source in
                            let prefix = String(name.prefix { $0 != "." })
                            skipped[prefix, default: (0, RawPath.string(source))].count += 1
                        })
                }
                // Blocks read from two trees go neither into the image nor into the block cache,
                // which would give them to every image with a file of the old content.
                try store.checkUnchanged(identities)
                // The image is whole: its sha256 is read, and the cache updated, while it is synced.
                if request.digest { output.startDigest() }
                if let publish = writer.cachePublication { update = CacheUpdate(publish, holding: lock) }
                result.bytesOut = writer.size
                result.bytesRead = writer.bytesRead
                (result.cacheHits, result.cacheMisses, result.zeroBlocks) = writer.cacheStatistics
                result.cachePacks = writer.cachePacks
            }
            do { result.sha256 = try output.commit(digesting: request.digest) } catch {
                _ = update?.finish()
                throw error
            }
            for (prefix, info) in skipped.sorted(by: { $0.key < $1.key }) {
                warning(
                    "squashfs cannot store \(prefix).* attributes (POSIX ACLs among them): left out of \(counted(info.count, "entry", plural: "entries")), first \(info.first)"
                )
            }
        case .tar:
            let output = try ImageOutput(path: request.output)
            let writer = try TarWriter(fd: output.fd, path: request.output)
            result.bytesOut = try Self.sayingReplaced(store, identities) {
                try writer.write(tree) { progress(Progress(bytesIn: $0, bytesOut: 0, totalIn: total, ratio: nil)) }
            }
            try store.checkUnchanged(identities)
            result.sha256 = try output.commit(digesting: request.digest)
            if let first = writer.skippedSockets.first {
                warning("tar cannot store sockets: left out \(writer.skippedSockets.count), first \(first)")
            }
            if let first = writer.skippedAttributes.first {
                warning(
                    "tar cannot carry attribute names outside printable ASCII, or with % or =: left out \(writer.skippedAttributes.count), first \(first); --format squashfs and dir keep them"
                )
            }
        case .dir:
            try Self.sayingReplaced(store, identities) {
                try DirectoryWriter(path: request.output).write(
                    tree, progress: { progress(Progress(bytesIn: $0, bytesOut: $0, totalIn: total, ratio: nil)) },
                    beforeCommit: { try store.checkUnchanged(identities) })
            }
            result.bytesOut = total
        }
        result.seconds = MonotonicClock.seconds() - started
        return (result, update)
    }

    /// `body`'s result; when it throws and a layer of `identities` took another directory's place
    /// meanwhile (a file of the old tree gone), that is the error.
    private static func sayingReplaced<T>(_ store: Store, _ identities: [Store.DirectoryIdentity], _ body: () throws -> T) throws -> T {
        do { return try body() } catch {
            try store.checkUnchanged(identities)
            throw error
        }
    }
}
