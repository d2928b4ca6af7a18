import Crypto
import Foundation
import Glibc
import LayerEntries
import LayerStore
import LayerSupport
import RegistryClient

/// Pulls an image into the store, a layer at a time: the manifest (this machine's platform from an
/// index), the config, then each layer the store lacks, its digest checked while it streams and its
/// diff_id after. A layer is unpacked (hostile entries refused), scanned and committed with one
/// rename, as a build commits, so a pull cut short leaves whole layers or nothing. A pulled layer's
/// key is made from its parent's key and its diff_id; a layer whose claimed layerctl key the store
/// holds with the same diff_id is that layer, and is not fetched.
public struct ImagePull {
    public struct Result: Codable, Sendable {
        /// The reference with the digest its tag resolved to.
        public var reference: String
        public var manifestDigest: String
        /// The ref set to the top layer, if any.
        public var name: String?
        public var key: String
        public var layers: [Layer]
        /// The digests of the blocks of the files this pull unpacked, when `blockSize` asked for
        /// them: an export right after (`Exporter.Request.knownBlocks`) then reads none of them
        /// that the block cache holds.
        public var knownBlocks: BlockDigests? = nil
        /// The top layer's commit, still under way, when `overlapTopCommit` left it running.
        public var committing: TopCommit? = nil

        private enum CodingKeys: String, CodingKey {
            case reference, manifestDigest, name, key, layers
        }

        public struct Layer: Codable, Sendable {
            public var key: String
            public var digest: String
            public var size: Int64
            /// stored (fetched now) or present (the store had it).
            public var pull: String
        }
    }

    public let store: Store
    public let client: RegistryClient
    public var architecture: String
    /// The registry is this store's build cache, trusted as the store is: each layer is stored under
    /// the key and with the record its annotations give (its tree checked against the record's
    /// digest), so a build finds it by key.
    public var trustClaims = false
    /// Take the digest of each full block of this size of every file unpacked, for an export's
    /// block cache (`Result.knownBlocks`), in the scan that reads each file for its sha256.
    public var blockSize: Int?
    /// Return once the top layer is whole and its sync started, leaving the rest of its commit to
    /// `Result.committing`, so that an export can read the layer meanwhile.
    public var overlapTopCommit = false

    /// A pulled top layer on its way into the store: its folder is being synced to disk, after
    /// which `finish()` moves it into the store with one rename, points the ref, and lets go of
    /// the pull's locks and scratch folder. Until then the layer is read where it is (`layer`).
    /// `finish()` must be called once, before anything that needs the layer in the store.
    public final class TopCommit: @unchecked Sendable {
        // @unchecked: made and finished by the pulling thread, which alone waits for `sync`.
        public let layer: UncommittedLayer
        private let sync: Background<Void>
        private let folder: String
        private let store: Store
        private let name: String?
        private let buildLock: FileLock
        private let storeLock: FileLock
        private let scratch: String
        private let pulled: [Store.PulledImage]
        private var finished = false

        fileprivate init(
            _ pending: PendingLayer, store: Store, name: String?, storeLock: FileLock, scratch: String, pulled: [Store.PulledImage]
        ) {
            layer = pending.layer
            sync = pending.sync
            folder = pending.folder
            buildLock = pending.buildLock
            self.store = store
            self.name = name
            self.storeLock = storeLock
            self.scratch = scratch
            self.pulled = pulled
        }

        public func finish() throws {
            guard !finished else { return }
            finished = true
            defer {
                buildLock.unlock()
                storeLock.unlock()
                try? FileSystem.removeTree(scratch)
            }
            try sync.value()
            _ = try store.commit(folder, as: layer.key, synced: true)
            if let name { try store.setRef(name, to: layer.key) }
            for image in pulled { try? store.notePulled(image) }
        }
    }

    /// A layer `fetchLayer` left whole, its folder being synced, the layer's build lock held.
    fileprivate struct PendingLayer {
        var layer: UncommittedLayer
        var sync: Background<Void>
        var folder: String
        var buildLock: FileLock
    }

    /// Where each layer's tar is parsed: a stranger's tar is never parsed in this process.
    let unpacker: any TarUnpacker

    package init(store: Store, client: RegistryClient, architecture: String, unpacker: any TarUnpacker) {
        self.store = store
        self.client = client
        self.architecture = architecture
        self.unpacker = unpacker
    }

