import CLayerSupport
import CSquashfs
import Glibc
import LayerEntries
import LayerSupport

extension SquashfsWriter {
    /// Numbers the inodes so that every inode is written before any directory that lists it: each
    /// directory's subdirectories are numbered first (recursively), then its entries, and the root
    /// last. A hard-link group takes its number where the walk first meets one of its names.
    /// Returns the entries to write, in inode-number order, and each entry's number.
    static func numberInodes(_ tree: MergedTree) -> (order: [Int], numbers: [UInt32]) {
        var numbers = [UInt32](repeating: 0, count: tree.entries.count)
        var order: [Int] = []
        order.reserveCapacity(tree.entries.count)
        // An explicit stack instead of recursion: (directory, subdirectories already visited).
        var stack: [(directory: Int, visited: Bool)] = [(0, false)]
        while let (directory, visited) = stack.popLast() {
            let children = tree.entries[directory].children
            if !visited {
                stack.append((directory, true))
                for child in children.reversed() where tree.entries[child].kind == .directory {
                    stack.append((child, false))
                }
                continue
            }
            for child in children {
                let target = tree.entries[child].hardLinkTarget ?? child
                if numbers[target] == 0 {
                    order.append(target)
                    numbers[target] = UInt32(order.count)
                }
            }
        }
        order.append(0)
        numbers[0] = UInt32(order.count)
        return (order, numbers)
    }

    /// The owners and groups of an image as its id table lists them: each distinct uid and gid
    /// once, in the order the inode table first meets it (an inode's uid, then its gid). Kept here
    /// rather than in libsquashfs's table, which looks each id up by going through all of them, a
    /// time that grows with the number of files times the number of ids.
    struct Ids {
        var table: [UInt32] = []
        var index: [UInt32: UInt16] = [:]
    }

    /// The most distinct ids an image holds. The superblock counts them in 16 bits, and 65,536
    /// would be written as 0, which the kernel refuses to mount; libsquashfs (and so gensquashfs)
    /// and mksquashfs write such an image without a word.
    static let idLimit = 65_535

    /// Numbers the ids of the entries in `order` (as `numberInodes` gives it); fails, naming the
    /// entry, at the first id past `idLimit`.
    static func numberIds(_ tree: MergedTree, order: [Int]) throws -> Ids {
        var ids = Ids()
        func add(_ id: UInt32, of index: Int, as role: String) throws {
            guard ids.index[id] == nil else { return }
            guard ids.table.count < idLimit else {
                throw TooManyIds(role: role, id: id, path: RawPath.display(tree.path(of: index)))
            }
            ids.index[id] = UInt16(ids.table.count)
            ids.table.append(id)
        }
        for index in order {
            try add(tree.entries[index].uid, of: index, as: "owner")
            try add(tree.entries[index].gid, of: index, as: "group")
        }
        return ids
    }

