import CLayerSupport
import CSquashfs
import Glibc

/// Writes a `MergedTree` as a squashfs image with libsquashfs.
///
/// File data goes through libsquashfs's block processor, which compresses on `jobs` worker threads
/// while this thread reads the next files, packs tails into fragment blocks and drops duplicate
/// blocks and fragments. Inodes, directories and the id, fragment, export and xattr tables follow.
/// Everything is written in an order fixed by the tree alone, so the bytes do not depend on the
/// number of workers, inode numbers, readdir order or timing.
final class SquashfsWriter {
    let options: ImageOptions
    private let output: String
    let file: UnsafeMutablePointer<sqfs_file_t>
    let compressor: UnsafeMutablePointer<sqfs_compressor_t>
    let decompressor: UnsafeMutablePointer<sqfs_compressor_t>
    /// What the block processor compresses with: the compressor wrapped with `hooks`.
    let dataCompressor: UnsafeMutablePointer<sqfs_compressor_t>
    private let hooks: CompressionHooks
    private var cache: BlockCache? { hooks.cache }
    /// Why the block cache could not be used, when it could not (for instance, a store the user
    /// may read but not write). The image is the same without it, only slower to make.
    private(set) var cacheUnavailable: String?
    var superblock = sqfs_super_t()

    /// Opens `output` (truncating it) and prepares a compressor for `options`. With `cacheRoot`,
    /// data and fragment blocks go through a `BlockCache` there.
    init(output: String, options: ImageOptions, cacheRoot: String?) throws {
        self.options = options
        self.output = output
        var config = try options.configuration()
        var created: UnsafeMutablePointer<sqfs_compressor_t>?
        try sqfs("create the \(options.compressionName) compressor") { sqfs_compressor_create(&config, &created) }
        guard let compressor = created else { throw SquashfsError("create the compressor", SQFS_ERROR_ALLOC.rawValue) }
        config.flags |= UInt16(SQFS_COMP_FLAG_UNCOMPRESS.rawValue)
        var createdDecompressor: UnsafeMutablePointer<sqfs_compressor_t>?
        let status = sqfs_compressor_create(&config, &createdDecompressor)
        guard status == 0, let decompressor = createdDecompressor else {
            sqfs_destroy(compressor)
            throw SquashfsError("create the \(options.compressor.rawValue) decompressor", status)
        }
        var cache: BlockCache?
        var cacheUnavailable: String?
        if let cacheRoot {
            do {
                cache = try BlockCache(root: cacheRoot, options: options, compressor: compressor)
            } catch let error as SystemError where error.errno == EACCES || error.errno == EROFS || error.errno == EPERM
            {
                cacheUnavailable = "\(error)"
            } catch {
                sqfs_destroy(decompressor)
                sqfs_destroy(compressor)
                throw error
            }
        }
        let hooks = CompressionHooks(cache: cache)
        var table = hooks.hooks
        guard let dataCompressor = lc_hooked_compressor_create(compressor, &table) else {
            sqfs_destroy(decompressor)
            sqfs_destroy(compressor)
            throw SquashfsError("create the compression workers' compressor", SQFS_ERROR_ALLOC.rawValue)
        }
        guard let file = sqfs_open_file(output, UInt32(SQFS_FILE_OPEN_OVERWRITE.rawValue)) else {
            let error = SystemError("create image", output)
            sqfs_destroy(dataCompressor)
            sqfs_destroy(decompressor)
            sqfs_destroy(compressor)
            throw error
        }
        self.file = file
        self.compressor = compressor
        self.decompressor = decompressor
        self.dataCompressor = dataCompressor
        self.hooks = hooks
        self.cacheUnavailable = cacheUnavailable
    }

    deinit {
        sqfs_destroy(file)
        sqfs_destroy(dataCompressor)
        sqfs_destroy(decompressor)
        sqfs_destroy(compressor)
    }

    /// What the writer has done so far; `bytesIn` counts file data read, `bytesOut` the image size.
    public struct Progress: Sendable {
        public var bytesIn: UInt64
        public var bytesOut: UInt64
        /// Compressed bytes per uncompressed byte of the blocks the workers finished so far.
        public var ratio: Double?
    }

    /// Block-cache hits and misses of this image (both zero without a cache).
    var cacheStatistics: (hits: Int, misses: Int) {
        let counters = cache?.statistics ?? BlockCache.Counters()
        return (counters.hits, counters.misses)
    }

    var size: UInt64 { file.pointee.get_size(file) }

    /// The compression ratio of the data blocks finished so far.
    var compressionRatio: Double? { hooks.ratio }

    /// Lets later exports reuse the blocks this one compressed; call after `write` succeeded.
    func publishCache() throws { try cache?.publish() }

    /// Writes the whole image. Attributes squashfs cannot hold (`system.*`, such as POSIX ACLs) are
    /// left out and reported to `skippedAttribute` with the path that carried them.
    func write(_ tree: MergedTree, progress: (Progress) -> Void, skippedAttribute: (String, [UInt8]) -> Void) throws {
        let mtime = UInt32(clamping: max(tree.epoch, 0))
        try sqfs("start the superblock of \(output)") {
            sqfs_super_init(&superblock, Int(options.blockSize), mtime, options.compressor.id)
        }
        try sqfs("write the superblock of \(output)") { sqfs_super_write(&superblock, file) }
        let optionBytes = compressor.pointee.write_options(compressor, file)
        if optionBytes < 0 { throw SquashfsError("write compressor options to \(output)", optionBytes) }
        if optionBytes > 0 { superblock.flags |= UInt16(SQFS_FLAG_COMPRESSOR_OPTIONS.rawValue) }

        let inodes = UnsafeMutablePointer<UnsafeMutablePointer<sqfs_inode_generic_t>?>.allocate(
            capacity: tree.entries.count)
        inodes.initialize(repeating: nil, count: tree.entries.count)
        defer {
            for index in 0..<tree.entries.count { free(inodes[index]) }
            inodes.deallocate()
        }
        let fragments = try writeData(tree, into: inodes, progress: progress)
        defer { sqfsDestroy(fragments) }
        try writeMetadata(tree, inodes: inodes, fragments: fragments, skippedAttribute: skippedAttribute)
        progress(Progress(bytesIn: tree.dataBytes, bytesOut: size, ratio: hooks.ratio))
    }
}
