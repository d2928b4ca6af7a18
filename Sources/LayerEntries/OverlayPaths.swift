import LayerSupport

/// Paths looked up in a merge without merging the whole tree: each folder on the way is merged once
/// and kept, so reading a package database (a folder of a thousand packages, two files each) costs
/// one merge of each folder.
public final class OverlayPaths {
    public let merge: OverlayMerge
    /// The visible names of each folder looked at, by path; nil for a path that is no visible folder.
    private var folders: [[UInt8]: [OverlayMerge.Name]?] = [:]

    public init(_ merge: OverlayMerge) { self.merge = merge }

    /// The visible names of the folder at `path` ("/var/lib/x"), each with its copies top first, or nil.
    public func names(at path: [UInt8]) throws -> [OverlayMerge.Name]? {
        let components = path.split(separator: 0x2F)
        let key = components.joined(separator: [0x2F]).map { $0 }
        if let known = folders[key] { return known }
        let result: [OverlayMerge.Name]?
        if let last = components.last {
            let parent = Array(components.dropLast().joined(separator: [0x2F]))
            if let name = try names(at: parent).flatMap({ Self.find(last, in: $0) }),
                case let copies = OverlayMerge.visibleFolders(name), !copies.isEmpty
            {
                result = try merge.names(in: copies)
            } else {
                result = nil
            }
        } else {
            result = try merge.names(in: merge.rootCopies())
        }
        folders[key] = result
        return result
    }

    /// The visible entry at `path` (not the root), or nil.
    public func entry(at path: [UInt8]) throws -> OverlayMerge.Copy? {
        let components = path.split(separator: 0x2F)
        guard let last = components.last else { return nil }
        return try names(at: Array(components.dropLast().joined(separator: [0x2F]))).flatMap {
            Self.find(last, in: $0)
        }?.winner
    }

    /// The copies of `name` among a folder's names, which are in byte order: a binary search.
    private static func find(_ name: ArraySlice<UInt8>, in names: [OverlayMerge.Name]) -> OverlayMerge.Name? {
        var low = 0
        var high = names.count
        while low < high {
            let middle = (low + high) / 2
            if names[middle].entry.name.lexicographicallyPrecedes(name) {
                low = middle + 1
            } else {
                high = middle
            }
        }
        return low < names.count && names[low].entry.name.elementsEqual(name) ? names[low] : nil
    }

    /// The names in the folder at `path`, or nil: what `PackageDatabase` lists.
    public func list(_ path: String) throws -> [String]? {
        try names(at: Array(path.utf8))?.map { RawPath.string($0.entry.name) }
    }

    /// The bytes of the regular file at `path`, or nil: what `PackageDatabase` reads. A file
    /// larger than such a file may be (`ReadLimit.packageDatabaseFile`) is refused unread.
    public func read(_ path: String) throws -> [UInt8]? {
        guard let copy = try entry(at: Array(path.utf8)), copy.entry.entry.kind == .regular else { return nil }
        try FileTooLarge.check(path, size: copy.entry.entry.size, limit: ReadLimit.packageDatabaseFile)
        guard let bytes = FileSystem.contents(RawPath.string(copy.entry.entry.source)) else {
            throw SystemError("read", RawPath.string(copy.entry.entry.source))
        }
        return bytes
    }
}
