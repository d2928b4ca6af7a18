/// How much of one file layerctl reads into memory where a stranger chose the file: a layer's
/// tree (its `run:` steps, an image's tar), a layer file, its lock, a `files:` source. A sparse
/// file as large as the filesystem allows costs its maker no disk and no download (a tar or a git
/// pack of zeros is a few bytes), and read whole it would take the host's memory: layerctl's
/// process runs outside the build's memory limit.
package enum ReadLimit {
    /// One file of pacman's local database in a layer's tree (`desc`, `files`). A package of
    /// 100,000 files lists about 5 MB.
    package static let packageDatabaseFile: Int64 = 64 << 20
    /// A layer file, and a lock beside it.
    package static let layerFile: Int64 = 16 << 20
    /// One `files:` source, which also travels to the builder inside its job. A larger file is a
    /// package's to install.
    package static let fileSource: Int64 = 64 << 20
    /// A layer's `/etc/passwd` or `/etc/group`, where a `files:` entry's `owner` is looked up. One
    /// of 100,000 accounts is about 6 MB; a layer below (a stranger's image) may hold one of
    /// gigabytes that costs it nothing: read whole, 3 GiB took 80 s and 6 GiB of the build's memory.
    package static let accounts: Int64 = 64 << 20
    /// A repository's `mirrorlist:`. Arch's list of every mirror, none commented out, is about
    /// 60 KB.
    package static let mirrorlist: Int64 = 1 << 20
}

/// A file larger than its reader takes, refused before any of it is read.
package struct FileTooLarge: LayerError {
    package let path: String
    package let size: Int64
    package let limit: Int64

    package init(path: String, size: Int64, limit: Int64) {
        self.path = path
        self.size = size
        self.limit = limit
    }

    /// Throws when `size` is more than `limit`.
    package static func check(_ path: String, size: some BinaryInteger, limit: Int64) throws {
        guard Int64(size) <= limit else { throw FileTooLarge(path: path, size: Int64(size), limit: limit) }
    }

    package var code: ErrorCode { .input }
    package var message: String {
        "\(RawPath.printable(path)) is \(formatBytes(size)), more than the \(formatBytes(limit)) layerctl reads of such a file"
    }
}