    /// Writes the inode and directory tables, then the fragment, export, id and xattr tables, the
    /// final superblock and the padding to a multiple of 4 KiB. `order`, `numbers` and `ids` are
    /// those of `numberInodes` and `numberIds`.
    func writeMetadata(
        _ tree: MergedTree, order: [Int], numbers: [UInt32], ids: Ids,
        inodes: UnsafeMutablePointer<UnsafeMutablePointer<sqfs_inode_generic_t>?>,
        fragments: OpaquePointer, skippedAttribute: (String, [UInt8]) -> Void
    ) throws {
        guard let xattrs = sqfs_xattr_writer_create(0) else {
            throw SquashfsError("create the xattr writer", SQFS_ERROR_ALLOC.rawValue)
        }
        defer { sqfsDestroy(xattrs) }
        guard let inodeTable = sqfs_meta_writer_create(file, compressor, 0) else {
            throw SquashfsError("create the inode table writer", SQFS_ERROR_ALLOC.rawValue)
        }
        defer { sqfsDestroy(inodeTable) }
        guard
            let directoryTable = sqfs_meta_writer_create(
                file, compressor, UInt32(SQFS_META_WRITER_KEEP_IN_MEMORY.rawValue))
        else { throw SquashfsError("create the directory table writer", SQFS_ERROR_ALLOC.rawValue) }
        defer { sqfsDestroy(directoryTable) }
        guard
            let directories = sqfs_dir_writer_create(
                directoryTable, UInt32(SQFS_DIR_WRITER_CREATE_EXPORT_TABLE.rawValue))
        else {
            throw SquashfsError("create the directory writer", SQFS_ERROR_ALLOC.rawValue)
        }
        defer { sqfsDestroy(directories) }

        var references = [UInt64](repeating: 0, count: tree.entries.count)
        superblock.inode_table_start = size
        for index in order {
            let entry = tree.entries[index]
            let path = { RawPath.string(tree.path(of: index)) }
            var inode: UnsafeMutablePointer<sqfs_inode_generic_t>
            var links = UInt32(entry.linkCount)
            switch entry.kind {
            case .directory:
                try self.written("list directory \(path())") { sqfs_dir_writer_begin(directories, 0) }
                var subdirectories = 0
                for child in entry.children {
                    let target = tree.entries[child].hardLinkTarget ?? child
                    let kind = tree.entries[target].kind
                    if kind == .directory { subdirectories += 1 }
                    let mode = UInt16(truncatingIfNeeded: kind.typeBits) | tree.entries[target].permissions
                    try RawPath.with(tree.entries[child].name) { name in
                        try self.written("list \(path())") {
                            sqfs_dir_writer_add_entry(directories, name, numbers[target], references[target], mode)
                        }
                    }
                }
                try self.written("list directory \(path())") { sqfs_dir_writer_end(directories) }
                let parent = index == 0 ? 0 : numbers[entry.parent]
                guard let created = sqfs_dir_writer_create_inode(directories, 2 + subdirectories, 0xFFFF_FFFF, parent)
                else {
                    throw SquashfsError("create the inode of \(path())", SQFS_ERROR_ALLOC.rawValue)
                }
                inode = created
                links = UInt32(2 + subdirectories)
            case .regular:
                guard let written = inodes[index] else {
                    throw SquashfsError("find the data of \(path())", SQFS_ERROR_INTERNAL.rawValue)
                }
                inodes[index] = nil
                inode = written
            default:
                guard let created = specialInode(entry) else {
                    throw SquashfsError("create the inode of \(path())", SQFS_ERROR_ALLOC.rawValue)
                }
                inode = created
            }
            defer { free(inode) }
            inode.pointee.base.mode = UInt16(truncatingIfNeeded: entry.kind.typeBits) | entry.permissions
            inode.pointee.base.mod_time = UInt32(clamping: max(entry.mtime, 0))
            inode.pointee.base.inode_number = numbers[index]
            guard let owner = ids.index[entry.uid], let group = ids.index[entry.gid] else {
                throw SquashfsError("record the owner and group of \(path())", SQFS_ERROR_INTERNAL.rawValue)
            }
            inode.pointee.base.uid_idx = owner
            inode.pointee.base.gid_idx = group
            let attributes = try recordAttributes(entry, path: path, into: xattrs, skipped: skippedAttribute)
            try self.written("record the attributes of \(path())") { sqfs_inode_set_xattr_index(inode, attributes) }
            // After the xattr index, which may turn a basic inode into an extended one.
            if entry.kind == .regular || entry.kind == .directory {
                if lc_sqfs_set_link_count(inode, links) != 0 {
                    throw SquashfsError("set the link count of \(path())", SQFS_ERROR_INTERNAL.rawValue)
                }
            }
            var block: UInt64 = 0
            var offset: UInt32 = 0
            sqfs_meta_writer_get_position(inodeTable, &block, &offset)
            references[index] = block << 16 | UInt64(offset)
            try self.written("write the inode of \(path())") { sqfs_meta_writer_write_inode(inodeTable, inode) }
        }
        try self.written("write the inode table") { sqfs_meta_writer_flush(inodeTable) }
        try self.written("write the directory table") { sqfs_meta_writer_flush(directoryTable) }
        superblock.inode_count = UInt32(order.count)
        superblock.root_inode_ref = references[0]
        superblock.directory_table_start = size
        try self.written("write the directory table") { sqfs_meta_write_write_to_file(directoryTable) }

        try self.written("write the fragment table") { sqfs_frag_table_write(fragments, file, &superblock, compressor) }
        try self.written("write the export table") {
            sqfs_dir_writer_write_export_table(directories, file, compressor, numbers[0], references[0], &superblock)
        }
        // As libsquashfs's id table writes itself: the ids, little-endian, as a table of metadata blocks.
        let table = ids.table.map(\.littleEndian)
        superblock.id_count = UInt16(table.count)
        try self.written("write the id table") {
            table.withUnsafeBytes { sqfs_write_table(file, compressor, $0.baseAddress, $0.count, &superblock.id_table_start) }
        }
        try self.written("write the xattr table") { sqfs_xattr_writer_flush(xattrs, file, &superblock, compressor) }
        superblock.bytes_used = size
        try self.written("write the superblock") { sqfs_super_write(&superblock, file) }
        let padding = Int(superblock.bytes_used % UInt64(SQFS_DEVBLK_SIZE))
        if padding > 0 {
            let zeros = [UInt8](repeating: 0, count: Int(SQFS_DEVBLK_SIZE) - padding)
            try self.written("pad the image") { file.pointee.write_at(file, superblock.bytes_used, zeros, zeros.count) }
        }
    }

