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
    /// Where each fragment block is stored, read once on the first comparison that needs it.
    private var fragments: [sqfs_fragment_t]?
    /// The image file mapped read-only, for comparing stored bytes without copying them.
    private var mapping: UnsafeRawBufferPointer?

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
        guard readA == Int32(tail), readB == Int32(tail) else {
            throw SquashfsError("read a fragment of \(reader.image) or \(image.reader.image)", min(readA, readB))
        }
        return memcmp(left, right, tail) == 0
    }

    /// Where fragment block `index` is stored, or nil for the "no fragment" index.
    private func fragment(_ index: UInt32) throws -> sqfs_fragment_t? {
        guard index != 0xFFFF_FFFF else { return nil }
        if fragments == nil {
            guard let table = sqfs_frag_table_create(0) else {
                throw SquashfsError("read the fragment table", SQFS_ERROR_ALLOC.rawValue)
            }
            defer { sqfsDestroy(table) }
            try sqfs("read the fragment table of \(reader.image)") {
                sqfs_frag_table_read(table, reader.file, reader.superblock, reader.compressor)
            }
            var all: [sqfs_fragment_t] = []
            all.reserveCapacity(Int(reader.superblock.pointee.fragment_entry_count))
            for number in 0..<reader.superblock.pointee.fragment_entry_count {
                var entry = sqfs_fragment_t()
                try sqfs("read the fragment table of \(reader.image)") { sqfs_frag_table_lookup(table, number, &entry) }
                all.append(entry)
            }
            fragments = all
        }
        guard let fragments, Int(index) < fragments.count else {
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
