import CLayerSupport
import CSquashfs
import Crypto
import Glibc
import LayerEntries
import LayerSupport

/// A squashfs image read whole, with libsquashfs and without a mount, into the `MergedTree` model
/// a layer stack merges into, so that images and stacks compare alike. Regular files keep their
/// inode, for reading their data later.
public final class ImageTree {
    public let reader: SquashfsReader
    public let tree: MergedTree
    /// The inode of each regular file, by entry index.
    private var inodes: [Int: UnsafeMutablePointer<sqfs_inode_generic_t>]
    /// Where each fragment block is stored, as the walk read it.
    private let fragments: [sqfs_fragment_t]
    /// The image file mapped read-only, for comparing stored bytes without copying them.
    private var mapping: UnsafeRawBufferPointer?

    public init(image: String) throws {
        let reader = try SquashfsReader(image: image)
        self.reader = reader
        var walk = ImageWalk(reader: reader)
        defer { walk.close() }
        try walk.run()
        tree = MergedTree(entries: walk.entries, epoch: Int64.max)
        inodes = walk.inodes
        fragments = walk.fragments
        walk.inodes = [:]
    }

    deinit {
        for inode in inodes.values { sqfs_free(inode) }
        if let mapping, let base = mapping.baseAddress {
            munmap(UnsafeMutableRawPointer(mutating: base), mapping.count)
        }
    }

    /// The image's bytes, mapped on first use.
    private func mapped() throws -> UnsafeRawBufferPointer {
        if let mapping { return mapping }
        let fd = open(reader.image, O_RDONLY | O_CLOEXEC)
        if fd < 0 { throw SystemError("read", reader.image) }
        defer { close(fd) }
        var st = stat()
        fstat(fd, &st)
        let size = Int(st.st_size)
        guard size > 0, let base = mmap(nil, size, PROT_READ, MAP_SHARED, fd, 0), base != MAP_FAILED else {
            throw SystemError("map", reader.image)
        }
        let buffer = UnsafeRawBufferPointer(start: base, count: size)
        mapping = buffer
        return buffer
    }

    /// The data of regular file `index`.
    public func contents(_ index: Int) throws -> [UInt8] {
        var bytes: [UInt8] = []
        try read(index) { bytes.append(contentsOf: $0) }
        return bytes
    }

    /// sha256 of the data of regular file `index`.
    public func digest(_ index: Int) throws -> SHA256.Digest {
        var hasher = SHA256()
        try read(index) { hasher.update(bufferPointer: $0) }
        return hasher.finalize()
    }

    /// Calls `body` with the data of regular file `index`, a piece at a time.
    public func read(_ index: Int, _ body: (UnsafeRawBufferPointer) throws -> Void) throws {
        guard let inode = inodes[index] else {
            throw SquashfsError(
                "read entry \(index) of \(reader.image): not a regular file", SQFS_ERROR_NOT_FILE.rawValue)
        }
        try reader.readData(inode, path: RawPath.string(tree.path(of: index)), body)
    }

