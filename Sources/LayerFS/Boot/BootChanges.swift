import Alpm
import Foundation
import Glibc

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
    }

    public var files: [File]
    public var packages: [PackageChange]
    /// Bytes of file data the upper directory holds.
    public var upperBytes: UInt64

    /// Compares `upper` (an overlayfs upper directory) with `lower` (what it lies on).
    public static func compute(upper: String, lower: String) throws -> BootChanges {
        var walk = Walk(upper: Array(upper.utf8), lower: Array(lower.utf8))
        try walk.visit([])
        let before = try PackageDatabase(
            list: { overlayList([lower], $0) }, read: { overlayRead([lower], $0) }, files: true)
        let now = try PackageDatabase(
            list: { overlayList([upper, lower], $0) }, read: { overlayRead([upper, lower], $0) }, files: true)
        let (ownersBefore, ownersNow) = (before.owners(), now.owners())
        var files = walk.files.sorted { Array($0.path.utf8).lexicographicallyPrecedes(Array($1.path.utf8)) }
        for index in files.indices {
            files[index].owner =
                files[index].change == .deleted ? ownersBefore[files[index].path] : ownersNow[files[index].path]
        }
        return BootChanges(files: files, packages: PackageChange.between(before, now), upperBytes: walk.upperBytes)
    }

    /// The names in `path` in the overlay of `layers` (top first): whiteouts hide lower names, and
    /// an opaque directory hides all of them.
    static func overlayList(_ layers: [String], _ path: String) -> [String]? {
        var names = Set<String>()
        var hidden = Set<String>()
        var found = false
        for layer in layers {
            let directory = layer + path
            guard let list = try? FileSystem.listDirectory(directory) else { continue }
            found = true
            for name in list where !hidden.contains(name) {
                hidden.insert(name)
                var st = stat()
                if lstat(directory + "/" + name, &st) == 0 && st.st_mode & S_IFMT == S_IFCHR && st.st_rdev == 0 {
                    continue
                }
                names.insert(name)
            }
            if ExtendedAttributes.value(directory, "trusted.overlay.opaque") == Array("y".utf8) { break }
        }
        return found ? names.sorted() : nil
    }

    /// The bytes of the file at `path` in the overlay of `layers`, or nil.
    static func overlayRead(_ layers: [String], _ path: String) -> [UInt8]? {
        for layer in layers {
            var st = stat()
            guard lstat(layer + path, &st) == 0 else { continue }
            guard st.st_mode & S_IFMT == S_IFREG else { return nil }
            return FileSystem.contents(layer + path)
        }
        return nil
    }
}

/// The walk over the upper directory, with raw byte paths.
private struct Walk {
    let upper: [UInt8]
    let lower: [UInt8]
    var files: [BootChanges.File] = []
    var upperBytes: UInt64 = 0

    static let opaque = "trusted.overlay.opaque"

    mutating func visit(_ relative: [UInt8]) throws {
        let upperPath = upper + relative
        for name in try FileSystem.listDirectory(upperPath.isEmpty ? Array("/".utf8) : upperPath) {
            let path = relative + [0x2F] + name
            var now = stat()
            guard RawPath.with(upper + path, { lstat($0, &now) }) == 0 else {
                throw SystemError("inspect", RawPath.string(upper + path))
            }
            var before = stat()
            let existed = RawPath.with(lower + path, { lstat($0, &before) }) == 0
            let text = RawPath.string(path)
            if now.st_mode & S_IFMT == S_IFCHR && now.st_rdev == 0 {
                // A whiteout: the name is gone, if it was there at all.
                if existed { files.append(file(text, .deleted, before, lowerPath: lower + path)) }
                continue
            }
            if now.st_mode & S_IFMT == S_IFREG { upperBytes += UInt64(now.st_size) }
            if !existed {
                files.append(file(text, .added, now, lowerPath: nil))
            } else {
                let differences = try compare(now, before, path)
                if !differences.isEmpty {
                    var entry = file(text, .modified, now, lowerPath: nil)
                    entry.differences = differences
                    files.append(entry)
                }
            }
            guard now.st_mode & S_IFMT == S_IFDIR else { continue }
            if existed && before.st_mode & S_IFMT == S_IFDIR && isOpaque(upper + path) {
                // An opaque directory hides everything the image had in it.
                let kept = Set(try FileSystem.listDirectory(upper + path))
                for name in try FileSystem.listDirectory(lower + path) where !kept.contains(name) {
                    var old = stat()
                    let hidden = path + [0x2F] + name
                    if RawPath.with(lower + hidden, { lstat($0, &old) }) == 0 {
                        files.append(file(RawPath.string(hidden), .deleted, old, lowerPath: lower + hidden))
                    }
                }
            }
            try visit(path)
        }
    }

    func isOpaque(_ path: [UInt8]) -> Bool {
        RawPath.with(path) { ExtendedAttributes.value($0, Self.opaque) } == Array("y".utf8)
    }

    func file(_ path: String, _ change: BootChanges.Change, _ st: stat, lowerPath: [UInt8]?) -> BootChanges.File {
        let kind = MergedTree.Kind(mode: st.st_mode).map { "\($0)" } ?? "unknown"
        var size = st.st_mode & S_IFMT == S_IFREG ? UInt64(st.st_size) : 0
        if let lowerPath, st.st_mode & S_IFMT == S_IFDIR { size = UInt64(FileSystem.treeSize(lowerPath)) }
        return BootChanges.File(path: path, change: change, kind: kind, size: size, differences: [], owner: nil)
    }

    /// What differs between an entry of the upper directory and the one it covers, as `diff` says it.
    func compare(_ now: stat, _ before: stat, _ path: [UInt8]) throws -> [String] {
        let upperEntry = try MergedTree.Entry.read(upper + path, now, epoch: Int64.max)
        let lowerEntry = try MergedTree.Entry.read(lower + path, before, epoch: Int64.max)
        return try TreeDiff.differences(lowerEntry, upperEntry) {
            try Digest.sha256(file: upper + path) == Digest.sha256(file: lower + path)
        }
    }
}
