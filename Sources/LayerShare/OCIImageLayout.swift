import Foundation
import Glibc
import LayerEntries
import LayerStore
import LayerSupport

/// A stack written as an OCI image layout (a folder with `oci-layout`, `index.json` and
/// `blobs/sha256/`), as `skopeo` copies to a registry and `umoci` unpacks: one OCI layer per
/// layerctl layer, root first, an image config whose `rootfs.diff_ids` and `history` follow the
/// layers, and per layer its name, key and packages as `org.layerctl.` annotations. The same
/// stack gives the same digests on any machine: the config's time is the layers' epoch.
public struct OCIImageLayout {
    public struct Result: Codable, Sendable {
        /// `sha256:…` of the image manifest: what a registry would call the image.
        public var manifestDigest: String
        public var layers: [OCILayerBlob]
        public var skippedAttributes: [String]
    }

    public let store: Store
    public var compression: OCICompression = .zstd
    /// The OCI architecture (`amd64`, `arm64`, …).
    public var architecture: String

    public init(store: Store, architecture: String) {
        self.store = store
        self.architecture = architecture
    }

    /// The OCI name of a Linux machine architecture (`uname -m`).
    public static func architecture(machine: String) -> String {
        switch machine {
        case "x86_64": "amd64"
        case "aarch64": "arm64"
        case "i686", "i386": "386"
        case "armv7l", "armv7h": "arm"
        default: machine
        }
    }

    /// Writes the stack ending at `key` into the new folder `path`, tagged `tag`. A folder that is
    /// there already and not empty is never overwritten; the layout appears whole or not at all.
    public func write(_ key: String, to path: String, tag: String) throws -> Result {
        if FileSystem.exists(path), !((try? FileSystem.listDirectory(path))?.isEmpty ?? false) {
            throw SystemError("write an OCI layout to", path, errno: EEXIST)
        }
        let staging = FileSystem.stagingPath(beside: path)
        try? FileSystem.removeTree(staging)
        do {
            let result = try populate(key, staging, tag: tag)
            if FileSystem.exists(path) { try sys("replace", path) { rmdir(path) } }
            try sys("move the layout to", path) { rename(staging, path) }
            return result
        } catch {
            try? FileSystem.removeTree(staging)
            throw error
        }
    }

    private func populate(_ key: String, _ root: String, tag: String) throws -> Result {
        let blobs = root + "/blobs/sha256"
        try FileSystem.makeDirectories(blobs)
        let chain = try store.chain(key)
        var layers: [OCILayerBlob] = []
        var descriptors: [Descriptor] = []
        var history: [History] = []
        var skipped: [String] = []
        let top = try store.record(key)
        let created = Self.timestamp(top.sourceDateEpoch)
        for layerKey in chain {
            let record = try store.record(layerKey)
            let source = ManifestSource(try store.manifest(layerKey, record: record), tree: store.tree(layerKey))
            var writer = OCILayerWriter()
            let scratch = blobs + "/layer-\(layers.count)"
            let blob = try writer.write(source, to: scratch, compression: compression)
            skipped += writer.skippedAttributes
            try sys("store the blob of", record.name) { rename(scratch, blobs + "/" + Self.hex(blob.digest)) }
            layers.append(blob)
            var annotations = [
                "org.layerctl.layer.name": record.name, "org.layerctl.layer.key": record.key,
                "org.layerctl.layer.tree-digest": record.treeDigest,
            ]
            if !record.added.isEmpty {
                annotations["org.layerctl.layer.added"] = record.added.map { "\($0.name)=\($0.version)" }.joined(separator: ",")
            }
            if !record.removed.isEmpty {
                annotations["org.layerctl.layer.removed"] = record.removed.map(\.name).joined(separator: ",")
            }
            descriptors.append(
                Descriptor(mediaType: blob.mediaType, digest: blob.digest, size: blob.size, annotations: annotations))
            history.append(
                History(created: created, createdBy: "layerctl build \(record.name).yaml", comment: "layer \(record.key)"))
        }
        let config = Config(
            created: created, architecture: architecture, os: "linux",
            rootfs: RootFS(type: "layers", diffIDs: layers.map(\.diffID)), history: history)
        let configDescriptor = try writeBlob(try Self.encode(config), into: blobs, mediaType: MediaType.config)
        let manifest = Manifest(
            schemaVersion: 2, mediaType: MediaType.manifest, config: configDescriptor, layers: descriptors,
            annotations: ["org.layerctl.key": key, "org.opencontainers.image.created": created])
        var manifestDescriptor = try writeBlob(try Self.encode(manifest), into: blobs, mediaType: MediaType.manifest)
        manifestDescriptor.annotations = ["org.opencontainers.image.ref.name": tag]
        let index = Index(schemaVersion: 2, mediaType: MediaType.index, manifests: [manifestDescriptor])
        try FileSystem.writeAtomically(try Self.encode(index), to: root + "/index.json")
        try FileSystem.writeAtomically(Data(#"{"imageLayoutVersion":"1.0.0"}"#.utf8), to: root + "/oci-layout")
        return Result(manifestDigest: manifestDescriptor.digest, layers: layers, skippedAttributes: skipped)
    }

    private func writeBlob(_ data: Data, into blobs: String, mediaType: String) throws -> Descriptor {
        let digest = "sha256:" + Digest.sha256(data)
        try FileSystem.writeAtomically(data, to: blobs + "/" + Self.hex(digest))
        return Descriptor(mediaType: mediaType, digest: digest, size: Int64(data.count), annotations: nil)
    }

    static func hex(_ digest: String) -> String { String(digest.dropFirst("sha256:".count)) }

    /// RFC 3339, as the OCI spec writes times.
    static func timestamp(_ epoch: Int64) -> String {
        let formatter = ISO8601DateFormatter()
        formatter.formatOptions = [.withInternetDateTime]
        formatter.timeZone = TimeZone(identifier: "UTC")
        return formatter.string(from: Date(timeIntervalSince1970: TimeInterval(epoch)))
    }

    /// Canonical JSON: keys sorted, no escaped slashes, so the same content has the same digest.
    static func encode<T: Encodable>(_ value: T) throws -> Data {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return try encoder.encode(value)
    }

    enum MediaType {
        static let index = "application/vnd.oci.image.index.v1+json"
        static let manifest = "application/vnd.oci.image.manifest.v1+json"
        static let config = "application/vnd.oci.image.config.v1+json"
    }

    struct Descriptor: Codable {
        var mediaType: String
        var digest: String
        var size: Int64
        var annotations: [String: String]?
    }

    struct Index: Codable {
        var schemaVersion: Int
        var mediaType: String
        var manifests: [Descriptor]
    }

    struct Manifest: Codable {
        var schemaVersion: Int
        var mediaType: String
        var config: Descriptor
        var layers: [Descriptor]
        var annotations: [String: String]
    }

    struct RootFS: Codable {
        var type: String
        var diffIDs: [String]
        enum CodingKeys: String, CodingKey {
            case type
            case diffIDs = "diff_ids"
        }
    }

    struct History: Codable {
        var created: String
        var createdBy: String
        var comment: String
        enum CodingKeys: String, CodingKey {
            case created, comment
            case createdBy = "created_by"
        }
    }

    struct Config: Codable {
        var created: String
        var architecture: String
        var os: String
        var rootfs: RootFS
        var history: [History]
    }
}
