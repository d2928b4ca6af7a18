import LayerSupport

/// A tree already in memory as a source: chiefly a squashfs image read whole (`ImageTree`), so that
/// an image can stand in a stack below layers, as an image pulled from a registry will. A merged
/// tree has no whiteouts or opaque folders left; its hard links are its `hardLinkTarget`s. The
/// entries' `source` is whatever the tree holds (an image's are empty: its data is read through
/// the image, by index).
public struct TreeSource: EntrySource {
    public let tree: MergedTree
    /// The first name of each hard-link group: later names point at it.
    private let groupHeads: Set<Int>

    public init(_ tree: MergedTree) {
        self.tree = tree
        groupHeads = Set(tree.entries.lazy.compactMap(\.hardLinkTarget))
    }

    public func root() throws -> SourceEntry {
        SourceEntry(entry: tree.entries[0], handle: 0)
    }

    public func children(of directory: SourceEntry) throws -> [SourceEntry] {
        tree.entries[directory.handle].children.map { index in
            let entry = tree.entries[index]
            let group = entry.hardLinkTarget ?? (groupHeads.contains(index) ? index : nil)
            return SourceEntry(entry: entry, handle: index, linkGroup: group.map(UInt64.init))
        }
    }
}