    /// The largest manifest or config taken, and the most layers.
    static let documentLimit: Int64 = 4 << 20
    static let layerLimit = 256

    /// Pulls `reference` and points the ref `name`, when there is one, at its top layer.
    public func pull(_ reference: ImageReference, name: String?, observer: @escaping (ShareEvent) -> Void) throws -> Result {
        if let name { try Self.checkRefName(name) }
        let lock = try store.lock(.shared)
        // Held until the top layer's commit ends: here, or in `TopCommit.finish`.
        var handedOver = false
        defer { if !handedOver { lock.unlock() } }
        let scratch = try store.makeTemporary("pull")
        defer { if !handedOver { try? FileSystem.removeTree(scratch) } }
        try store.requireTreeFileSystem(in: scratch)
        let (manifest, manifestDigest) = try fetchManifest(reference)
        var resolved = reference
        resolved.digest = manifestDigest
        let configPath = scratch + "/config"
        try client.downloadBlob(reference.repository, manifest.config.digest, size: manifest.config.size, to: configPath)
        let config: OCIImage.Config
        do {
            config = try JSONDecoder().decode(OCIImage.Config.self, from: try FileSystem.readRegularFile(configPath))
        } catch {
            throw RegistryError(.input, "\(resolved): the image config is not an OCI image config", cause: error)
        }
        guard config.os == "linux" else { throw RegistryError(.input, "\(resolved) is an image for \(quote(config.os)), not linux") }
        guard config.rootfs.diffIDs.count == manifest.layers.count else {
            throw RegistryError(
                .input,
                "\(resolved): the config lists \(counted(config.rootfs.diffIDs.count, "diff_id")) for the manifest's \(counted(manifest.layers.count, "layer"))")
        }
        if let name, let owner = try store.ref(name), store.contains(owner), try store.record(owner).origin == nil {
            throw RegistryError(
                .input, "the ref \(name) holds a layer built here; pass --name to keep the pulled image under another name")
        }

        // The image's creation time is what an export clamps the pulled files' times to, as a
        // build's SOURCE_DATE_EPOCH: layerctl's own images say the epoch they were built with.
        let epoch = config.created.flatMap(OCIImage.epoch) ?? 0
        var parent: String?
        var layers: [Result.Layer] = []
        var knownBlocks = blockSize.map(BlockDigests.init)
        var pending: PendingLayer?
        func taken(_ fetched: FetchedLayer?) {
            if let blocks = fetched?.blocks { knownBlocks?.merge(blocks) }
            if let layer = fetched?.pending { pending = layer }
        }
        // A pull that fails after its top layer's sync started (none can, today) waits for it
        // before the scratch folder goes.
        defer {
            if !handedOver, let pending {
                _ = try? pending.sync.value()
                pending.buildLock.unlock()
            }
        }
        // The layers below the one in hand, root first, and each one's opaque folder index, written
        // once a pull: each unpack looks up the opaque folders of every layer below it.
        var below: [String] = []
        var indexes: [String: String] = [:]
        func lowerTrees() throws -> [LowerTree] {
            try below.reversed().map { key in
                if indexes[key] == nil {
                    let path = scratch + "/opaque/" + key
                    try FileSystem.makeDirectories(scratch + "/opaque")
                    try OpaqueFolderIndex.write(try store.opaqueFolders(key), to: path)
                    indexes[key] = path
                }
                return LowerTree(path: store.tree(key), opaqueIndex: indexes[key])
            }
        }
        for (index, (descriptor, diffID)) in zip(manifest.layers, config.rootfs.diffIDs).enumerated() {
            if let parent, below.last != parent { below.append(parent) }
            guard ImageReference.isDigest(diffID) else { throw RegistryError(.input, "\(resolved): diff_id \(quote(diffID)) is no sha256 digest") }
            let claimed = descriptor.annotations?["org.layerctl.layer.key"].flatMap { Store.isKey($0) ? $0 : nil }
            let layerName =
                (index == manifest.layers.count - 1 ? name : nil)
                ?? Self.layerName(descriptor, fallback: "\(reference.shortName)-\(index)")
            if trustClaims {
                guard let claimed, let text = descriptor.annotations?[OCIImage.recordAnnotation],
                    let record = try? LayerRecord.decoded(Data(text.utf8)), record.key == claimed, record.parent == parent
                else {
                    throw RegistryError(.input, "\(resolved): layer \(index) carries no layerctl key and record on this stack; it is no build cache image")
                }
                let how = store.contains(claimed) ? "present" : "stored"
                if how == "stored" {
                    let origin = LayerOrigin(
                        reference: resolved.description, manifestDigest: manifestDigest, blobDigest: descriptor.digest,
                        diffID: diffID, claimedKey: claimed)
                    taken(
                        try fetchLayer(
                            descriptor, from: reference.repository, origin: origin, key: claimed, parent: parent,
                            lower: try lowerTrees(), name: layerName, epoch: record.sourceDateEpoch, shared: record,
                            scratch: scratch,
                            overlapCommit: overlapTopCommit && index == manifest.layers.count - 1, observer: observer))
                }
                layers.append(.init(key: claimed, digest: descriptor.digest, size: descriptor.size, pull: how))
                observer(ShareEvent(kind: .layer, layer: layerName, detail: how))
                parent = claimed
                continue
            }
            if let claimed, sameLayer(claimed, parent: parent, diffID: diffID) {
                layers.append(.init(key: claimed, digest: descriptor.digest, size: descriptor.size, pull: "present"))
                observer(ShareEvent(kind: .layer, layer: layerName, detail: "present"))
                parent = claimed
                continue
            }
            let key = Self.pulledKey(parent: parent, diffID: diffID)
            if !store.contains(key) {
                let origin = LayerOrigin(
                    reference: resolved.description, manifestDigest: manifestDigest, blobDigest: descriptor.digest,
                    diffID: diffID, claimedKey: claimed)
                taken(
                    try fetchLayer(
                        descriptor, from: reference.repository, origin: origin, key: key, parent: parent,
                        lower: try lowerTrees(), name: layerName,
                        epoch: epoch, scratch: scratch, overlapCommit: overlapTopCommit && index == manifest.layers.count - 1,
                        observer: observer))
                layers.append(.init(key: key, digest: descriptor.digest, size: descriptor.size, pull: "stored"))
                observer(ShareEvent(kind: .layer, layer: layerName, detail: "stored"))
            } else {
                layers.append(.init(key: key, digest: descriptor.digest, size: descriptor.size, pull: "present"))
                observer(ShareEvent(kind: .layer, layer: layerName, detail: "present"))
            }
            parent = key
        }
        guard let top = parent else { throw RegistryError(.input, "\(resolved) has no layers") }
        var result = Result(
            reference: resolved.description, manifestDigest: manifestDigest, name: name, key: top, layers: layers,
            knownBlocks: knownBlocks)
        // What `reference` resolved to, for a build --offline on it (a cache: a pull that cannot
        // note it still pulls); and under the digest alone, which `from:` may name instead of the
        // tag that resolved to it.
        let byDigest = ImageReference(registry: reference.registry, repository: reference.repository, tag: nil, digest: manifestDigest)
        let pulled = Set([reference.description, byDigest.description]).sorted().map {
            Store.PulledImage(reference: $0, resolved: resolved.description, manifestDigest: manifestDigest, key: top)
        }
        if let pending {
            handedOver = true
            result.committing = TopCommit(pending, store: store, name: name, storeLock: lock, scratch: scratch, pulled: pulled)
            return result
        }
        if let name { try store.setRef(name, to: top) }
        for image in pulled { try? store.notePulled(image) }
        return result
    }

