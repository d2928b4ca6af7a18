import LayerSupport

/// A layer's entries from its manifest, with no system call per entry. Data is read from the
/// layer's tree, whose path prefixes every `source`.
public struct ManifestSource: EntrySource {
    public let manifest: LayerManifest
    /// The layer tree the manifest describes.
    public let tree: [UInt8]
    /// The first name of each hard-link group: later names point at it.
    private let groupHeads: Set<Int>

    public init(_ manifest: LayerManifest, tree: String) {
        self.manifest = manifest
        self.tree = Array(tree.utf8)
        groupHeads = Set(manifest.entries.lazy.compactMap(\.hardLinkTarget))
    }

    public func root() throws -> SourceEntry {
        var root = manifest.entries[0]
        root.source = tree
        return SourceEntry(entry: root, handle: 0, isOpaque: manifest.opaque.contains(0))
    }

    public func children(of directory: SourceEntry) throws -> [SourceEntry] {
        manifest.entries[directory.handle].children.map { index in
            var entry = manifest.entries[index]
            // Only files are read and only folders descended into: other entries need no path,
            // which saves two allocations each.
            if entry.kind == .regular || entry.kind == .directory {
                var path = directory.entry.source
                path.reserveCapacity(path.count + entry.name.count + 1)
                path.append(0x2F)
                path += entry.name
                entry.source = path
            }
            let group = entry.hardLinkTarget ?? (groupHeads.contains(index) ? index : nil)
            return SourceEntry(
                entry: entry, handle: index, isOpaque: manifest.opaque.contains(index),
                linkGroup: group.map(UInt64.init))
        }
    }
}