    private func specialInode(_ entry: MergedTree.Entry) -> UnsafeMutablePointer<sqfs_inode_generic_t>? {
        let links = UInt32(entry.linkCount)
        switch entry.kind {
        case .symlink:
            return entry.linkTarget.withUnsafeBufferPointer { target in
                target.withMemoryRebound(to: CChar.self) {
                    lc_sqfs_special_inode(Int32(SQFS_INODE_SLINK.rawValue), links, 0, $0.baseAddress, UInt32($0.count))
                }
            }
        case .characterDevice, .blockDevice:
            let type = entry.kind == .characterDevice ? SQFS_INODE_CDEV : SQFS_INODE_BDEV
            return lc_sqfs_special_inode(Int32(type.rawValue), links, DeviceNumber.encode(entry.rdev), nil, 0)
        case .fifo:
            return lc_sqfs_special_inode(Int32(SQFS_INODE_FIFO.rawValue), links, 0, nil, 0)
        case .socket:
            return lc_sqfs_special_inode(Int32(SQFS_INODE_SOCKET.rawValue), links, 0, nil, 0)
        case .directory, .regular:
            return nil
        }
    }

    /// Records the attribute set of `entry` and returns its xattr index (0xFFFFFFFF for none).
    private func recordAttributes(
        _ entry: MergedTree.Entry, path: () -> String, into xattrs: OpaquePointer,
        skipped: (String, [UInt8]) -> Void
    ) throws -> UInt32 {
        let storable = entry.xattrs.filter { attribute in
            if RawPath.with(attribute.name, { sqfs_get_xattr_prefix_id($0) }) >= 0 { return true }
            skipped(attribute.displayName, Array(path().utf8))
            return false
        }
        guard !storable.isEmpty else { return 0xFFFF_FFFF }
        try self.written("record the attributes of \(path())") { sqfs_xattr_writer_begin(xattrs, 0) }
        for attribute in storable {
            try self.written("record attribute \(attribute.displayName) of \(path())") {
                attribute.value.withUnsafeBytes { value in
                    RawPath.with(attribute.name) { sqfs_xattr_writer_add(xattrs, $0, value.baseAddress, value.count) }
                }
            }
        }
        var index: UInt32 = 0xFFFF_FFFF
        try self.written("record the attributes of \(path())") { sqfs_xattr_writer_end(xattrs, &index) }
        return index
    }
}