    /// What `fetchLayer` leaves: the block digests it took, and the layer it left to commit.
    private struct FetchedLayer {
        var blocks: BlockDigests?
        var pending: PendingLayer?
    }

    /// The key of a pulled layer: its parent's key, its diff_id, and the rules the unpack reads a
    /// tar by (`unpackRules`), which together fix its tree.
    static func pulledKey(parent: String?, diffID: String) -> String {
        Digest.sha256(Data("layerctl pulled layer\n\(parent ?? "")\n\(diffID)\nunpack rules \(unpackRules)\n".utf8))
    }

    /// Counts the changes to how a blob's tar becomes a tree that change some trees: a layer an
    /// older pull unpacked is then pulled anew, not taken for the tree this one makes. 2: a
    /// whiteout that hides nothing below is left out, and a lower layer's opaque folders hide.
    public static let unpackRules = 2

    /// Whether the store holds `key` on `parent` with a blob whose tar is `diffID`: then it is the
    /// same layer, whatever an image claims.
    private func sameLayer(_ key: String, parent: String?, diffID: String) -> Bool {
        guard store.contains(key), let record = try? store.record(key), record.parent == parent else { return false }
        if record.origin?.diffID == diffID { return true }
        return OCICompression.allCases.contains { store.notedBlob(of: key, compression: $0)?.diffID == diffID }
    }

