import Foundation

/// What B adds to A: package changes from their pacman databases, and every entry added, removed
/// or modified, each with the package that owns it. The JSON form is the `--json` schema the
/// README documents.
public struct TreeDiff: Codable, Sendable, Equatable {
    public enum Change: String, Codable, Sendable { case added, removed, modified }

    public struct Entry: Codable, Sendable, Equatable {
        public var path: String
        public var change: Change
        /// The type on the side that has it (B's, for a modified entry): regular, directory, symlink…
        public var kind: String
        /// Bytes of file data on the side that has it (B's, for a modified entry).
        public var size: UInt64
        /// For a modified entry: type, content, size, mode, owner, target, device, xattrs.
        public var differences: [String]
        /// The package whose file list holds the path (B's database, A's for a removed entry), or nil.
        public var owner: String?
    }

    public var old: String
    public var new: String
    public var packages: [PackageChange]
    public var entries: [Entry]

    public var isEmpty: Bool { packages.isEmpty && entries.isEmpty }

    /// Compares `a` (old) with `b` (new).
    public static func compare(_ a: DiffSide, _ b: DiffSide) throws -> TreeDiff {
        let oldPackages = try a.packages()
        let newPackages = try b.packages()
        let oldOwners = oldPackages.owners()
        let newOwners = newPackages.owners()
        var entries: [Entry] = []
        var comparer = ContentComparer(a: a, b: b)

        // Both trees are in byte order by path: walk them together, depth first.
        let left = a.tree.depthFirst().map { (a.tree.path(of: $0), $0) }
        let right = b.tree.depthFirst().map { (b.tree.path(of: $0), $0) }
        var i = 0
        var j = 0
        while i < left.count || j < right.count {
            let order: Int
            if i == left.count {
                order = 1
            } else if j == right.count {
                order = -1
            } else {
                order = Self.pathOrder(left[i].0, right[j].0)
            }
            if order < 0 {
                let (path, index) = left[i]
                let text = RawPath.string(path)
                entries.append(Self.entry(text, .removed, a.tree.entries[index], [], owner: oldOwners[text]))
                i += 1
            } else if order > 0 {
                let (path, index) = right[j]
                let text = RawPath.string(path)
                entries.append(Self.entry(text, .added, b.tree.entries[index], [], owner: newOwners[text]))
                j += 1
            } else {
                let (path, index) = left[i]
                let other = right[j].1
                let differences = try comparer.differences(index, other)
                if !differences.isEmpty {
                    let text = RawPath.string(path)
                    entries.append(
                        Self.entry(
                            text, .modified, b.tree.entries[other], differences,
                            owner: newOwners[text] ?? oldOwners[text]))
                }
                i += 1
                j += 1
            }
        }
        return TreeDiff(
            old: a.operand, new: b.operand, packages: PackageChange.between(oldPackages, newPackages), entries: entries)
    }

    /// Depth-first order of paths: component by component, in byte order, a folder before what is in it.
    static func pathOrder(_ x: [UInt8], _ y: [UInt8]) -> Int {
        let a = x.split(separator: 0x2F, omittingEmptySubsequences: true)
        let b = y.split(separator: 0x2F, omittingEmptySubsequences: true)
        for (p, q) in zip(a, b) where p != q {
            return p.lexicographicallyPrecedes(q) ? -1 : 1
        }
        return a.count == b.count ? 0 : a.count < b.count ? -1 : 1
    }

    private static func entry(
        _ path: String, _ change: Change, _ entry: MergedTree.Entry, _ differences: [String], owner: String?
    ) -> Entry {
        Entry(
            path: path, change: change, kind: "\(entry.kind)", size: entry.size, differences: differences, owner: owner)
    }
}

/// Decides what differs between two entries at one path, reading file data only when the metadata
/// leaves the question open, and then as cheaply as the sides allow.
private struct ContentComparer {
    let a: DiffSide
    let b: DiffSide

    mutating func differences(_ x: Int, _ y: Int) throws -> [String] {
        let left = a.tree.entries[x]
        let right = b.tree.entries[y]
        if left.kind != right.kind { return ["type"] }
        var differences: [String] = []
        switch left.kind {
        case .regular:
            if left.size != right.size {
                differences += ["content", "size"]
            } else if try !sameContent(x, y) {
                differences.append("content")
            }
        case .symlink:
            if left.linkTarget != right.linkTarget { differences.append("target") }
        case .characterDevice, .blockDevice:
            if left.rdev != right.rdev { differences.append("device") }
        default: break
        }
        if left.permissions != right.permissions { differences.append("mode") }
        if left.uid != right.uid || left.gid != right.gid { differences.append("owner") }
        if left.xattrs != right.xattrs { differences.append("xattrs") }
        return differences
    }

    /// Equal-sized files: the same file of the same layer is the same content; two images that
    /// store a file alike hold the same content; otherwise the sha256 of both decides.
    private func sameContent(_ x: Int, _ y: Int) throws -> Bool {
        let ix = a.tree.entries[x].hardLinkTarget ?? x
        let iy = b.tree.entries[y].hardLinkTarget ?? y
        let left = a.tree.entries[ix]
        let right = b.tree.entries[iy]
        if left.size == 0 { return true }
        if case .layer = a.origin, case .layer = b.origin, !left.source.isEmpty, left.source == right.source {
            return true
        }
        if let imageA = a.image, let imageB = b.image, try imageA.sameStoredData(ix, as: iy, in: imageB) {
            return true
        }
        return try a.digest(ix) == b.digest(iy)
    }
}
