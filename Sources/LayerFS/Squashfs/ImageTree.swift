import CLayerSupport
import CSquashfs
import Crypto
import Glibc

/// A squashfs image read whole, with libsquashfs and without a mount, into the `MergedTree` model
/// a layer stack merges into, so that images and stacks compare alike. Regular files keep their
/// inode, for reading their data later.
public final class ImageTree {
    public let reader: SquashfsReader
    public let tree: MergedTree
    /// The inode of each regular file, by entry index.
    private var inodes: [Int: UnsafeMutablePointer<sqfs_inode_generic_t>]

    public init(image: String) throws {
        let reader = try SquashfsReader(image: image)
        self.reader = reader
        var walk = ImageWalk(reader: reader)
        defer { walk.close() }
        try walk.run()
        tree = MergedTree(entries: walk.entries, trees: [image], epoch: Int64.max)
        inodes = walk.inodes
        walk.inodes = [:]
    }

    deinit {
        for inode in inodes.values { sqfs_free(inode) }
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
        var size: UInt64 = 0
        sqfs_inode_get_file_size(inode, &size)
        let chunk = Int(reader.superblock.pointee.block_size)
        let buffer = UnsafeMutableRawPointer.allocate(byteCount: chunk, alignment: 16)
        defer { buffer.deallocate() }
        var offset: UInt64 = 0
        while offset < size {
            let count = sqfs_data_reader_read(
                reader.data, inode, offset, buffer, UInt32(min(UInt64(chunk), size - offset)))
            if count < 0 {
                throw SquashfsError("read \(RawPath.string(tree.path(of: index))) in \(reader.image)", count)
            }
            if count == 0 { break }
            try body(UnsafeRawBufferPointer(start: buffer, count: Int(count)))
            offset += UInt64(count)
        }
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
            guard
                try Self.equalBytes(
                    reader.file, at: startA, image.reader.file, at: startB, count: stored, image: reader.image)
            else { return false }
        }
        // The tail, if any, is in a fragment block shared with other files: compare it uncompressed.
        let full = UInt64(myBlocks.count) * UInt64(a.block_size)
        guard full < sizeA else { return true }
        let tail = Int(sizeA - full)
        var left = [UInt8](repeating: 0, count: tail)
        var right = [UInt8](repeating: 0, count: tail)
        let readA = sqfs_data_reader_read(reader.data, mine, full, &left, UInt32(tail))
        let readB = sqfs_data_reader_read(image.reader.data, theirs, full, &right, UInt32(tail))
        guard readA == Int32(tail), readB == Int32(tail) else {
            throw SquashfsError("read a fragment of \(reader.image) or \(image.reader.image)", min(readA, readB))
        }
        return left == right
    }

    /// The sizes of a file's full data blocks as stored (bit 24 set: stored uncompressed; 0: sparse).
    private static func blockSizes(_ inode: UnsafeMutablePointer<sqfs_inode_generic_t>) -> [UInt32] {
        let count = Int(inode.pointee.payload_bytes_used) / 4
        let words = lc_sqfs_inode_payload(inode).assumingMemoryBound(to: UInt32.self)
        return Array(UnsafeBufferPointer(start: words, count: count))
    }

    private static func equalBytes(
        _ a: UnsafeMutablePointer<sqfs_file_t>, at offsetA: UInt64, _ b: UnsafeMutablePointer<sqfs_file_t>,
        at offsetB: UInt64, count: Int, image: String
    ) throws -> Bool {
        let chunk = 1 << 20
        var left = [UInt8](repeating: 0, count: chunk)
        var right = [UInt8](repeating: 0, count: chunk)
        var done = 0
        while done < count {
            let n = min(chunk, count - done)
            let statusA = left.withUnsafeMutableBytes {
                a.pointee.read_at(a, offsetA + UInt64(done), $0.baseAddress, n)
            }
            let statusB = right.withUnsafeMutableBytes {
                b.pointee.read_at(b, offsetB + UInt64(done), $0.baseAddress, n)
            }
            if statusA != 0 || statusB != 0 {
                throw SquashfsError("read the data blocks of \(image)", statusA != 0 ? statusA : statusB)
            }
            if left[0..<n] != right[0..<n] { return false }
            done += n
        }
        return true
    }
}

/// The walk over an image's directories, breadth first like the stack merge, so children are
/// contiguous and in the image's (byte) order.
private struct ImageWalk {
    let reader: SquashfsReader
    var entries: [MergedTree.Entry] = []
    var inodes: [Int: UnsafeMutablePointer<sqfs_inode_generic_t>] = [:]
    private var ids: OpaquePointer?
    private var xattrs: OpaquePointer?

