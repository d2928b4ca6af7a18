import LayerSupport

/// overlayfs's rules, applied in user space to a stack of sources `[bottom … top]`. This is the one
/// place they are written down; export, diff, package resolution and `changes` all merge through it.
/// - the topmost copy of a name wins, and its metadata is the merged entry's metadata;
/// - a whiteout (a 0:0 character device) hides the name below it and is not itself visible;
/// - an opaque folder (`trusted.overlay.opaque=y`) hides everything below it;
/// - a non-folder above a folder replaces it, and a folder above a non-folder does too.
///
/// Hard links within one source stay hard links; names of one inode in different sources do not.
public struct OverlayMerge: Sendable {
    /// Bottom first.
    public let sources: [any EntrySource]
    /// Timestamps newer than this are clamped to it.
    public let epoch: Int64

    public init(_ sources: [any EntrySource], epoch: Int64 = Int64.max) {
        self.sources = sources
        self.epoch = epoch
    }

    /// One source's copy of a name.
    public struct Copy: Sendable {
        /// The source's position in the stack, 0 at the bottom.
        public var layer: Int
        public var entry: SourceEntry
    }

    /// The copies of the root folder that show through, top first: down to the first opaque root.
    public func rootCopies() throws -> [Copy] {
        guard !sources.isEmpty else { throw MergeError.emptyStack }
        var copies: [Copy] = []
        for layer in sources.indices.reversed() {
            let root = try sources[layer].root()
            copies.append(Copy(layer: layer, entry: root))
            if root.isOpaque { break }
        }
        return copies
    }

    /// A visible name of a merged folder: the copy that wins, and the copies below it, top first.
    public struct Name: Sendable {
        public var winner: Copy
        public var below: [Copy] = []

        /// The winning entry as its source holds it.
        public var entry: MergedTree.Entry { winner.entry.entry }
    }

    /// The visible names of the folder whose copies (top first) are `directory`, in byte order.
    /// Names whose winner is a whiteout are left out.
    public func names(in directory: [Copy]) throws -> [Name] {
        if directory.count == 1, let only = directory.first {
            // Most folders exist in one source only: no names to match up, and no copies below.
            return try sources[only.layer].children(of: only.entry).compactMap {
                $0.isWhiteout ? nil : Name(winner: Copy(layer: only.layer, entry: $0))
            }
        }
        var byName: [[UInt8]: [Copy]] = [:]
        for copy in directory {
            for child in try sources[copy.layer].children(of: copy.entry) {
                byName[child.entry.name, default: []].append(Copy(layer: copy.layer, entry: child))
            }
        }
        return byName.sorted { $0.key.lexicographicallyPrecedes($1.key) }.compactMap {
            $0.value[0].entry.isWhiteout ? nil : Name(winner: $0.value[0], below: Array($0.value.dropFirst()))
        }
    }

    /// The copies of a name's folder that show through, top first: from the winner down, until an
    /// opaque copy or a non-folder (a whiteout among them) stops the lookup. Empty when the winner
    /// is no folder.
    public static func visibleFolders(_ name: Name) -> [Copy] {
        guard name.entry.kind == .directory else { return [] }
        if name.winner.entry.isOpaque || name.below.isEmpty { return [name.winner] }
        var result = [name.winner]
        for copy in name.below {
            guard copy.entry.entry.kind == .directory else { break }
            result.append(copy)
            if copy.entry.isOpaque { break }
        }
        return result
    }

    /// The whole merged tree, breadth first, each folder's children contiguous and in byte order.
    public func merge() throws -> MergedTree {
        let roots = try rootCopies()
        var entries: [MergedTree.Entry] = []
        var root = entry(roots[0], parent: 0)
        root.name = []
        entries.append(root)
        var hardLinks: [HardLinkKey: Int] = [:]
        // Each entry's path length, for PathLimit: a folder or a damaged manifest may nest deeper
        // than a layer may.
        var lengths = [0]
        var queue: [(index: Int, copies: [Copy])] = [(0, roots)]
        var head = 0
        while head < queue.count {
            let (directory, copies) = queue[head]
            queue[head].copies = []
            head += 1
            let first = entries.count
            for name in try names(in: copies) {
                try PathLimit.check(
                    lengths[directory], adding: name.entry.name,
                    to: directory == 0 ? [] : MergedTree(entries: entries, epoch: epoch).path(of: directory))
                lengths.append(lengths[directory] + 1 + name.entry.name.count)
                let winner = name.winner
                let index = entries.count
                var merged = entry(winner, parent: directory)
                if merged.kind == .directory {
                    queue.append((index, Self.visibleFolders(name)))
                } else if let group = winner.entry.linkGroup {
                    let key = HardLinkKey(layer: winner.layer, group: group)
                    if let target = hardLinks[key] {
                        merged.hardLinkTarget = target
                        entries[target].linkCount += 1
                    } else {
                        hardLinks[key] = index
                    }
                }
                entries.append(merged)
            }
            entries[directory].children = first..<entries.count
        }
        return MergedTree(entries: entries, epoch: epoch)
    }

    private struct HardLinkKey: Hashable {
        var layer: Int
        var group: UInt64
    }

    private func entry(_ copy: Copy, parent: Int) -> MergedTree.Entry {
        var entry = copy.entry.entry
        entry.parent = parent
        entry.layer = copy.layer
        entry.mtime = min(entry.mtime, epoch)
        entry.children = 0..<0
        entry.hardLinkTarget = nil
        entry.linkCount = 1
        return entry
    }
}

public enum MergeError: LayerError {
    case emptyStack
    case notADirectory(String)
    case unsupportedType(String)
    case needsPrivilege(String)

    public var code: ErrorCode {
        switch self {
        case .emptyStack, .notADirectory, .unsupportedType: .input
        case .needsPrivilege: .privilege
        }
    }

    public var message: String {
        switch self {
        case .emptyStack: "the stack has no layers"
        case .notADirectory(let path): "layer tree \(path) is not a directory"
        case .unsupportedType(let path): "\(path): file type cannot be stored in an image"
        case .needsPrivilege(let tree):
            "layer tree \(tree) has no record of its opaque directories, and reading them from trusted.overlay.opaque needs root"
        }
    }
}
