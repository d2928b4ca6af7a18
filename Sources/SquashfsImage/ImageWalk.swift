import CLayerSupport
import CSquashfs
import Glibc
import LayerEntries
import LayerSupport

/// The walk over an image's directories, breadth first like the stack merge, so children are
/// contiguous and in the image's (byte) order.
///
/// An image is untrusted input, so the walk reads directories as the kernel does (the entry's
/// inode number and type, not only the inode it points at) and refuses what the kernel would show
/// differently from what the inodes say, or what no writer makes: a directory entered twice (a
/// loop, which would never end), an entry whose type or inode number disagrees with its inode,
/// two inodes under one inode number, names out of order, repeated, empty or holding a `/`.
struct ImageWalk {
    let reader: SquashfsReader
    var entries: [MergedTree.Entry] = []
    var inodes: [Int: UnsafeMutablePointer<sqfs_inode_generic_t>] = [:]
    /// Where each fragment block is stored and its size, read when the first file with a tail in
    /// one is met (empty if none is).
    private(set) var fragments: [sqfs_fragment_t] = []
    private var fragmentsRead = false
    private var ids: OpaquePointer?
    private var xattrs: OpaquePointer?
    private var directoryTable: OpaquePointer?
    private var inodeTable: OpaquePointer?

    init(reader: SquashfsReader) { self.reader = reader }

    mutating func close() {
        sqfsDestroy(ids)
        sqfsDestroy(xattrs)
        sqfsDestroy(directoryTable)
        sqfsDestroy(inodeTable)
        for inode in inodes.values { sqfs_free(inode) }
        inodes = [:]
    }

    /// A damaged image: one line that names it and what is wrong.
    private func damaged(_ what: String) -> ImageRefusal { .damaged(reader.image, what) }