    /// A ref name: a layer name, as a layer file's is.
    static func checkRefName(_ name: String) throws {
        guard Store.isLayerName(name) else {
            throw ReferenceError(
                message: "\(name) cannot name a layer: use letters, digits and . _ + -, starting with a letter or digit (give --name)")
        }
    }

    /// The name an image's annotation gives a layer, when it is a layer name.
    private static func layerName(_ descriptor: OCIImage.Descriptor, fallback: String) -> String {
        guard let name = descriptor.annotations?["org.layerctl.layer.name"], Store.isLayerName(name) else { return fallback }
        return name
    }

    /// The image manifest `reference` names; from an index, this machine's platform's.
    private func fetchManifest(_ reference: ImageReference) throws -> (OCIImage.Manifest, String) {
        guard var fetched = try client.manifest(reference.repository, reference.manifestReference) else {
            throw RegistryError(.input, "\(reference): no such image on \(reference.registry)")
        }
        if [OCIImage.MediaType.index, OCIImage.MediaType.dockerList].contains(fetched.mediaType) {
            let index: OCIImage.Index
            do { index = try JSONDecoder().decode(OCIImage.Index.self, from: fetched.data) } catch {
                throw RegistryError(.input, "\(reference): the image index does not decode", cause: error)
            }
            // What the index offers, for the message when it offers no image for this machine.
            let platforms = Set(index.manifests.map { quote("\($0.platform?.os ?? "?")/\($0.platform?.architecture ?? "?")") })
            let offered = platforms.count > 8 ? platforms.sorted().prefix(8).joined(separator: ", ") + ", …" : platforms.sorted().joined(separator: ", ")
            guard let chosen = index.manifests.first(where: { $0.platform?.os == "linux" && $0.platform?.architecture == architecture })
            else {
                throw RegistryError(
                    .input, "\(reference) has no image for linux/\(architecture), only \(offered)")
            }
            // By digest only: a tag (or a path) there would fetch what no digest fixes.
            guard ImageReference.isDigest(chosen.digest) else {
                throw RegistryError(.input, "\(reference): the index names manifest \(quote(chosen.digest)), which is no sha256 digest")
            }
            guard let image = try client.manifest(reference.repository, chosen.digest) else {
                throw RegistryError(.input, "\(reference): the index names manifest \(chosen.digest), which the registry lacks")
            }
            fetched = image
        }
        let manifest: OCIImage.Manifest
        do { manifest = try JSONDecoder().decode(OCIImage.Manifest.self, from: fetched.data) } catch {
            throw RegistryError(.input, "\(reference): the manifest is not an OCI or Docker image manifest", cause: error)
        }
        guard manifest.schemaVersion == 2 else {
            throw RegistryError(.input, "\(reference): manifest schema \(manifest.schemaVersion); only schema 2 is read")
        }
        guard manifest.config.size <= Self.documentLimit, ImageReference.isDigest(manifest.config.digest) else {
            throw RegistryError(.input, "\(reference): the config descriptor is not a sha256 blob of at most 4 MiB")
        }
        guard manifest.layers.count <= Self.layerLimit else {
            throw RegistryError(.input, "\(reference) has \(manifest.layers.count) layers; at most \(Self.layerLimit) are taken")
        }
        for layer in manifest.layers {
            guard ImageReference.isDigest(layer.digest), layer.size >= 0 else {
                throw RegistryError(.input, "\(reference): a layer descriptor has no sha256 digest or a negative size")
            }
            guard OCIImage.MediaType.layers.contains(layer.mediaType) else {
                throw RegistryError(.input, "\(reference): layer \(layer.digest) is a \(quote(layer.mediaType)), not a tar layer")
            }
        }
        return (manifest, fetched.digest)
    }