    init(reader: SquashfsReader) { self.reader = reader }

    mutating func close() {
        sqfsDestroy(ids)
        sqfsDestroy(xattrs)
        for inode in inodes.values { sqfs_free(inode) }
        inodes = [:]
    }

    mutating func run() throws {
        let image = reader.image
        guard let table = sqfs_id_table_create(0) else { throw SquashfsError("read ids", SQFS_ERROR_ALLOC.rawValue) }
        ids = table
        try sqfs("read the id table of \(image)") {
            sqfs_id_table_read(table, reader.file, reader.superblock, reader.compressor)
        }
        if reader.superblock.pointee.flags & UInt16(SQFS_FLAG_NO_XATTRS.rawValue) == 0,
            reader.superblock.pointee.xattr_id_table_start != UInt64.max
        {
            guard let xr = sqfs_xattr_reader_create(0) else {
                throw SquashfsError("read xattrs", SQFS_ERROR_ALLOC.rawValue)
            }
            xattrs = xr
            try sqfs("read the xattr table of \(image)") {
                sqfs_xattr_reader_load(xr, reader.superblock, reader.file, reader.compressor)
            }
        }
        var root: UnsafeMutablePointer<sqfs_inode_generic_t>?
        try sqfs("read the root of \(image)") { sqfs_dir_reader_get_root_inode(reader.directories, &root) }
        guard let root else { throw SquashfsError("read the root of \(image)", SQFS_ERROR_INTERNAL.rawValue) }
        entries.append(try entry(name: [], parent: 0, inode: root))
        var queue: [(index: Int, inode: UnsafeMutablePointer<sqfs_inode_generic_t>)] = [(0, root)]
        var hardLinks: [UInt32: Int] = [:]
        var head = 0
        defer { for pending in queue[head...] { sqfs_free(pending.inode) } }
        while head < queue.count {
            let (directory, inode) = queue[head]
            head += 1
            defer { sqfs_free(inode) }
            let path = RawPath.string(tree.path(of: directory))
            try sqfs("list \(path) in \(image)") { sqfs_dir_reader_open_dir(reader.directories, inode, 0) }
            let first = entries.count
            while true {
                var dirent: UnsafeMutablePointer<sqfs_dir_entry_t>?
                let status = sqfs_dir_reader_read(reader.directories, &dirent)
                if status > 0 { break }
                guard status == 0, let dirent else { throw SquashfsError("list \(path) in \(image)", status) }
                defer { sqfs_free(dirent) }
                let name = Array(
                    UnsafeBufferPointer(start: lc_sqfs_dir_entry_name(dirent), count: Int(dirent.pointee.size) + 1))
                var child: UnsafeMutablePointer<sqfs_inode_generic_t>?
                try sqfs("read \(path) in \(image)") { sqfs_dir_reader_get_inode(reader.directories, &child) }
                guard let child else { throw SquashfsError("read \(path)", SQFS_ERROR_INTERNAL.rawValue) }
                var made = try entry(name: name, parent: directory, inode: child)
                let index = entries.count
                if made.kind == .directory {
                    queue.append((index, child))
                } else {
                    if made.linkCount > 1 {
                        let number = child.pointee.base.inode_number
                        if let target = hardLinks[number] {
                            made.hardLinkTarget = target
                        } else {
                            hardLinks[number] = index
                        }
                    }
                    if made.kind == .regular && made.hardLinkTarget == nil {
                        inodes[index] = child
                    } else {
                        sqfs_free(child)
                    }
                }
                entries.append(made)
            }
            entries[directory].children = first..<entries.count
        }
    }

    private var tree: MergedTree { MergedTree(entries: entries, trees: [], epoch: 0) }

