import Alpm
import Foundation
import Glibc
import LayerDiff
import LayerEntries
import LayerSupport

/// What a boot changed: the overlay's upper directory (the tmpfs) read against the image below it.
/// It is what the next boot forgets, and where turning changes back into layer files starts.
public struct BootChanges: Codable, Sendable, Equatable {
    public enum Change: String, Codable, Sendable { case added, modified, deleted }

    public struct File: Codable, Sendable, Equatable {
        public var path: String
        public var change: Change
        public var kind: String
        /// Bytes of file data now (added, modified) or before (deleted).
        public var size: UInt64
        /// For a modified entry, what differs: type, content, size, mode, owner, target, device, xattrs.
        public var differences: [String]
        /// The package whose file list holds the path (now, or before for a deleted entry), or nil.
        public var owner: String?
        /// The path's bytes (`RawPath.display` shows them): `path` holds U+FFFD for each byte that
        /// is not UTF-8. In the JSON as `pathBase64`, only then.
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

    public var files: [File]
    public var packages: [PackageChange]
    /// Bytes of file data the upper directory holds.
    public var upperBytes: UInt64
    /// The account files before and now, which the draft turns into commands (not in `--json`).
    public var accountsBefore = AccountFiles()
    public var accountsNow = AccountFiles()

    enum CodingKeys: String, CodingKey { case files, packages, upperBytes }

    /// Compares `upper` (an overlayfs upper directory) with `lower` (what it lies on): the merge of
    /// the two against `lower` alone, folder by folder, only where `upper` has something.
    public static func compute(upper: String, lower: String) throws -> BootChanges {
        let lowerSource = try FolderSource(lower, opaqueDirectories: [])
        let merge = OverlayMerge([lowerSource, try FolderSource(upper)])
        var walk = Walk(merge: merge, lower: lowerSource)
        let roots = try merge.rootCopies()
        do {
            try walk.folder(roots, below: roots.last { $0.layer == 0 }?.entry, path: [])
        } catch var tooLong as PathTooLong {
            tooLong.reading = "read \(upper)"
            throw tooLong
        }
        let before = OverlayPaths(OverlayMerge([lowerSource]))
        let now = OverlayPaths(merge)
        let databaseBefore = try PackageDatabase(list: before.list, read: before.read, files: true)
        let databaseNow = try PackageDatabase(list: now.list, read: now.read, files: true)
        let (ownersBefore, ownersNow) = (databaseBefore.owners(), databaseNow.owners())
        var files = walk.files.sorted { Array($0.path.utf8).lexicographicallyPrecedes(Array($1.path.utf8)) }
        for index in files.indices {
            files[index].owner =
                files[index].change == .deleted ? ownersBefore[files[index].path] : ownersNow[files[index].path]
        }
        var changes = BootChanges(
            files: files, packages: PackageChange.between(databaseBefore, databaseNow), upperBytes: walk.upperBytes)
        changes.accountsBefore = try AccountFiles(read: before.read)
        changes.accountsNow = try AccountFiles(read: now.read)
        return changes
    }
}

/// The walk over the merge of upper on lower, into the folders the upper directory holds.
private struct Walk {
    let merge: OverlayMerge
    let lower: FolderSource
    var files: [BootChanges.File] = []
    var upperBytes: UInt64 = 0

    /// Compares the merged folder whose visible copies are `copies` with `below`, lower's folder at
    /// the same path (nil when lower has none there), and the folders in it. The folders still to
    /// compare are a list, not calls (`compute` sorts what is found), and `PathLimit` bounds how
    /// deep they go.
    mutating func folder(_ copies: [OverlayMerge.Copy], below: SourceEntry?, path: [UInt8]) throws {
        var pending = [(copies: copies, below: below, path: path)]
        while let next = pending.popLast() {
            try compare(next.copies, below: next.below, path: next.path) { pending.append(($0, $1, $2)) }
        }
    }

    /// Compares one merged folder with `below`, in byte order of the names, and hands each folder in
    /// it that upper holds to `inside`.
    private mutating func compare(
        _ copies: [OverlayMerge.Copy], below: SourceEntry?, path: [UInt8],
        inside: ([OverlayMerge.Copy], SourceEntry?, [UInt8]) -> Void
    ) throws {
        let visible = try merge.names(in: copies)
        let before = try below.map { try lower.children(of: $0).filter { !$0.isWhiteout } } ?? []
        var i = 0
        var j = 0
        while i < visible.count || j < before.count {
            let name: [UInt8]
            if i == visible.count {
                name = before[j].entry.name
            } else if j == before.count {
                name = visible[i].entry.name
            } else {
                let p = visible[i].entry.name
                let q = before[j].entry.name
                name = p.lexicographicallyPrecedes(q) ? p : q
            }
            try PathLimit.check(path.count, adding: name, to: path)
            let child = path + [0x2F] + name
            let now = i < visible.count && visible[i].entry.name == name ? visible[i] : nil
            let old = j < before.count && before[j].entry.name == name ? before[j] : nil
            if now != nil { i += 1 }
            if old != nil { j += 1 }
            guard let now else {
                // Hidden by a whiteout or an opaque folder: gone.
                if let old { files.append(file(child, .deleted, old.entry)) }
                continue
            }
            // A name lower shows, unchanged, holds nothing of upper's.
            guard now.winner.layer == 1 else { continue }
            let winner = now.entry
            if winner.kind == .regular { upperBytes += winner.size }
            if let old {
                let differences = try TreeDiff.differences(old.entry, winner) {
                    try Digest.sha256(file: winner.source) == Digest.sha256(file: old.entry.source)
                }
                if !differences.isEmpty {
                    var entry = file(child, .modified, winner)
                    entry.differences = differences
                    files.append(entry)
                }
            } else {
                files.append(file(child, .added, winner))
            }
            if winner.kind == .directory {
                inside(OverlayMerge.visibleFolders(now), old?.entry.kind == .directory ? old : nil, child)
            } else if let old, old.entry.kind == .directory {
                // A folder became something else: what was in it is gone, as `diff` says it.
                for gone in try lower.children(of: old) where !gone.isWhiteout {
                    files.append(file(child + [0x2F] + gone.entry.name, .deleted, gone.entry))
                }
            }
        }
    }

    /// The line for `entry`; a deleted folder counts the bytes of everything that was in it.
    func file(_ path: [UInt8], _ change: BootChanges.Change, _ entry: MergedTree.Entry) -> BootChanges.File {
        var size = entry.size
        if change == .deleted && entry.kind == .directory { size = UInt64(FileSystem.treeSize(entry.source)) }
        return BootChanges.File(
            path: RawPath.string(path), change: change, kind: "\(entry.kind)", size: size, differences: [], owner: nil,
            pathBytes: path)
    }
}
