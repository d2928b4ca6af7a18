import Glibc

extension Store {
    public func manifestPath(_ key: String) -> String { layerDirectory(key) + "/" + LayerManifest.fileName }

    /// The manifest of layer `key`. Layers built before manifests were kept get one now, from a walk
    /// of their tree, saved for next time when the store may be written.
    func manifest(_ key: String, record: LayerRecord) throws -> LayerManifest {
        if let manifest = try LayerManifest.read(manifestPath(key)) { return manifest }
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
