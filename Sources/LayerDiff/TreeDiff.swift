import Foundation
import LayerEntries
import LayerSupport

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
        /// The path's bytes (`RawPath.display` shows them): `path` holds U+FFFD for each byte that
        /// is not UTF-8, so two such names would read alike. In the JSON as `pathBase64`, only then.
        public var pathBytes: [UInt8] = []

        enum CodingKeys: String, CodingKey { case path, change, kind, size, differences, owner }

        public func encode(to encoder: any Encoder) throws {
            var container = encoder.container(keyedBy: CodingKeys.self)
            try container.encode(path, forKey: .path)
            try container.encode(change, forKey: .change)
            try container.encode(kind, forKey: .kind)
            try container.encode(size, forKey: .size)
            try container.encode(differences, forKey: .differences)
            try container.encodeIfPresent(owner, forKey: .owner)
            try RawPath.encodeBytesUnlessText(pathBytes, to: encoder)
        }
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
        let comparer = ContentComparer(a: a, b: b)

        // Both trees keep each folder's names in byte order: walk them together, depth first.
        var walk = Walk(a: a, b: b, oldOwners: oldOwners, newOwners: newOwners, comparer: comparer)
        try walk.folder(0, 0, path: [])
        entries = walk.entries
        return TreeDiff(
            old: a.operand, new: b.operand, packages: PackageChange.between(oldPackages, newPackages), entries: entries)
    }

    /// What differs between two entries at one path: type, content, size, mode, owner, target,
    /// device, xattrs. Times do not count. `sameContent` is asked only for regular files of equal size.
    package static func differences(
        _ left: MergedTree.Entry, _ right: MergedTree.Entry, sameContent: () throws -> Bool
    ) rethrows -> [String] {
        if left.kind != right.kind { return ["type"] }
        var differences: [String] = []
        switch left.kind {
        case .regular:
            if left.size != right.size {
                differences += ["content", "size"]
            } else if try !sameContent() {
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

    fileprivate static func entry(
        _ path: [UInt8], _ change: Change, _ entry: MergedTree.Entry, _ differences: [String], owner: String?
    ) -> Entry {
        Entry(
            path: RawPath.string(path), change: change, kind: "\(entry.kind)", size: entry.size, differences: differences,
            owner: owner, pathBytes: path)
    }
}

/// The walk over two trees at once, folder by folder, depth first. The folders on the way down are
/// a list, not calls: a tree may be as deep as `PathLimit` lets it.
private struct Walk {
    let a: DiffSide
    let b: DiffSide
    let oldOwners: [String: String]
    let newOwners: [String: String]
    let comparer: ContentComparer
    var entries: [TreeDiff.Entry] = []

    /// Where the walk is in a folder: in folder `x` of A and `y` of B at once, at their children
    /// `i` and `j`; or in a folder of one side only (B's, when `added`), whose every entry is new
    /// or gone, at child `next`.
    private enum Level {
        case both(x: Int, y: Int, path: [UInt8], i: Int, j: Int)
        case one(added: Bool, folder: Int, path: [UInt8], next: Int)
    }

    /// Compares the contents of folder `x` of A with folder `y` of B, both at `path`.
    mutating func folder(_ x: Int, _ y: Int, path: [UInt8]) throws {
        var levels: [Level] = [start(x, y, path: path)]
        // A level goes back on the list one step further on, then the folder it steps into (if
        // any) on top of it: each entry comes before what it holds, as in a walk by calls.
        while let level = levels.popLast() {
            switch level {
            case .one(let added, let folder, let path, let next):
                let side = added ? b : a
                guard next < side.tree.entries[folder].children.upperBound else { continue }
                levels.append(.one(added: added, folder: folder, path: path, next: next + 1))
                levels.append(only(added: added, next, path: path + [0x2F] + side.tree.entries[next].name))
            case .both(let x, let y, let path, let i, let j):
                let left = a.tree.entries[x].children
                let right = b.tree.entries[y].children
                guard i < left.upperBound || j < right.upperBound else { continue }
                let order: Int
                if i == left.upperBound {
                    order = 1
                } else if j == right.upperBound {
                    order = -1
                } else {
                    let p = a.tree.entries[i].name
                    let q = b.tree.entries[j].name
                    order = p == q ? 0 : p.lexicographicallyPrecedes(q) ? -1 : 1
                }
                if order < 0 {
                    levels.append(.both(x: x, y: y, path: path, i: i + 1, j: j))
                    levels.append(only(added: false, i, path: path + [0x2F] + a.tree.entries[i].name))
                } else if order > 0 {
                    levels.append(.both(x: x, y: y, path: path, i: i, j: j + 1))
                    levels.append(only(added: true, j, path: path + [0x2F] + b.tree.entries[j].name))
                } else {
                    levels.append(.both(x: x, y: y, path: path, i: i + 1, j: j + 1))
                    let child = path + [0x2F] + a.tree.entries[i].name
                    let differences = try comparer.differences(i, j)
                    let text = RawPath.string(child)
                    if !differences.isEmpty {
                        let owner = newOwners[text] ?? oldOwners[text]
                        entries.append(TreeDiff.entry(child, .modified, b.tree.entries[j], differences, owner: owner))
                    }
                    if a.tree.entries[i].kind == .directory && b.tree.entries[j].kind == .directory {
                        levels.append(start(i, j, path: child))
                    } else if differences.contains("type") {
                        // One side's folder became something else: what was in it is gone (first),
                        // or new.
                        if b.tree.entries[j].kind == .directory { levels.append(start(added: true, j, path: child)) }
                        if a.tree.entries[i].kind == .directory { levels.append(start(added: false, i, path: child)) }
                    }
                }
            }
        }
    }

    /// Records an entry on one side only (B's, when `added`), and returns the level that goes
    /// through what it holds.
    private mutating func only(added: Bool, _ index: Int, path: [UInt8]) -> Level {
        let side = added ? b : a
        let text = RawPath.string(path)
        let owner = (added ? newOwners : oldOwners)[text]
        entries.append(TreeDiff.entry(path, added ? .added : .removed, side.tree.entries[index], [], owner: owner))
        return start(added: added, index, path: path)
    }

    /// The start of folder `x` of A and `y` of B, at `path`.
    private func start(_ x: Int, _ y: Int, path: [UInt8]) -> Level {
        let (i, j) = (a.tree.entries[x].children.lowerBound, b.tree.entries[y].children.lowerBound)
        return .both(x: x, y: y, path: path, i: i, j: j)
    }

    /// The start of `folder` of one side (B, when `added`), at `path`.
    private func start(added: Bool, _ folder: Int, path: [UInt8]) -> Level {
        .one(added: added, folder: folder, path: path, next: (added ? b : a).tree.entries[folder].children.lowerBound)
    }
}

/// Decides what differs between two entries at one path, reading file data only when the metadata
/// leaves the question open, and then as cheaply as the sides allow.
private struct ContentComparer {
    let a: DiffSide
    let b: DiffSide

    func differences(_ x: Int, _ y: Int) throws -> [String] {
        try TreeDiff.differences(a.tree.entries[x], b.tree.entries[y]) { try sameContent(x, y) }
    }

    /// Equal-sized files: the same file (of a layer, or a folder) is the same content; two images that
    /// store a file alike hold the same content; otherwise the sha256 of both decides.
    private func sameContent(_ x: Int, _ y: Int) throws -> Bool {
        let ix = a.tree.entries[x].hardLinkTarget ?? x
        let iy = b.tree.entries[y].hardLinkTarget ?? y
        let left = a.tree.entries[ix]
        let right = b.tree.entries[iy]
        if left.size == 0 { return true }
        // Layer trees never change, and a folder compared with itself is one file: the same source
        // is the same content.
        if a.image == nil, b.image == nil, !left.source.isEmpty, left.source == right.source {
            return true
        }
        if let imageA = a.image, let imageB = b.image, try imageA.sameStoredData(ix, as: iy, in: imageB) {
            return true
        }
        return try a.digest(ix) == b.digest(iy)
    }
}