    mutating func run() throws {
        let image = reader.image
        let superblock = reader.superblock.pointee
        guard let table = sqfs_id_table_create(0) else { throw SquashfsError("read ids", SQFS_ERROR_ALLOC.rawValue) }
        ids = table
        try sqfsRead("read the id table of \(image)") {
            sqfs_id_table_read(table, reader.file, reader.superblock, reader.compressor)
        }
        if superblock.flags & UInt16(SQFS_FLAG_NO_XATTRS.rawValue) == 0, superblock.xattr_id_table_start != UInt64.max {
            guard let xr = sqfs_xattr_reader_create(0) else {
                throw SquashfsError("read xattrs", SQFS_ERROR_ALLOC.rawValue)
            }
            xattrs = xr
            try sqfsRead("read the xattr table of \(image)") {
                sqfs_xattr_reader_load(xr, reader.superblock, reader.file, reader.compressor)
            }
        }
        // The tables lie one after another: inodes, directories, then the fragment, export, id and
        // xattr tables; each reader may not read past the start of the next.
        let directoryStart = superblock.directory_table_start
        let directoryLimit =
            [
                superblock.fragment_table_start, superblock.export_table_start, superblock.id_table_start,
                superblock.xattr_id_table_start, superblock.bytes_used,
            ].filter { $0 > directoryStart && $0 != UInt64.max }.min() ?? superblock.bytes_used
        guard superblock.inode_table_start < directoryStart,
            let inodeTable = sqfs_meta_reader_create(
                reader.file, reader.compressor, superblock.inode_table_start, directoryStart),
            let directoryTable = sqfs_meta_reader_create(reader.file, reader.compressor, directoryStart, directoryLimit)
        else { throw damaged("its inode and directory tables are out of order") }
        self.inodeTable = inodeTable
        self.directoryTable = directoryTable

        let rootReference = superblock.root_inode_ref
        let root = try inode(at: rootReference, path: "/")
        guard SquashfsReader.kind(of: root) == .directory else {
            sqfs_free(root)
            throw damaged("the root is not a directory")
        }
        entries.append(try entry(name: [], parent: 0, inode: root))
        var queue: [(index: Int, inode: UnsafeMutablePointer<sqfs_inode_generic_t>)] = [(0, root)]
        // By inode number (1 ... inode_count): the first entry listed under it, and the reference
        // of its inode. The kernel keeps one inode per number, so a second inode under a number
        // would read as the first: for a directory, another directory's entries.
        let inodeCount = Int(superblock.inode_count)
        // A table as long as the count the superblock claims could ask for any amount of memory
        // (4 billion numbers: 64 GiB): the numbers met are kept, which the image's size bounds.
        var byNumber: [UInt32: (index: Int32, reference: UInt64)] = [:]
        let rootNumber = Int(root.pointee.base.inode_number)
        if (1...max(1, inodeCount)).contains(rootNumber) { byNumber[UInt32(rootNumber)] = (0, rootReference) }
        var head = 0
        defer { for pending in queue[head...] { sqfs_free(pending.inode) } }
        while head < queue.count {
            let (directory, inode) = queue[head]
            head += 1
            defer { sqfs_free(inode) }
            let directoryPath = directory == 0 ? [] : tree.path(of: directory)
            let path = directory == 0 ? "/" : RawPath.display(directoryPath)
            var state = sqfs_readdir_state_t()
            try sqfsRead("list \(path) in \(image)") { sqfs_readdir_state_init(&state, reader.superblock, inode) }
            let first = entries.count
            var previous: [UInt8]?
            // What the header last read promises and the size leaves, after the last entry.
            var unread = (entries: 0, bytes: max(state.`init`.size, 3))
            while true {
                var dirent: UnsafeMutablePointer<sqfs_dir_entry_t>?
                var number: UInt32 = 0
                var reference: UInt64 = 0
                let status = sqfs_meta_reader_readdir(directoryTable, &state, &dirent, &number, &reference)
                if status > 0 { break }
                guard status == 0, let dirent else {
                    throw SquashfsError("list \(path) in \(image)", status, reading: true)
                }
                defer { sqfs_free(dirent) }
                unread = (state.entries, state.current.size)
                let name = Array(
                    UnsafeBufferPointer(start: lc_sqfs_dir_entry_name(dirent), count: Int(dirent.pointee.size) + 1))
                let childPath = { RawPath.display(RawPath.join(directoryPath, name)) }
                try check(name: name, after: previous, in: path)
                do {
                    try PathLimit.check(directoryPath.count, adding: name, to: directoryPath)
                } catch var tooLong as PathTooLong {
                    tooLong.reading = "read \(image)"
                    throw tooLong
                }
                previous = name
                let child = try self.inode(at: reference, path: childPath())
                var made: MergedTree.Entry
                do {
                    // What the kernel's readdir reports comes from the entry: its type and number.
                    let type = UInt16(child.pointee.base.type)
                    let basic = type > 7 ? type - 7 : type
                    guard dirent.pointee.type == basic else {
                        throw damaged(
                            "\(childPath()) is listed as type \(dirent.pointee.type), its inode is type \(type)")
                    }
                    guard number == child.pointee.base.inode_number else {
                        throw damaged(
                            "\(childPath()) is listed as inode \(number), its inode says \(child.pointee.base.inode_number)"
                        )
                    }
                    made = try entry(name: name, parent: directory, inode: child)
                } catch {
                    sqfs_free(child)
                    throw error
                }
                let index = entries.count
                guard number >= 1, Int(number) <= inodeCount else {
                    sqfs_free(child)
                    throw damaged("\(childPath()) has inode number \(number), outside 1 to \(inodeCount)")
                }
                let earlier = byNumber[number] ?? (-1, 0)
                if made.kind == .directory {
                    // The entry's number is its inode's (checked above), so a directory met
                    // before holds that number with the same inode: a loop.
                    guard earlier.index < 0 else {
                        sqfs_free(child)
                        throw damaged(
                            earlier.reference == reference
                                ? "a directory loop: \(childPath()) is a directory met before"
                                : "\(childPath()) is a directory under inode number \(number), which is taken")
                    }
                    byNumber[number] = (Int32(index), reference)
                    queue.append((index, child))
                } else {
                    if earlier.index >= 0 {
                        guard earlier.reference == reference, made.linkCount > 1 else {
                            sqfs_free(child)
                            throw damaged(
                                "\(childPath()) shares inode number \(number) with \(RawPath.display(tree.path(of: Int(earlier.index)))), but not its inode or a link count above 1"
                            )
                        }
                        made.hardLinkTarget = Int(earlier.index)
                    } else {
                        byNumber[number] = (Int32(index), reference)
                    }
                    if made.kind == .regular && made.hardLinkTarget == nil {
                        inodes[index] = child
                        try checkBlocks(of: child, path: childPath())
                    } else {
                        sqfs_free(child)
                    }
                }
                entries.append(made)
            }
            // A folder's listing is a run of headers, each saying how many entries follow it.
            // libsquashfs stops at the folder's size; the kernel reads as many entries as the last
            // header says, past the size, into whatever follows, and shows them: a header that
            // promised more hid entries from `diff` that the booted system would see. So the last
            // header's entries must all have been read, and the listing end at the size (which
            // counts 3 bytes for `.` and `..`).
            guard unread.entries == 0 else {
                throw damaged(
                    "\(path)'s listing has a header that promises \(unread.entries) more entries than its size holds")
            }
            guard unread.bytes == 3 else { throw damaged("\(path)'s listing does not end where its size says") }
            // The kernel shows the link count the inode holds; every writer makes it 2 and one more
            // for each folder in it.
            let folders = (first..<entries.count).count { entries[$0].kind == .directory }
            let links =
                inode.pointee.base.type == SQFS_INODE_EXT_DIR.rawValue
                ? inode.pointee.data.dir_ext.nlink : inode.pointee.data.dir.nlink
            guard links == 2 + folders else {
                throw damaged(
                    "\(path) has a link count of \(links), where its \(counted(folders, "folder")) make \(2 + folders)")
            }
            entries[directory].children = first..<entries.count
        }
        // Nor does a writer give any other inode a link count but the number of its names.
        var names = [Int](repeating: 0, count: entries.count)
        for index in entries.indices where entries[index].kind != .directory {
            names[entries[index].hardLinkTarget ?? index] += 1
        }
        for (index, count) in names.enumerated() where count > 0 && entries[index].linkCount != count {
            let path = RawPath.display(tree.path(of: index))
            throw damaged(
                "\(path) has a link count of \(entries[index].linkCount), and \(counted(count, "name")) in the image")
        }
    }

