import CLayerSupport
import Foundation
import Glibc
import LayerEntries
import LayerSupport

/// A folder that a `files:` entry copies into a layer (`source: files/skel`), read on the host as
/// a stranger's layer file may name it: its folders, regular files and symlinks, no link ever
/// followed (every entry is opened beneath the folder, `openat2` with `RESOLVE_IN_ROOT`, and a
/// file with `O_NOFOLLOW`); a FIFO, a socket or a device node is refused, and so is a tree of
/// more entries or bytes than a build reads from a layer file's folder.
struct SourceTree: Equatable {
    enum Kind: Equatable {
        case folder
        /// The bytes, and whether any executable bit is set: the file is made 0755, else 0644.
        case file(Data, executable: Bool)
        case link(String)
    }

    struct Entry: Equatable {
        /// Relative to the source folder: `a/b`.
        var path: String
        var kind: Kind
    }

    /// Below the folder, parents before what they hold, in byte order of their paths.
    var entries: [Entry] = []

    /// At most this many entries: a tree is read into the build's job, and its key.
    static let entryLimit = 10_000
    /// The files' bytes together, as for one `source:` file.
    static let byteLimit = ReadLimit.fileSource

    /// Why a tree cannot be copied, in words that follow "`source` NAME ".
    struct Refused: Error, CustomStringConvertible {
        let description: String
    }

    /// Reads the tree of the folder at `root` (a real path), to be copied to `place` in a layer,
    /// whose paths end at `PathLimit.bytes`.
    static func read(_ root: String, to place: String) throws -> SourceTree {
        let rootFD = try sys("open", root) { open(root, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC) }
        defer { close(rootFD) }
        var tree = SourceTree()
        var bytes: Int64 = 0
        var folders = [""]
        while let folder = folders.popLast() {
            let dirFD = lc_open_in_root(rootFD, folder.isEmpty ? "/" : "/" + folder, O_RDONLY | O_DIRECTORY | O_NOFOLLOW, 0)
            guard dirFD >= 0 else { throw SystemError("open directory", root + "/" + folder) }
            defer { close(dirFD) }
            var below: [String] = []
            for raw in try FileSystem.listDirectory(opened: dirFD, path: root + "/" + folder) {
                guard let name = String(validating: raw, as: UTF8.self) else {
                    throw Refused(description: "holds a name that is not UTF-8 in \(quoted(folder))")
                }
                let path = folder.isEmpty ? name : folder + "/" + name
                let length = place.utf8.count + 1 + path.utf8.count
                guard length <= PathLimit.bytes else {
                    throw Refused(
                        description: "holds \(quoted(path)), which at \(clip(place, to: 40)) is a path of \(length) bytes, "
                            + "longer than a path in a layer may be (\(PathLimit.bytes))")
                }
                guard tree.entries.count < entryLimit else {
                    throw Refused(description: "holds more than \(entryLimit) entries (a larger tree belongs in a package)")
                }
                var st = stat()
                try sys("read", root + "/" + path) { fstatat(dirFD, name, &st, AT_SYMLINK_NOFOLLOW) }
                switch st.st_mode & S_IFMT {
                case S_IFDIR:
                    tree.entries.append(Entry(path: path, kind: .folder))
                    below.append(path)
                case S_IFREG:
                    bytes += Int64(st.st_size)
                    guard bytes <= byteLimit else { throw tooLarge() }
                    let fd = try sys("open", root + "/" + path) {
                        openat(dirFD, name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY | O_CLOEXEC)
                    }
                    let data: Data
                    do { data = try FileSystem.readRegularFile(opened: fd, path: root + "/" + path, atMost: byteLimit) } catch is FileTooLarge {
                        throw tooLarge()
                    }
                    bytes += Int64(data.count) - Int64(st.st_size)  // it changed since
                    guard bytes <= byteLimit else { throw tooLarge() }
                    tree.entries.append(Entry(path: path, kind: .file(data, executable: st.st_mode & 0o111 != 0)))
                case S_IFLNK:
                    let target = try FileSystem.readLink(at: dirFD, raw, path: Array((root + "/" + path).utf8))
                    guard let text = String(validating: target, as: UTF8.self) else {
                        throw Refused(description: "holds a link whose target is not UTF-8: \(quoted(path))")
                    }
                    tree.entries.append(Entry(path: path, kind: .link(text)))
                default:
                    throw Refused(
                        description: "holds \(FileSystem.special(st.st_mode) ?? "something") at \(quoted(path)); "
                            + "a folder source holds folders, files and links")
                }
            }
            // Depth first, each folder's entries in byte order: popLast takes the first name next.
            folders += below.reversed()
        }
        tree.entries.sort { $0.path.utf8.lexicographicallyPrecedes($1.path.utf8) }
        return tree
    }

    /// sha256 of every entry's path, kind, bits and bytes (or target), in order: what the key holds.
    var digest: String {
        var canonical = Data("layerctl source tree 1\n".utf8)
        for entry in entries {
            switch entry.kind {
            case .folder: canonical += Data("d \(entry.path)\0".utf8)
            case .file(let data, let executable):
                canonical += Data("f \(executable ? "x" : "-") \(entry.path)\0\(Digest.sha256(data))\0".utf8)
            case .link(let target): canonical += Data("l \(entry.path)\0\(target)\0".utf8)
            }
        }
        return Digest.sha256(canonical)
    }

    private static func tooLarge() -> Refused {
        Refused(description: "holds more than \(formatBytes(byteLimit)) of files (a larger tree belongs in a package)")
    }

    private static func quoted(_ path: String) -> String { "`\(clip(path.isEmpty ? "." : path, to: 60))`" }
}
