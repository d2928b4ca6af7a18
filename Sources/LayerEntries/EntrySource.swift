import LayerSupport

/// Where the merge reads one layer's entries from: a layer's manifest (`ManifestSource`), a folder
/// (`FolderSource`: a layer tree, an overlay's upper folder, the running system), or a tree in
/// memory (`TreeSource`: a squashfs image read whole); with sharing, a layer pulled from a registry.
/// A source knows nothing of overlayfs's rules; `OverlayMerge` applies them to a list of sources.
public protocol EntrySource: Sendable {
    /// The root folder.
    func root() throws -> SourceEntry
    /// The entries of `directory`, a folder this source returned, in byte order of their names.
    func children(of directory: SourceEntry) throws -> [SourceEntry]
}

/// One entry of one source, as the source holds it.
public struct SourceEntry: Sendable {
    /// Name, type, metadata, link target, xattrs (without overlayfs's own), the content digest when the
    /// source records it, and in `source` the path its data is read from (for regular files and
    /// folders; other entries carry everything in their fields). `parent`, `children`, `layer` and
    /// the hard-link fields are the merge's to fill in.
    public var entry: MergedTree.Entry
    /// Where the source finds the entry again (a manifest's index; unused by a folder).
    public var handle: Int
    /// For a folder: `trusted.overlay.opaque=y`, which hides the sources below it.
    public var isOpaque: Bool
    /// The same value for every name of one inode within this source; nil for a single name.
    public var linkGroup: UInt64?

    public init(entry: MergedTree.Entry, handle: Int = 0, isOpaque: Bool = false, linkGroup: UInt64? = nil) {
        self.entry = entry
        self.handle = handle
        self.isOpaque = isOpaque
        self.linkGroup = linkGroup
    }

    /// overlayfs's whiteout: a character device with device number 0:0. It hides the name below.
    public var isWhiteout: Bool { entry.kind == .characterDevice && entry.rdev == 0 }
}