    private func entry(name: [UInt8], parent: Int, inode: UnsafeMutablePointer<sqfs_inode_generic_t>) throws
        -> MergedTree.Entry
    {
        guard let kind = SquashfsReader.kind(of: inode) else {
            throw SquashfsError("read \(reader.image): an inode of unknown type", SQFS_ERROR_CORRUPTED.rawValue)
        }
        var uid: UInt32 = 0
        var gid: UInt32 = 0
        try sqfs("read the owner in \(reader.image)") {
            sqfs_id_table_index_to_id(ids, inode.pointee.base.uid_idx, &uid)
        }
        try sqfs("read the group in \(reader.image)") {
            sqfs_id_table_index_to_id(ids, inode.pointee.base.gid_idx, &gid)
        }
        var size: UInt64 = 0
        if kind == .regular { sqfs_inode_get_file_size(inode, &size) }
        let data = inode.pointee.data
        let type = UInt32(inode.pointee.base.type)
        var rdev: UInt64 = 0
        if kind == .characterDevice || kind == .blockDevice {
            let encoded =
                type == SQFS_INODE_EXT_BDEV.rawValue || type == SQFS_INODE_EXT_CDEV.rawValue
                ? data.dev_ext.devno : data.dev.devno
            rdev = Self.decodeDevice(encoded)
        }
        let links: UInt32
        switch type {
        case SQFS_INODE_EXT_FILE.rawValue: links = data.file_ext.nlink
        case SQFS_INODE_FILE.rawValue: links = 1
        case SQFS_INODE_DIR.rawValue: links = data.dir.nlink
        case SQFS_INODE_EXT_DIR.rawValue: links = data.dir_ext.nlink
        case SQFS_INODE_SLINK.rawValue: links = data.slink.nlink
        case SQFS_INODE_EXT_SLINK.rawValue: links = data.slink_ext.nlink
        case SQFS_INODE_BDEV.rawValue, SQFS_INODE_CDEV.rawValue: links = data.dev.nlink
        case SQFS_INODE_EXT_BDEV.rawValue, SQFS_INODE_EXT_CDEV.rawValue: links = data.dev_ext.nlink
        case SQFS_INODE_FIFO.rawValue, SQFS_INODE_SOCKET.rawValue: links = data.ipc.nlink
        default: links = data.ipc_ext.nlink
        }
        return MergedTree.Entry(
            name: name, parent: parent, kind: kind, permissions: inode.pointee.base.mode & 0o7777, uid: uid, gid: gid,
            mtime: Int64(inode.pointee.base.mod_time), size: size, rdev: rdev,
            linkTarget: kind == .symlink ? Array(SquashfsReader.linkTarget(inode).utf8) : [],
            xattrs: try attributes(inode), source: [], layer: 0, children: 0..<0, hardLinkTarget: nil,
            linkCount: kind == .directory ? 1 : Int(links))
    }

    /// The kernel's new_decode_dev, then glibc's makedev: what lstat's st_rdev says for the node.
    static func decodeDevice(_ encoded: UInt32) -> UInt64 {
        let major = UInt64((encoded & 0xfff00) >> 8)
        let minor = UInt64((encoded & 0xff) | ((encoded >> 12) & 0xfff00))
        return ((major & 0xffff_f000) << 32) | ((major & 0xfff) << 8) | ((minor & 0xffff_ff00) << 12) | (minor & 0xff)
    }

    private func attributes(_ inode: UnsafeMutablePointer<sqfs_inode_generic_t>) throws -> [MergedTree
        .ExtendedAttribute]
    {
        var index: UInt32 = 0xFFFF_FFFF
        sqfs_inode_get_xattr_index(inode, &index)
        guard index != 0xFFFF_FFFF, let xattrs else { return [] }
        var description = sqfs_xattr_id_t()
        try sqfs("read xattrs in \(reader.image)") { sqfs_xattr_reader_get_desc(xattrs, index, &description) }
        try sqfs("read xattrs in \(reader.image)") { sqfs_xattr_reader_seek_kv(xattrs, &description) }
        var result: [MergedTree.ExtendedAttribute] = []
        for _ in 0..<description.count {
            var key: UnsafeMutablePointer<sqfs_xattr_entry_t>?
            try sqfs("read an xattr key in \(reader.image)") { sqfs_xattr_reader_read_key(xattrs, &key) }
            guard let key else { break }
            defer { sqfs_free(key) }
            var value: UnsafeMutablePointer<sqfs_xattr_value_t>?
            try sqfs("read an xattr value in \(reader.image)") { sqfs_xattr_reader_read_value(xattrs, key, &value) }
            guard let value else { break }
            defer { sqfs_free(value) }
            // libsquashfs hands the key back whole ("user.note"), NUL-terminated; `size` counts the
            // part after the prefix only.
            let name = String(cString: UnsafeRawPointer(lc_sqfs_xattr_key(key)).assumingMemoryBound(to: CChar.self))
            let bytes = Array(UnsafeBufferPointer(start: lc_sqfs_xattr_value(value), count: Int(value.pointee.size)))
            result.append(MergedTree.ExtendedAttribute(name: name, value: bytes))
        }
        return result.sorted { $0.name.utf8.lexicographicallyPrecedes($1.name.utf8) }
    }
}
