import CLayerSupport
import CSquashfs
import Glibc
import LayerEntries
import LayerSupport

/// Writes a `MergedTree` as a squashfs image.
///
/// File data is laid out by `DataLayout` and written by `jobs` worker threads that read, compress
/// or copy from the block cache, while this thread writes their output in order. Inodes,
/// directories and the id, fragment, export and xattr tables follow, through libsquashfs.
/// Everything is written in an order fixed by the tree alone, so the bytes do not depend on the
/// number of workers, inode numbers, readdir order, timing or what the cache holds.
package final class SquashfsWriter {
    let options: ImageOptions
    let output: String
    let fd: Int32
    let file: UnsafeMutablePointer<sqfs_file_t>
    let compressor: UnsafeMutablePointer<sqfs_compressor_t>
    let cache: BlockCache?
    let tally = DataTally()
    /// Why the block cache could not be used, when it could not (for instance, a store the user
    /// may read but not write). The image is the same without it, only slower to make.
    package private(set) var cacheUnavailable: String?
    var superblock = sqfs_super_t()

    /// Writes to `fd`, an empty file, which stays the caller's to close; `output` names it in
    /// messages. With `cacheRoot`, data and fragment blocks go through a `BlockCache` there.
    package init(
        fd: Int32, output: String, options: ImageOptions, cacheRoot: String?, cacheLimit: BlockCacheLimit = .default
    ) throws {
        self.options = options
        self.output = output
        self.fd = fd
        var config = try options.configuration()
        var created: UnsafeMutablePointer<sqfs_compressor_t>?
        try sqfs("create the \(options.compressionName) compressor") { sqfs_compressor_create(&config, &created) }
        guard let compressor = created else { throw SquashfsError("create the compressor", SQFS_ERROR_ALLOC.rawValue) }
        var cache: BlockCache?
        if let cacheRoot {
            do {
                cache = try BlockCache(root: cacheRoot, options: options, compressor: compressor, limit: cacheLimit)
            } catch let error as SystemError where error.errno == EACCES || error.errno == EROFS || error.errno == EPERM
            {
                cacheUnavailable = "\(error)"
            } catch {
                sqfs_destroy(compressor)
                throw error
            }
        }
        guard let file = lc_sqfs_fd_file(fd) else {
            sqfs_destroy(compressor)
            throw SquashfsError("start the image", SQFS_ERROR_ALLOC.rawValue)
        }
        self.file = file
        self.compressor = compressor
        self.cache = cache
    }

    /// Does ahead what a writer with a block cache and `options` would do first (the compressor's
    /// probe, about 30 ms at zstd:15), so that a writer made later in this process starts at once.
    /// For a command that has time to spare before its export, such as the download of a pull.
    package static func prepareBlockCache(_ options: ImageOptions) {
        BlockCache.prepare(options)
    }

    deinit {
        sqfs_destroy(file)
        sqfs_destroy(compressor)
    }

    /// `sqfs` for the writer's calls, which write the image: libsquashfs reports any failure of
    /// the file as an input/output error, and the file keeps the system's reason (a full disk).
    func written(_ operation: @autoclosure () -> String, _ call: () -> Int32) throws {
        let status = call()
        guard status != 0 else { return }
        throw SquashfsError(
            operation(), status, systemErrno: status == SQFS_ERROR_IO.rawValue ? lc_sqfs_fd_file_error(file) : 0)
    }

    /// What the writer has done so far; `bytesIn` counts file data read, `bytesOut` the image size.
    public struct Progress: Sendable {
        public var bytesIn: UInt64
        public var bytesOut: UInt64
        /// Compressed bytes per uncompressed byte of the blocks the workers finished so far.
        public var ratio: Double?
    }

    /// Index files of the block cache found damaged (and removed), as "PATH: WHY".
    package var cacheDamaged: [String] { cache?.damaged ?? [] }

    /// Earlier packs of the block cache this export opened.
    package var cachePacks: Int { cache?.openPacks ?? 0 }

    /// The blocks of this image copied from the block cache, those compressed (all of them
    /// without a cache, as when the store is read-only), and those of zeros, stored as nothing.
    package var cacheStatistics: (hits: Int, misses: Int, zeros: Int) { (tally.hits, tally.misses, tally.zeros) }

    package var size: UInt64 { file.pointee.get_size(file) }

    /// The compression ratio of the data blocks finished so far.
    var compressionRatio: Double? { tally.ratio }

    /// Lets later exports reuse the blocks this one compressed; call after `write` succeeded.
    package func publishCache() throws { try cache?.publish() }

    /// `publishCache` as work for another thread, which needs nothing else of the writer; nil
    /// without a cache.
    package var cachePublication: (@Sendable () throws -> Void)? {
        guard let cache else { return nil }
        return { try cache.publish() }
    }

    /// File data this writer read; what the block cache held by recipe or by a known digest it did
    /// not read.
    package var bytesRead: UInt64 { tally.bytesRead }

    /// Writes the whole image. Attributes squashfs cannot hold (`system.*`, such as POSIX ACLs) are
    /// left out and reported to `skippedAttribute` with the path that carried them. `knownBlocks`
    /// are digests of files' blocks taken by whoever last held their bytes: a block the cache holds
    /// under one is copied without reading its file.
    package func write(
        _ tree: MergedTree, knownBlocks: BlockDigests? = nil, progress: (Progress) -> Void,
        skippedAttribute: (String, [UInt8]) -> Void
    ) throws {
        // Before anything is written: a stack squashfs cannot hold fails at once.
        let (order, numbers) = Self.numberInodes(tree)
        let ids = try Self.numberIds(tree, order: order)
        let mtime = UInt32(clamping: max(tree.epoch, 0))
        try sqfs("start the superblock of \(output)") {
            sqfs_super_init(&superblock, Int(options.blockSize), mtime, options.compressor.id)
        }
        try written("write the superblock of \(output)") { sqfs_super_write(&superblock, file) }
        let optionBytes = compressor.pointee.write_options(compressor, file)
        if optionBytes < 0 { try written("write compressor options to \(output)") { optionBytes } }
        if optionBytes > 0 { superblock.flags |= UInt16(SQFS_FLAG_COMPRESSOR_OPTIONS.rawValue) }

        let inodes = UnsafeMutablePointer<UnsafeMutablePointer<sqfs_inode_generic_t>?>.allocate(
            capacity: tree.entries.count)
        inodes.initialize(repeating: nil, count: tree.entries.count)
        defer {
            for index in 0..<tree.entries.count { free(inodes[index]) }
            inodes.deallocate()
        }
        let fragments = try writeData(tree, knownBlocks: knownBlocks, into: inodes, progress: progress)
        defer { sqfsDestroy(fragments) }
        try writeMetadata(
            tree, order: order, numbers: numbers, ids: ids, inodes: inodes, fragments: fragments,
            skippedAttribute: skippedAttribute)
        progress(Progress(bytesIn: tree.dataBytes, bytesOut: size, ratio: tally.ratio))
    }
}