    /// A data block's size, as a file's inode lists it, is its size on disk with bit 24 set when
    /// stored uncompressed. libsquashfs reads the low 24 bits, the kernel every bit but the 24th:
    /// a bit above them, which no writer sets, made a block the kernel could not read, of a file
    /// `diff` read as it was written. The same holds for the fragment block that holds a file's
    /// tail, whose size is in the fragment table: the kernel will not even stat the file.
    private mutating func checkBlocks(of inode: UnsafePointer<sqfs_inode_generic_t>, path: @autoclosure () -> String)
        throws
    {
        let blockSize = reader.superblock.pointee.block_size
        let used = reader.superblock.pointee.bytes_used
        let count = Int(inode.pointee.payload_bytes_used) / 4
        if count > 0, let payload = lc_sqfs_inode_payload(inode) {
            var stored: UInt64 = 0
            for size in UnsafeBufferPointer(start: payload.assumingMemoryBound(to: UInt32.self), count: count) {
                let onDisk = size & ~(UInt32(1) << 24)
                guard onDisk <= blockSize else {
                    throw damaged(
                        "\(path()) lists a data block of \(onDisk) bytes, more than the image's block size of \(blockSize)"
                    )
                }
                stored += UInt64(onDisk)
            }
            // And the blocks lie inside the image, as the kernel checks each block it reads.
            var start: UInt64 = 0
            sqfs_inode_get_file_block_start(inode, &start)
            let (end, overflow) = start.addingReportingOverflow(stored)
            guard stored == 0 || (!overflow && end <= used) else {
                throw damaged("\(path())'s data blocks end past the image's \(used) bytes")
            }
        }
        var index: UInt32 = 0
        var offset: UInt32 = 0
        sqfs_inode_get_frag_location(inode, &index, &offset)
        guard index != 0xFFFF_FFFF else { return }
        if !fragmentsRead { try readFragments() }
        guard Int(index) < fragments.count else {
            throw damaged(
                "\(path()) has its tail in fragment block \(index), of \(counted(fragments.count, "block")) in the image"
            )
        }
        let fragment = fragments[Int(index)]
        let onDisk = fragment.size & ~(UInt32(1) << 24)
        guard onDisk <= blockSize else {
            throw damaged(
                "\(path()) has its tail in a fragment block of \(onDisk) bytes, more than the image's block size of \(blockSize)"
            )
        }
        let (end, overflow) = fragment.start_offset.addingReportingOverflow(UInt64(onDisk))
        guard !overflow && end <= used else {
            throw damaged("\(path()) has its tail in a fragment block that ends past the image's \(used) bytes")
        }
    }

    private mutating func readFragments() throws {
        fragmentsRead = true
        guard let table = sqfs_frag_table_create(0) else {
            throw SquashfsError("read the fragment table", SQFS_ERROR_ALLOC.rawValue)
        }
        defer { sqfsDestroy(table) }
        try sqfsRead("read the fragment table of \(reader.image)") {
            sqfs_frag_table_read(table, reader.file, reader.superblock, reader.compressor)
        }
        let count = reader.superblock.pointee.fragment_entry_count
        fragments.reserveCapacity(Int(count))
        for number in 0..<count {
            var entry = sqfs_fragment_t()
            try sqfsRead("read the fragment table of \(reader.image)") { sqfs_frag_table_lookup(table, number, &entry) }
            fragments.append(entry)
        }
    }