    /// Whether regular file `index` here and `other` in `image` are stored the same: the same
    /// compressor and block size, the same block sizes, the same compressed bytes, the same tail.
    /// Equal stored data is equal content; unequal stored data says nothing (another compressor
    /// may have written the same content), and then the caller compares contents.
    public func sameStoredData(_ index: Int, as other: Int, in image: ImageTree) throws -> Bool {
        guard let mine = inodes[index], let theirs = image.inodes[other] else { return false }
        let a = reader.superblock.pointee
        let b = image.reader.superblock.pointee
        guard a.compression_id == b.compression_id, a.block_size == b.block_size else { return false }
        let myBlocks = Self.blockSizes(mine)
        guard myBlocks == Self.blockSizes(theirs) else { return false }
        var sizeA: UInt64 = 0
        var sizeB: UInt64 = 0
        sqfs_inode_get_file_size(mine, &sizeA)
        sqfs_inode_get_file_size(theirs, &sizeB)
        guard sizeA == sizeB else { return false }
        var startA: UInt64 = 0
        var startB: UInt64 = 0
        sqfs_inode_get_file_block_start(mine, &startA)
        sqfs_inode_get_file_block_start(theirs, &startB)
        let stored = myBlocks.reduce(0) { $0 + Int($1 & 0x00FF_FFFF) }
        if stored > 0 {
            guard try equalStored(at: startA, image, at: startB, count: stored) else { return false }
        }
        // The tail, if any, is in a fragment block shared with other files. The same tail at the same
        // offset of two fragment blocks stored alike is the same; otherwise compare it uncompressed.
        let full = UInt64(myBlocks.count) * UInt64(a.block_size)
        guard full < sizeA else { return true }
        let tail = Int(sizeA - full)
        var fragmentA: (index: UInt32, offset: UInt32) = (0, 0)
        var fragmentB: (index: UInt32, offset: UInt32) = (0, 0)
        sqfs_inode_get_frag_location(mine, &fragmentA.index, &fragmentA.offset)
        sqfs_inode_get_frag_location(theirs, &fragmentB.index, &fragmentB.offset)
        if fragmentA.offset == fragmentB.offset, let blockA = try fragment(fragmentA.index),
            let blockB = try image.fragment(fragmentB.index), blockA.size == blockB.size
        {
            let stored = Int(blockA.size & 0x00FF_FFFF)
            if try equalStored(at: blockA.start_offset, image, at: blockB.start_offset, count: stored) {
                return true
            }
        }
        var left = [UInt8](repeating: 0, count: tail)
        var right = [UInt8](repeating: 0, count: tail)
        let readA = sqfs_data_reader_read(reader.data, mine, full, &left, UInt32(tail))
        let readB = sqfs_data_reader_read(image.reader.data, theirs, full, &right, UInt32(tail))
        // A short read is a tail the image does not hold: damaged as much as a failed one.
        for (read, path) in [(readA, reader.image), (readB, image.reader.image)] where read != Int32(tail) {
            throw SquashfsError("read a fragment of \(path)", read < 0 ? read : SQFS_ERROR_CORRUPTED.rawValue, reading: true)
        }
        return memcmp(left, right, tail) == 0
    }

    /// Where fragment block `index` is stored, or nil for the "no fragment" index.
    private func fragment(_ index: UInt32) throws -> sqfs_fragment_t? {
        guard index != 0xFFFF_FFFF else { return nil }
        guard Int(index) < fragments.count else {
            throw SquashfsError("read fragment \(index) of \(reader.image)", SQFS_ERROR_OUT_OF_BOUNDS.rawValue)
        }
        return fragments[Int(index)]
    }

    /// The sizes of a file's full data blocks as stored (bit 24 set: stored uncompressed; 0: sparse).
    private static func blockSizes(_ inode: UnsafeMutablePointer<sqfs_inode_generic_t>) -> [UInt32] {
        let count = Int(inode.pointee.payload_bytes_used) / 4
        let words = lc_sqfs_inode_payload(inode).assumingMemoryBound(to: UInt32.self)
        return Array(UnsafeBufferPointer(start: words, count: count))
    }

    /// Whether `count` stored bytes at `offset` here equal those at `other` in `image`.
    private func equalStored(at offset: UInt64, _ image: ImageTree, at other: UInt64, count: Int) throws -> Bool {
        let mine = try mapped()
        let theirs = try image.mapped()
        guard offset + UInt64(count) <= UInt64(mine.count), other + UInt64(count) <= UInt64(theirs.count),
            let a = mine.baseAddress, let b = theirs.baseAddress
        else {
            throw SquashfsError("compare the data of \(reader.image)", SQFS_ERROR_OUT_OF_BOUNDS.rawValue)
        }
        return memcmp(a + Int(offset), b + Int(other), count) == 0
    }
}
