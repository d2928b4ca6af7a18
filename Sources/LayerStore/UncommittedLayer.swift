import LayerEntries

/// A layer whose folder is whole, manifest and record made, while its commit still waits for the
/// disk: an export may read it from where it is (`tree`) meanwhile. Nothing else may take it for a
/// stored layer; it is one only once the commit's rename is done.
public struct UncommittedLayer: Sendable {
    public var record: LayerRecord
    public var manifest: LayerManifest
    public var tree: String

    public var key: String { record.key }

    public init(record: LayerRecord, manifest: LayerManifest, tree: String) {
        self.record = record
        self.manifest = manifest
        self.tree = tree
    }
}
