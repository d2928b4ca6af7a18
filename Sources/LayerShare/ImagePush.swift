import Foundation
import Glibc
import LayerStore
import LayerSupport
import RegistryClient

/// What a push or a pull says while it works.
public struct ShareEvent: Sendable {
    public enum Kind: String, Sendable, Codable {
        /// A layer is being compressed, or unpacked and stored.
        case step
        /// Bytes went up or came down: `bytes` more of `total`.
        case bytes
        /// A layer is done: `detail` says how (present, mounted or uploaded; stored or present).
        case layer
    }

    public var kind: Kind
    public var layer: String
    public var detail: String
    public var bytes: Int64 = 0
    public var total: Int64 = 0
}

/// Pushes a stack as one OCI image: each layer's blob unless the repository has it (asked by the
/// digest noted when it was last written, so a layer already there is not even compressed), or
/// mounted from `mountFrom`; then the config, then the manifest under the reference's tag.
public struct ImagePush {
    public struct Result: Codable, Sendable {
        public var reference: String
        public var manifestDigest: String
        public var layers: [Layer]
        public var skippedAttributes: [String]

        public struct Layer: Codable, Sendable {
            public var name: String
            public var key: String
            public var digest: String
            public var size: Int64
            /// present, mounted or uploaded.
            public var upload: String
        }
    }

    public let store: Store
    public let client: RegistryClient
    public var compression: OCICompression = .zstd
    public var architecture: String
    /// Another repository of the same registry to mount blobs from.
    public var mountFrom: String?

    public init(store: Store, client: RegistryClient, architecture: String) {
        self.store = store
        self.client = client
        self.architecture = architecture
    }

    public func push(_ key: String, to reference: ImageReference, observer: @escaping (ShareEvent) -> Void) throws -> Result {
        guard reference.digest == nil, let tag = reference.tag else {
            throw ReferenceError(message: "push to \(reference): a push names a tag, not a digest")
        }
        let scratch = try store.makeTemporary("push")
        defer { try? FileSystem.removeTree(scratch) }
        var layers: [Result.Layer] = []
        var skipped: [String] = []
        // A layer built again into its place meanwhile (`Store.checkUnchanged`) would send records
        // and blobs of two trees, and note a blob of the old tree in the new one's folder.
        let identities = try store.chain(key).map(store.directoryIdentity)
        let image = try OCIImage(store: store, key: key, architecture: architecture) { layerKey, record in
            if let noted = store.notedBlob(of: layerKey, compression: compression),
                try client.hasBlob(reference.repository, noted.digest, access: .push)
            {
                layers.append(.init(name: record.name, key: layerKey, digest: noted.digest, size: noted.size, upload: "present"))
                observer(ShareEvent(kind: .layer, layer: record.name, detail: "present"))
                return noted
            }
            observer(ShareEvent(kind: .step, layer: record.name, detail: "compress"))
            var writer = OCILayerWriter(layer: record.name)
            let path = scratch + "/" + layerKey
            let blob = try writer.write(try store.layerSource(layerKey, record: record), to: path, compression: compression)
            skipped += writer.skippedAttributes
            try store.checkUnchanged(identities)
            store.note(blob, of: layerKey)
            let upload = try client.uploadBlob(
                reference.repository, file: path, digest: blob.digest, size: blob.size, mountFrom: mountFrom
            ) { sent in
                observer(ShareEvent(kind: .bytes, layer: record.name, detail: "upload", bytes: sent, total: blob.size))
            }
            unlink(path)
            layers.append(.init(name: record.name, key: layerKey, digest: blob.digest, size: blob.size, upload: upload.rawValue))
            observer(ShareEvent(kind: .layer, layer: record.name, detail: upload.rawValue))
            return blob
        }
        try store.checkUnchanged(identities)
        let configPath = scratch + "/config.json"
        try FileSystem.writeAtomically(image.config, to: configPath)
        try client.uploadBlob(
            reference.repository, file: configPath, digest: image.configDescriptor.digest, size: image.configDescriptor.size)
        try client.putManifest(reference.repository, tag, data: image.manifest, mediaType: OCIImage.MediaType.manifest)
        return Result(reference: reference.description, manifestDigest: image.manifestDigest, layers: layers, skippedAttributes: skipped)
    }
}