    /// Downloads, checks, unpacks, scans and commits one layer on the trees `lower` (topmost first,
    /// with their opaque folders: the unpack cannot read the markers); returns its files' block digests
    /// when `blockSize` asks for them (none when another process stored the layer meanwhile). With
    /// `overlapCommit`, returns once the layer is whole and its sync started, leaving the rest of
    /// the commit, the layer's build lock and the scratch folder to the caller (`PendingLayer`).
    private func fetchLayer(
        _ descriptor: OCIImage.Descriptor, from repository: String, origin: LayerOrigin, key: String, parent: String?,
        lower: [LowerTree], name: String, epoch: Int64, shared: LayerRecord? = nil, scratch: String, overlapCommit: Bool = false,
        observer: @escaping (ShareEvent) -> Void
    ) throws -> FetchedLayer? {
        let started = Date()
        let lock = try store.buildLock(key)
        var handedOver = false
        defer { if !handedOver { lock.unlock() } }
        if store.contains(key) { return nil }
        let work = scratch + "/" + key
        try FileSystem.makeDirectories(work + "/layer")
        defer { if !handedOver { try? FileSystem.removeTree(work) } }
        // Unpacked as it downloads: the blob is never stored.
        let tree = work + "/layer/tree"
        var unpack: StreamedUnpack?
        do {
            try client.streamBlob(repository, descriptor.digest, size: descriptor.size) { received in
                observer(ShareEvent(kind: .bytes, layer: name, detail: "download", bytes: received, total: descriptor.size))
            } attempt: {
                let current = try StreamedUnpack(
                    into: tree, lower: lower, scratch: work, name: descriptor.digest, unpacker: unpacker)
                unpack = current
                return RegistryClient.BlobSink(write: current.write, end: {}, abandon: current.abandon)
            }
        } catch {
            // A download that stopped because the unpacking refused the blob reports why it did.
            throw unpack?.stoppedWith() ?? error
        }
        guard let unpack else { throw SystemError("unpack", tree, errno: EIO) }
        let diffID = try unpack.finish()
        // The disk finishes the tree while it is checked and scanned; the commit's sync then
        // waits for little.
        let writeback = Background { try FileSystem.syncFileSystem(of: tree) }
        defer { if !handedOver { _ = try? writeback.value() } }
        guard diffID == origin.diffID else {
            throw LayerBlobError(message: "\(origin.reference): layer \(descriptor.digest) unpacks to diff_id \(diffID), not the config's \(origin.diffID)")
        }
        // Every file read and hashed here: the unpack is not trusted with the digests.
        let scan = try TreeScan.scan(tree, blockSize: blockSize)
        var record = LayerRecord(
            formatVersion: 1, key: key, parent: parent, name: name, specDigest: origin.diffID, added: [], removed: [],
            installed: [], treeBytes: scan.bytes, fileCount: scan.fileCount, treeDigest: scan.digest,
            opaqueDirectories: scan.opaqueDirectories, signatures: nil, origin: origin, sourceDateEpoch: epoch,
            buildSeconds: Date().timeIntervalSince(started), builtAt: Date())
        if let shared {
            // A cache's layer: the tree must be the one its record describes, which is then kept.
            guard shared.treeDigest == scan.digest else {
                throw LayerBlobError(
                    message: "\(origin.reference): layer \(key) unpacks to tree digest \(scan.digest.prefix(16)), not the \(shared.treeDigest.prefix(16)) its record says")
            }
            record = shared
            record.origin = origin
            record.buildSeconds = Date().timeIntervalSince(started)
            record.builtAt = Date()
        }
        let noted = OCILayerBlob(digest: descriptor.digest, diffID: diffID, size: descriptor.size, mediaType: descriptor.mediaType)
        // Unsynced, as the tree: the commit puts the whole folder on disk before it moves it.
        try FileSystem.writeFile(Data(scan.manifest.encoded()), to: work + "/layer/" + LayerManifest.fileName)
        try FileSystem.writeFile(try record.encoded(), to: work + "/layer/layer.json")
        try FileSystem.writeFile(try OCIImage.encode([noted.mediaType: noted]), to: work + "/layer/" + Store.blobNotesFile)
        if overlapCommit {
            handedOver = true
            let folder = work + "/layer"
            // A second syncfs, begun now, covers what the first began before the records were written.
            let sync = Background {
                try FileSystem.syncFileSystem(of: folder)
                _ = try? writeback.value()
            }
            let layer = UncommittedLayer(record: record, manifest: scan.manifest, tree: tree)
            return FetchedLayer(
                blocks: scan.blocks, pending: PendingLayer(layer: layer, sync: sync, folder: folder, buildLock: lock))
        }
        _ = try store.commit(work + "/layer", as: key)
        return FetchedLayer(blocks: scan.blocks)
    }
}
