import Foundation
import LayerEntries
import LayerStore
import LayerSupport

/// The OCI image of a stack: one OCI layer per layerctl layer, root first; an image config whose
/// `rootfs.diff_ids` and `history` follow the layers; a manifest with, per layer, its name, key
/// and packages as `org.layerctl.` annotations. The same stack gives the same bytes on any
/// machine: the config's time is the layers' epoch, and the JSON is canonical.
struct OCIImage {
    var keys: [String]
    var layers: [OCILayerBlob]
    var config: Data
    var configDescriptor: Descriptor
    var manifest: Data
    var manifestDigest: String

    /// Makes the image of the stack ending at `key`; `blob` gives each layer's blob.
    init(store: Store, key: String, architecture: String, blob: (String, LayerRecord) throws -> OCILayerBlob) throws {
        keys = try store.chain(key)
        layers = []
        var descriptors: [Descriptor] = []
        var history: [History] = []
        let created = Self.timestamp(try store.record(key).sourceDateEpoch)
        for layerKey in keys {
            let record = try store.record(layerKey)
            let layer = try blob(layerKey, record)
            layers.append(layer)
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
            annotations[Self.recordAnnotation] = String(decoding: try Self.sharedRecord(record), as: UTF8.self)
            descriptors.append(
                Descriptor(mediaType: layer.mediaType, digest: layer.digest, size: layer.size, annotations: annotations))
            history.append(
                History(created: created, createdBy: "layerctl build \(record.name).yaml", comment: "layer \(record.key)"))
        }
        let configValue = Config(
            created: created, architecture: architecture, os: "linux",
            rootfs: RootFS(type: "layers", diffIDs: layers.map(\.diffID)), history: history)
        config = try Self.encode(configValue)
        configDescriptor = Descriptor(
            mediaType: MediaType.config, digest: "sha256:" + Digest.sha256(config), size: Int64(config.count))
        let manifestValue = Manifest(
            schemaVersion: 2, mediaType: MediaType.manifest, config: configDescriptor, layers: descriptors,
            annotations: ["org.layerctl.key": key, "org.opencontainers.image.created": created])
        manifest = try Self.encode(manifestValue)
        manifestDigest = "sha256:" + Digest.sha256(manifest)
    }

    /// The annotation that carries a layer's record, for stores that share a registry as a cache.
    static let recordAnnotation = "org.layerctl.layer.record"

    /// A layer's record as a cache shares it: canonical, without what differs between machines
    /// that build the same layer (when and how long, where a pulled layer came from).
    static func sharedRecord(_ record: LayerRecord) throws -> Data {
        var shared = record
        shared.builtAt = Date(timeIntervalSince1970: 0)
        shared.buildSeconds = 0
        shared.origin = nil
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        encoder.dateEncodingStrategy = .iso8601
        return try encoder.encode(shared)
    }

    static func hex(_ digest: String) -> String { String(digest.dropFirst("sha256:".count)) }

    /// RFC 3339, as the OCI spec writes times.
    static func timestamp(_ epoch: Int64) -> String {
        let formatter = ISO8601DateFormatter()
        formatter.formatOptions = [.withInternetDateTime]
        formatter.timeZone = TimeZone(identifier: "UTC")
        return formatter.string(from: Date(timeIntervalSince1970: TimeInterval(epoch)))
    }

    /// The seconds since 1970 of an RFC 3339 time, a fraction rounded up: no file made before
    /// that time is later.
    static func epoch(_ timestamp: String) -> Int64? {
        let formatter = ISO8601DateFormatter()
        formatter.formatOptions = [.withInternetDateTime]
        if let date = formatter.date(from: timestamp) { return Int64(date.timeIntervalSince1970) }
        formatter.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        if let date = formatter.date(from: timestamp) { return Int64(date.timeIntervalSince1970.rounded(.up)) }
        // Foundation reads three digits of a fraction at most; Go writes nine.
        guard let dot = timestamp.firstIndex(of: "."), let zone = timestamp[dot...].firstIndex(where: { $0 == "Z" || $0 == "+" || $0 == "-" }),
            let date = formatter.date(from: String(timestamp[..<dot]) + ".999" + timestamp[zone...])
        else { return nil }
        return Int64(date.timeIntervalSince1970.rounded(.up))
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
        static let dockerManifest = "application/vnd.docker.distribution.manifest.v2+json"
        static let dockerList = "application/vnd.docker.distribution.manifest.list.v2+json"
        static let dockerConfig = "application/vnd.docker.container.image.v1+json"
        /// Layer types a pull takes: OCI tars (plain, gzip, zstd) and Docker's gzip tar.
        static let layers: Set<String> = [
            "application/vnd.oci.image.layer.v1.tar", "application/vnd.oci.image.layer.v1.tar+gzip",
            "application/vnd.oci.image.layer.v1.tar+zstd", "application/vnd.docker.image.rootfs.diff.tar.gzip",
        ]
    }

    struct Descriptor: Codable {
        var mediaType: String
        var digest: String
        var size: Int64
        var annotations: [String: String]? = nil
        var platform: Platform? = nil
    }

    struct Platform: Codable {
        var architecture: String
        var os: String
    }

    struct Index: Codable {
        var schemaVersion: Int
        var mediaType: String?
        var manifests: [Descriptor]
    }

    struct Manifest: Codable {
        var schemaVersion: Int
        var mediaType: String?
        var config: Descriptor
        var layers: [Descriptor]
        var annotations: [String: String]?
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
        var created: String?
        var createdBy: String?
        var comment: String?
        enum CodingKeys: String, CodingKey {
            case created, comment
            case createdBy = "created_by"
        }
    }

    struct Config: Codable {
        var created: String?
        var architecture: String
        var os: String
        var rootfs: RootFS
        var history: [History]?
    }
}

extension Store {
    /// Layer `key`'s entries, read through its manifest.
    func layerSource(_ key: String, record: LayerRecord) throws -> ManifestSource {
        ManifestSource(try manifest(key, record: record), tree: tree(key))
    }

    /// The file in a layer's directory that notes its OCI blobs, by media type.
    static let blobNotesFile = "oci-blobs.json"

    private func blobNotesPath(_ key: String) -> String { layerDirectory(key) + "/" + Self.blobNotesFile }

    /// The blob of layer `key` in `compression`, as noted when it was last written or pulled: what a
    /// push asks the registry about before it compresses anything.
    func notedBlob(of key: String, compression: OCICompression) -> OCILayerBlob? {
        guard let data = FileSystem.contents(blobNotesPath(key)),
            let notes = try? JSONDecoder().decode([String: OCILayerBlob].self, from: Data(data))
        else { return nil }
        return notes[compression.mediaType]
    }

    /// Notes `blob` as layer `key`'s blob in its compression. A store this user may not write keeps
    /// no note; the next push compresses again.
    func note(_ blob: OCILayerBlob, of key: String) {
        var notes: [String: OCILayerBlob] = [:]
        if let data = FileSystem.contents(blobNotesPath(key)),
            let old = try? JSONDecoder().decode([String: OCILayerBlob].self, from: Data(data))
        {
            notes = old
        }
        notes[blob.mediaType] = blob
        if let data = try? OCIImage.encode(notes) { try? FileSystem.writeAtomically(data, to: blobNotesPath(key)) }
    }
}