    /// Names as the kernel needs them: not empty, no `/`, not `.` or `..`, and in strictly
    /// increasing byte order, which lookups rely on and which rules out repeats.
    private func check(name: [UInt8], after previous: [UInt8]?, in directory: String) throws {
        if name.contains(UInt8(ascii: "/")) || name == [0x2E] || name == [0x2E, 0x2E] || name.contains(0) {
            throw damaged("\(directory) holds an entry named \(RawPath.display(name).debugDescription)")
        }
        if let previous, !previous.lexicographicallyPrecedes(name) {
            throw damaged("\(directory) lists \(RawPath.display(name)) after \(RawPath.display(previous))")
        }
    }

    /// The inode at `reference` (block << 16 | offset in the inode table). The caller frees it.
    /// `path` names it in messages only, so it is made only for one.
    private func inode(at reference: UInt64, path: @autoclosure () -> String) throws
        -> UnsafeMutablePointer<sqfs_inode_generic_t>
    {
        var inode: UnsafeMutablePointer<sqfs_inode_generic_t>?
        let status = sqfs_meta_reader_read_inode(
            inodeTable, reader.superblock, reference >> 16, Int(reference & 0xFFFF), &inode)
        // An inode is small: one that needs more memory than there is says it holds more than it
        // does (a file of 2^63 bytes, whose list of blocks libsquashfs allocates).
        if status == SQFS_ERROR_ALLOC.rawValue {
            throw damaged("the inode of \(path()) claims more than any image holds")
        }
        if status != 0 { throw SquashfsError("read \(path()) in \(reader.image)", status, reading: true) }
        guard let inode else { throw SquashfsError("read \(path()) in \(reader.image)", SQFS_ERROR_INTERNAL.rawValue) }
        return inode
    }

    private var tree: MergedTree { MergedTree(entries: entries, epoch: 0) }

    private func entry(name: [UInt8], parent: Int, inode: UnsafeMutablePointer<sqfs_inode_generic_t>) throws
        -> MergedTree.Entry
    {
        guard let kind = SquashfsReader.kind(of: inode) else {
            throw SquashfsError("read \(reader.image): an inode of unknown type", SQFS_ERROR_CORRUPTED.rawValue)
        }
        var uid: UInt32 = 0
        var gid: UInt32 = 0
        try sqfsRead("read the owner in \(reader.image)") {
            sqfs_id_table_index_to_id(ids, inode.pointee.base.uid_idx, &uid)
        }
        try sqfsRead("read the group in \(reader.image)") {
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
            rdev = DeviceNumber.decode(encoded)
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
            linkTarget: kind == .symlink ? SquashfsReader.linkTargetBytes(inode) : [],
            xattrs: try attributes(inode), source: [], layer: 0, children: 0..<0, hardLinkTarget: nil,
            linkCount: kind == .directory ? 1 : Int(links))
    }

    private func attributes(_ inode: UnsafeMutablePointer<sqfs_inode_generic_t>) throws -> [MergedTree
        .ExtendedAttribute]
    {
        var index: UInt32 = 0xFFFF_FFFF
        sqfs_inode_get_xattr_index(inode, &index)
        guard index != 0xFFFF_FFFF, let xattrs else { return [] }
        var description = sqfs_xattr_id_t()
        try sqfsRead("read xattrs in \(reader.image)") { sqfs_xattr_reader_get_desc(xattrs, index, &description) }
        try sqfsRead("read xattrs in \(reader.image)") { sqfs_xattr_reader_seek_kv(xattrs, &description) }
        var result: [MergedTree.ExtendedAttribute] = []
        for _ in 0..<description.count {
            var key: UnsafeMutablePointer<sqfs_xattr_entry_t>?
            try sqfsRead("read an xattr key in \(reader.image)") { sqfs_xattr_reader_read_key(xattrs, &key) }
            guard let key else { break }
            defer { sqfs_free(key) }
            var value: UnsafeMutablePointer<sqfs_xattr_value_t>?
            try sqfsRead("read an xattr value in \(reader.image)") { sqfs_xattr_reader_read_value(xattrs, key, &value) }
            guard let value else { break }
            defer { sqfs_free(value) }
            // libsquashfs hands the key back whole ("user.note"), NUL-terminated; `size` counts the
            // part after the prefix only.
            let start = UnsafeRawPointer(lc_sqfs_xattr_key(key)).assumingMemoryBound(to: UInt8.self)
            let name = Array(
                UnsafeBufferPointer(
                    start: start, count: strlen(UnsafeRawPointer(start).assumingMemoryBound(to: CChar.self))))
            let bytes = Array(UnsafeBufferPointer(start: lc_sqfs_xattr_value(value), count: Int(value.pointee.size)))
            result.append(MergedTree.ExtendedAttribute(name: name, value: bytes))
        }
        return result.sorted { $0.name.lexicographicallyPrecedes($1.name) }
    }
}
