import Alpm
import Foundation

/// What the store keeps about a built layer, in `layers/<key>/layer.json`.
public struct LayerRecord: Codable, Sendable, Equatable {
    public var formatVersion: Int
    public var key: String
    /// The parent layer's key; nil for a root layer.
    public var parent: String?
    /// The layer file name it was first built for.
    public var name: String
    /// sha256 of the canonical spec the key was made from.
    public var specDigest: String
    /// Package files this layer installed, exactly as resolved.
    public var added: [PackageFile]
    /// Packages this layer removed from its parent.
    public var removed: [InstalledPackage]
    /// Every package installed once this layer is on top of its parents.
    public var installed: [InstalledPackage]
    /// Bytes of file data in this layer's tree.
    public var treeBytes: Int64
    /// Entries in this layer's tree, whiteouts included.
    public var fileCount: Int
    /// sha256 over the tree's names, metadata and contents; equal trees have equal digests.
    public var treeDigest: String
    /// Directories of the tree that hide everything below them (`trusted.overlay.opaque=y`),
    /// relative to it. Recorded so the stack can be merged without the privilege of reading
    /// trusted.* attributes; nil in records written before it was kept.
    public var opaqueDirectories: [String]?
    /// The signature policy the layer's packages were checked under; nil in records written
    /// before it was kept, which prove nothing.
    public var signatures: SignatureProof?
    /// True when the layer's `run:` commands had the host's network (`network: true`); nil when
    /// the build had loopback only.
    public var network: Bool?
    /// Where a pulled layer came from; nil for a layer built here.
    public var origin: LayerOrigin?
    /// The image a built layer's layer file names in `from:`, with the digest its tag resolved to
    /// when it was built; nil for layers on scratch or on another layer file.
    public var image: String?
    /// The folder of the store's sync databases (`cache/sync/NAME`) the build resolved the layer's
    /// packages against, which `gc` keeps while the layer stays; nil for a layer built with no
    /// repository, a pulled one, or one recorded before it was kept.
    public var syncDatabases: String?
    /// The version of the builder's rules the tree was made under (`BuilderRules.version` in
    /// LayerBuilder); nil in records written before it was kept, and in layers pulled from an
    /// image, which no rules of ours made.
    public var rules: Int?
    /// The timestamp every mtime was clamped to.
    public var sourceDateEpoch: Int64
    /// Wall-clock seconds the build took.
    public var buildSeconds: Double
    /// When it was built (informative only; not part of the key).
    public var builtAt: Date

    package init(formatVersion: Int, key: String, parent: String?, name: String, specDigest: String, added: [PackageFile], removed: [InstalledPackage], installed: [InstalledPackage], treeBytes: Int64, fileCount: Int, treeDigest: String, opaqueDirectories: [String]?, signatures: SignatureProof?, network: Bool? = nil, image: String? = nil, origin: LayerOrigin? = nil, syncDatabases: String? = nil, rules: Int? = nil, sourceDateEpoch: Int64, buildSeconds: Double, builtAt: Date) {
        self.formatVersion = formatVersion
        self.key = key
        self.parent = parent
        self.name = name
        self.specDigest = specDigest
        self.added = added
        self.removed = removed
        self.installed = installed
        self.treeBytes = treeBytes
        self.fileCount = fileCount
        self.treeDigest = treeDigest
        self.opaqueDirectories = opaqueDirectories
        self.signatures = signatures
        self.network = network
        self.origin = origin
        self.image = image
        self.syncDatabases = syncDatabases
        self.rules = rules
        self.sourceDateEpoch = sourceDateEpoch
        self.buildSeconds = buildSeconds
        self.builtAt = builtAt
    }

    static let encoder: JSONEncoder = {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        encoder.dateEncodingStrategy = .iso8601
        return encoder
    }()

    static let decoder: JSONDecoder = {
        let decoder = JSONDecoder()
        decoder.dateDecodingStrategy = .iso8601
        return decoder
    }()

    public func encoded() throws -> Data { try Self.encoder.encode(self) }

    /// A record from its JSON, as `encoded()` or a shared copy writes it.
    public static func decoded(_ data: Data) throws -> LayerRecord { try decoder.decode(LayerRecord.self, from: data) }
}

/// Where a pulled layer came from: the image, and the blob that was unpacked into it.
public struct LayerOrigin: Codable, Sendable, Equatable {
    /// The reference as pulled, with the digest its tag resolved to.
    public var reference: String
    /// `sha256:…` of the image manifest.
    public var manifestDigest: String
    /// `sha256:…` of the layer blob, and of its uncompressed tar (the config's diff_id).
    public var blobDigest: String
    public var diffID: String
    /// The layerctl key the image's annotations claim for the layer: unchecked, shown only.
    public var claimedKey: String?

    public init(reference: String, manifestDigest: String, blobDigest: String, diffID: String, claimedKey: String?) {
        self.reference = reference
        self.manifestDigest = manifestDigest
        self.blobDigest = blobDigest
        self.diffID = diffID
        self.claimedKey = claimedKey
    }
}
