import Glibc
import LayerEntries
import LayerSupport

extension Store {
    public func manifestPath(_ key: String) -> String { layerDirectory(key) + "/" + LayerManifest.fileName }

    /// The manifest of layer `key`. Layers built before manifests were kept get one now, from a walk
    /// of their tree, saved for next time when the store may be written.
    package func manifest(_ key: String, record: LayerRecord) throws -> LayerManifest {
        let path = manifestPath(key)
        guard let manifest = try LayerManifest.read(path) else { return try scan(key, record: record) }
        guard let manifest else {
            throw StoreError.damaged(
                path, "not a layer manifest (cut short or edited)",
                remedy: "run `layerctl gc`, which removes it; the next export makes it again from the layer's tree")
        }
        return manifest
    }

    /// The folders of layer `key`'s tree that hide what is below them (`trusted.overlay.opaque=y`),
    /// relative to it, with no leading `/`: its record's list, or for a record without one
    /// (written before it was kept, or with a name that is no UTF-8), its manifest's.
    package func opaqueFolders(_ key: String) throws -> [[UInt8]] {
        let record = try record(key)
        if let listed = record.opaqueDirectories { return listed.map { Array($0.utf8.drop { $0 == 0x2F }) } }
        let manifest = try manifest(key, record: record)
        let tree = MergedTree(entries: manifest.entries, epoch: record.sourceDateEpoch)
        return manifest.opaque.sorted().map { $0 == 0 ? [] : Array(tree.path(of: $0).dropFirst()) }
    }

    /// Makes the manifest of layer `key` from its tree.
    private func scan(_ key: String, record: LayerRecord) throws -> LayerManifest {
        if geteuid() != 0 && record.opaqueDirectories == nil { throw MergeError.needsPrivilege(tree(key)) }
        let manifest = try TreeScan.scan(tree(key), opaqueDirectories: geteuid() == 0 ? nil : record.opaqueDirectories)
            .manifest
        do {
            try manifest.write(to: manifestPath(key))
        } catch let error as SystemError where [EACCES, EPERM, EROFS].contains(error.errno) {
            // A store this user may read but not write: the manifest is kept in memory only.
        }
        return manifest
    }
}
