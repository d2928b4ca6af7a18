import Foundation
import Glibc
import LayerEntries
import LayerStore
import LayerSupport
import SquashfsImage

/// One side of `layerctl diff`: a layer (the merged stack up to it), a squashfs image, a folder, or
/// the running system (`/`), all read into the same `MergedTree` model.
public final class DiffSide {
    public enum Origin: Sendable, Equatable {
        case layer(key: String)
        case image
        case directory
    }

    /// The operand as the user wrote it.
    public let operand: String
    public let origin: Origin
    public let tree: MergedTree
    /// Regular files' data, for images; layers and folders are read from their files' `source`.
    let image: ImageTree?
    init(operand: String, origin: Origin, tree: MergedTree, image: ImageTree?) {
        self.operand = operand
        self.origin = origin
        self.tree = tree
        self.image = image
    }

    /// Reads `operand`: `/` or an existing folder, an existing file (a squashfs image), or else a
    /// layer name, key or unique key prefix in `store`.
    public static func open(_ operand: String, store: () throws -> Store) throws -> DiffSide {
        var st = stat()
        if operand == "/" || (stat(operand, &st) == 0 && st.st_mode & S_IFMT == S_IFDIR) {
            // One folder is a stack of one tree with nothing opaque; `/` stays on its own filesystem.
            let merge = OverlayMerge([try FolderSource(operand, opaqueDirectories: [], oneFilesystem: true)])
            return DiffSide(operand: operand, origin: .directory, tree: try merge.merge(), image: nil)
        }
        if stat(operand, &st) == 0 {
            let image: ImageTree
            do { image = try ImageTree(image: operand) } catch let error as RefusedInput {
                throw error
            } catch where errorCode(of: error) != .input {
                // A damaged image, or the system's failure: the reader's line names the image and
                // says what is wrong, as `stage` and `vm` say it.
                throw error
            } catch {
                throw DiffError(
                    "\(operand) is neither a folder nor a squashfs image this reader can read (\(error))",
                    code: errorCode(of: error))
            }
            return DiffSide(operand: operand, origin: .image, tree: image.tree, image: image)
        }
        if operand.contains("/") {
            throw DiffError("\(operand): no such file or folder")
        }
        // A layer is its stack's manifests, which hold every file's digest: two layers compare
        // without a file of either being read, but for their package databases.
        let store = try store()
        let lock = try store.lock(.shared)
        defer { lock.unlock() }
        let key = try store.resolve(operand)
        let keys = try store.chain(key)
        let sources = try keys.map { key in
            ManifestSource(try store.manifest(key, record: try store.record(key)), tree: store.tree(key))
        }
        return DiffSide(
            operand: operand, origin: .layer(key: key), tree: try OverlayMerge(sources).merge(), image: nil)
    }

    func lookup(_ path: String) -> Int? { tree.entry(at: path) }

    /// The names in the folder at `path`, or nil.
    func list(_ path: String) -> [String]? { tree.names(in: path) }

    /// The bytes of the regular file at `path`, or nil: what `PackageDatabase` reads. A file
    /// larger than such a file may be (`ReadLimit.packageDatabaseFile`) is refused unread.
    func read(_ path: String) throws -> [UInt8]? {
        guard let index = lookup(path) else { return nil }
        let target = tree.entries[index].hardLinkTarget ?? index
        guard tree.entries[target].kind == .regular else { return nil }
        try FileTooLarge.check(operand + ": " + path, size: tree.entries[target].size, limit: ReadLimit.packageDatabaseFile)
        if let image { return try image.contents(target) }
        guard let bytes = FileSystem.contents(RawPath.string(tree.entries[target].source)) else {
            throw SystemError("read", RawPath.string(tree.entries[target].source))
        }
        return bytes
    }

    /// sha256 of regular file `index`, in hex.
    func digest(_ index: Int) throws -> String {
        let target = tree.entries[index].hardLinkTarget ?? index
        if let content = tree.entries[target].content { return content.hex }
        if let image { return Digest.hex(try image.digest(target)) }
        return try Digest.sha256(file: tree.entries[target].source)
    }

    /// The package database this side holds, with each package's file list.
    public func packages(files: Bool = true) throws -> PackageDatabase {
        try PackageDatabase(list: { self.list($0) }, read: { try self.read($0) }, files: files)
    }
}

/// An operand of `diff` that is not a layer, a folder or an image, or an image that cannot be read.
public struct DiffError: LayerError {
    public let message: String
    public let code: ErrorCode
    public init(_ message: String, code: ErrorCode = .input) {
        self.message = message
        self.code = code
    }
}
