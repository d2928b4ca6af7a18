import Crypto
import Foundation
import Glibc
import LayerSupport

/// Walks a layer tree in byte order and sums it up: entry count, bytes of file data, and a digest
/// over every name, type, mode, owner, mtime, device number, link target, xattr and content — so
/// two trees with equal digests are the same tree. The same walk records the tree's manifest, so
/// every file is read once.
package struct TreeScan {
    package private(set) var fileCount = 0
    package private(set) var bytes: Int64 = 0
    /// Directories marked opaque, relative to the tree ("/etc/foo"), in byte order; nil when one of
    /// their names is not UTF-8 and so cannot be written down as text.
    package private(set) var opaqueDirectories: [String]? = []
    package private(set) var manifest = LayerManifest(entries: [], opaque: [])
    private var hasher = SHA256()
    /// The first name met of each inode with more than one: its manifest slot, and for a regular
    /// file its index in `files`, whose digest the other names take without reading.
    private var hardLinks: [HardLink: (slot: Int, file: Int?)] = [:]
    /// Each entry's line of the digest, in walk order; a regular file's lacks its content digest
    /// (after its size, before its xattrs) until it has been read, on other threads, while the
    /// walk goes on.
    private var lines: [[UInt8]] = []
    private var files: [PendingFile] = []
    private var hashing: ContentHashing?
    /// The digests of the full blocks of the files the scan read, when `scan` was given a block
    /// size (files of `knownContent` are not read, and have none here).
    package private(set) var blocks: BlockDigests?

    private struct PendingFile {
        var line: Int
        /// Where in its line the content digest goes.
        var offset: Int
        var slot: Int
        /// The earlier file with the same inode, whose digest this one takes without reading.
        var sameAs: Int?
    }
    /// When given, the opaque directories, standing in for trusted.overlay.opaque (which only root
    /// may read).
    private var knownOpaque: Set<[UInt8]>?
    private var knownContent: [[UInt8]: Hash256] = [:]
    /// The digests `knownContent` gave, by file number.
    private var knownDigests: [Int: Hash256] = [:]
    private var settle: Settle?
    private var sockets = Sockets.kept
    private var deadline: Deadline?
    private var visits = 0
    /// The sockets removed, relative to the tree ("/run/x.sock"), in walk order.
    package private(set) var droppedSockets: [[UInt8]] = []

    /// What the scan does with a socket. tar, and so OCI, has no type for one, and nothing listens
    /// on a socket a build left, so a built layer holds none: it could not travel whole.
    package enum Sockets {
        case kept
        /// Removed, for a tree with nothing below it.
        case removed
        /// Made a whiteout, for an upper folder: a name the build left as a socket may hide a
        /// file of the layers below, which stays hidden.
        case whitedOut
    }

    /// What a caller may do to each entry as the walk meets it, before anything of it is recorded:
    /// change it on disk (its times, its attributes) and say so in `st` and `attributes`. A folder
    /// is met before its entries. The builder sets times and drops overlayfs's bookkeeping this
    /// way, in the walk that scans the tree instead of one of its own.
    package typealias Settle = (_ entry: Place, _ st: inout stat, _ attributes: inout [ExtendedAttribute]) throws -> Void

    /// Where an entry is: its name in an open folder (the walk's, valid while the call lasts), and
    /// its whole path, for messages and what has no call relative to a folder.
    package struct Place {
        package var folder: Int32
        package var name: [UInt8]
        package var path: [UInt8]
    }

    private struct HardLink: Hashable {
        var device: UInt64
        var inode: UInt64
    }

    /// `knownContent`: the sha256 of files whose bytes the caller has just hashed as it wrote them
    /// (by path, as the walk spells it), which are not read again. `sockets`: what becomes of a
    /// socket (`droppedSockets` lists those that went).
    package static func scan(
        _ root: String, opaqueDirectories: [String]? = nil, knownContent: [[UInt8]: Hash256] = [:],
        settle: Settle? = nil, sockets: Sockets = .kept, deadline: Deadline? = nil, blockSize: Int? = nil
    ) throws -> TreeScan {
        var scan = TreeScan()
        scan.knownContent = knownContent
        scan.settle = settle
        scan.sockets = sockets
        scan.knownOpaque = opaqueDirectories.map { Set($0.map { Array($0.utf8) }) }
        scan.manifest.entries.append(LayerManifest.placeholder)
        scan.deadline = deadline
        let hashing = ContentHashing(
            workers: min(4, max(1, ProcessInfo.processInfo.activeProcessorCount)), deadline: deadline, blockSize: blockSize)
        scan.hashing = hashing
        do {
            let path = Array(root.utf8)
            try scan.walk(from: Place(folder: AT_FDCWD, name: path, path: path))
        } catch {
            hashing.cancel()
            throw error
        }
        scan.hashing = nil
        scan.complete(with: try hashing.finish())
        scan.blocks = hashing.blocks
        for line in scan.lines { scan.hasher.update(data: line) }
        scan.lines = []
        return scan
    }

    /// Puts each regular file's digest into its line and manifest entry, in walk order.
    private mutating func complete(with digests: [Int: Hash256]) {
        for (index, file) in files.enumerated() {
            let number = file.sameAs ?? index
            let content = knownDigests[number] ?? digests[number]!
            manifest.entries[file.slot].content = content
            lines[file.line].insert(contentsOf: Array(content.hex.utf8), at: file.offset)
        }
        files = []
    }

    package var digest: String { Digest.hex(hasher.finalize()) }

    /// A folder the walk is in, with the slot of its first child and the next name to visit.
    private struct Level {
        /// Open while the walk is in it or fewer than `openLevels` below it.
        var folder: OpenFolder?
        let names: [[UInt8]]
        let device: dev_t
        let inode: ino_t
        let path: [UInt8]
        let relative: [UInt8]
        let first: Int
        var next = 0
    }

    /// How many folders on the way down stay open. Deeper than real trees go, and the soft limit of
    /// open files (1,024) leaves room for the rest; a folder further up is opened again from its
    /// child (`OpenFolder.parent`) when the walk comes back to it.
    private static let openLevels = 64

    /// Visits every entry in byte order, depth first, from the root at `place`. The folders on the
    /// way down are a list, not calls, and `PathLimit` bounds how long it gets.
    private mutating func walk(from root: Place) throws {
        var levels: [Level] = []
        if let level = try visit(root, relative: [], slot: 0) { levels.append(level) }
        while let level = levels.last {
            // The folder the walk is in is open: it was opened last, or opened again below.
            guard let folder = level.folder else { throw SystemError("walk", RawPath.string(level.path), errno: EBADF) }
            guard level.next < level.names.count else {
                levels.removeLast()
                if let parent = levels.last, parent.folder == nil {
                    levels[levels.count - 1].folder = try folder.parent(
                        expecting: parent.device, parent.inode, names: parent.names, path: parent.path)
                }
                continue
            }
            levels[levels.count - 1].next += 1
            let name = level.names[level.next]
            visits += 1
            if let deadline, visits % 1024 == 0 { try deadline.check("reading its tree") }
            try PathLimit.check(level.relative.count, adding: name, to: level.relative)
            let place = Place(folder: folder.descriptor, name: name, path: RawPath.join(level.path, name))
            if let child = try visit(place, relative: level.relative + [0x2F] + name, slot: level.first + level.next) {
                if levels.count >= Self.openLevels { levels[levels.count - Self.openLevels].folder = nil }
                levels.append(child)
            }
        }
    }

    /// Names are raw bytes, so names that are not UTF-8 are hashed as they are; for UTF-8 names the
    /// line is the same text as before. Fills manifest entry `slot`; a directory's children take
    /// the next free slots, one after another, before any of them is visited. Returns a folder,
    /// open, for the walk to go into.
    private mutating func visit(_ place: Place, relative: [UInt8], slot: Int) throws -> Level? {
        let path = place.path
        var st = stat()
        guard RawPath.with(place.name, { fstatat(place.folder, $0, &st, AT_SYMLINK_NOFOLLOW) }) == 0 else {
            throw SystemError("inspect", RawPath.string(path))
        }
        var attributes = try ExtendedAttributes.every(at: place.folder, place.name, path: path)
        try settle?(place, &st, &attributes)
        let linkTarget = (st.st_mode & S_IFMT) == S_IFLNK ? try FileSystem.readLink(at: place.folder, place.name, path: path) : []
        var entry = try MergedTree.Entry.read(
            path, st, epoch: Int64.max, xattrs: attributes.filter { !$0.name.starts(with: ExtendedAttributes.overlayPrefix) },
            linkTarget: linkTarget)
        entry.name = manifest.entries[slot].name
        entry.parent = manifest.entries[slot].parent
        entry.source = []
        var firstName: (slot: Int, file: Int?)?
        if (st.st_mode & S_IFMT) != S_IFDIR && st.st_nlink > 1 {
            let key = HardLink(device: UInt64(st.st_dev), inode: UInt64(st.st_ino))
            firstName = hardLinks[key]
            if let firstName {
                entry.hardLinkTarget = firstName.slot
            } else {
                hardLinks[key] = (slot, (st.st_mode & S_IFMT) == S_IFREG ? files.count : nil)
            }
        }
        var line: [UInt8] = relative.isEmpty ? Array("/".utf8) : relative
        line += Array("\0\(st.st_mode)\0\(st.st_uid):\(st.st_gid)\0\(st.st_mtim.tv_sec)\0".utf8)
        switch st.st_mode & S_IFMT {
        case S_IFREG:
            // The content digest goes in once the file has been read (`complete`).
            line += Array("\(st.st_size)\0".utf8)
            bytes += Int64(st.st_size)
            if firstName?.file == nil {
                if let known = knownContent[path] {
                    knownDigests[files.count] = known
                } else {
                    try hashing?.add(files.count, path, folder: place.folder, name: place.name, st: st)
                }
            }
            files.append(PendingFile(line: lines.count, offset: line.count, slot: slot, sameAs: firstName?.file))
        case S_IFLNK:
            line += entry.linkTarget
        case S_IFCHR, S_IFBLK:
            line += Array("\(st.st_rdev)".utf8)
        default:
            break
        }
        var opaque = false
        // In byte order of the names, which for UTF-8 names is String's order too.
        for attribute in attributes {
            line += [0] + attribute.name + Array("=".utf8) + Array(Digest.hex(attribute.value).utf8)
            if attribute.name == Array("trusted.overlay.opaque".utf8) && attribute.value == Array("y".utf8) { opaque = true }
        }
        if (st.st_mode & S_IFMT) == S_IFDIR, let knownOpaque { opaque = knownOpaque.contains(relative) }
        if opaque {
            if let text = String(validating: relative, as: UTF8.self) {
                opaqueDirectories?.append(text)
            } else {
                opaqueDirectories = nil
            }
            manifest.opaque.insert(slot)
        }
        line.append(0x0A)
        lines.append(line)
        if !relative.isEmpty { fileCount += 1 }
        guard (st.st_mode & S_IFMT) == S_IFDIR else {
            manifest.entries[slot] = entry
            return nil
        }
        let folder = try OpenFolder(at: place.folder, place.name, path: path)
        var names = folder.names
        if sockets != .kept { names = try withoutSockets(folder, path: path, relative: relative) }
        let first = manifest.entries.count
        entry.children = first..<(first + names.count)
        manifest.entries[slot] = entry
        for name in names {
            var child = LayerManifest.placeholder
            child.name = name
            child.parent = slot
            manifest.entries.append(child)
        }
        return Level(
            folder: folder, names: names, device: st.st_dev, inode: st.st_ino, path: path, relative: relative,
            first: first)
    }

    /// The names of `folder` but its sockets, which are removed (and made whiteouts, which keep
    /// their names): readdir's type says which, and fstatat where the filesystem does not say.
    private mutating func withoutSockets(_ folder: OpenFolder, path: [UInt8], relative: [UInt8]) throws -> [[UInt8]] {
        var kept: [[UInt8]] = []
        for (index, name) in folder.names.enumerated() {
            let type = index < folder.types.count ? folder.types[index] : UInt8(DT_UNKNOWN)
            var isSocket = type == DT_SOCK
            if type == DT_UNKNOWN {
                var st = stat()
                guard RawPath.with(name, { fstatat(folder.descriptor, $0, &st, AT_SYMLINK_NOFOLLOW) }) == 0 else {
                    throw SystemError("inspect", RawPath.string(RawPath.join(path, name)))
                }
                isSocket = (st.st_mode & S_IFMT) == S_IFSOCK
            }
            guard isSocket else {
                kept.append(name)
                continue
            }
            try RawPath.with(name) { at in
                try sys("remove", RawPath.string(RawPath.join(path, name))) { unlinkat(folder.descriptor, at, 0) }
                if sockets == .whitedOut {
                    try sys("make a whiteout at", RawPath.string(RawPath.join(path, name))) {
                        mknodat(folder.descriptor, at, S_IFCHR, 0)
                    }
                    kept.append(name)
                }
            }
            droppedSockets.append(relative + [0x2F] + name)
        }
        return kept
    }
}
