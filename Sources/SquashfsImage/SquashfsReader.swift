import CLayerSupport
import CSquashfs
import Glibc
import LayerEntries
import LayerSupport

/// Reads directories and files out of a squashfs image with libsquashfs: no mount and no root.
///
/// Paths are absolute inside the image. Symlinks on the way are followed inside the image (an
/// absolute target starts again at the image's root), never out to the host.
public final class SquashfsReader {
    public let image: String
    let file: UnsafeMutablePointer<sqfs_file_t>
    /// On the heap: the directory reader keeps a pointer to it.
    let superblock: UnsafeMutablePointer<sqfs_super_t>
    let compressor: UnsafeMutablePointer<sqfs_compressor_t>
    let directories: OpaquePointer
    let data: OpaquePointer

    public struct Entry: Sendable, Equatable {
        public var name: [UInt8]
        public var kind: MergedTree.Kind
        public var size: UInt64
    }

    /// Opens `image` (sqfs_open_file, sqfs_super_read) and readers for its directories and data.
    public init(image: String) throws {
        self.image = image
        // Opening a pipe waits for a writer: `diff`, `vm` and `stage` of one would never end.
        var st = stat()
        if stat(image, &st) == 0, let special = FileSystem.special(st.st_mode) {
            throw RefusedInput(image, is: special)
        }
        // A file shorter than a superblock holds no squashfs magic either: the wrong file, not a
        // damaged image.
        if st.st_mode & S_IFMT == S_IFREG && st.st_size < MemoryLayout<sqfs_super_t>.size {
            throw SquashfsError("read \(image) as a squashfs image", SFQS_ERROR_SUPER_MAGIC.rawValue, reading: true)
        }
        guard let file = sqfs_open_file(image, UInt32(SQFS_FILE_OPEN_READ_ONLY.rawValue)) else {
            throw SystemError("open image", image)
        }
        let superblock = UnsafeMutablePointer<sqfs_super_t>.allocate(capacity: 1)
        superblock.initialize(to: sqfs_super_t())
        var status = sqfs_super_read(superblock, file)
        if status != 0 {
            superblock.deallocate()
            sqfs_destroy(file)
            throw SquashfsError("read \(image) as a squashfs image", status, reading: true)
        }
        let layout = TableLayout(superblock: superblock.pointee, fileSize: file.pointee.get_size(file)) { offset, count in
            var bytes = [UInt8](repeating: 0, count: count)
            let status = bytes.withUnsafeMutableBytes { file.pointee.read_at(file, offset, $0.baseAddress, count) }
            return status == 0 ? bytes : nil
        }
        if let problem = layout.problem() {
            superblock.deallocate()
            sqfs_destroy(file)
            throw ImageRefusal.damaged(image, problem)
        }
        // libsquashfs reads lzma, which Linux has never mounted (it says so): an image that `diff`
        // would read and the machine it is staged for could not.
        if superblock.pointee.compression_id == SQFS_COMP_LZMA.rawValue {
            superblock.deallocate()
            sqfs_destroy(file)
            throw ImageRefusal.unreadable(
                image, "it is compressed with lzma, which the kernel does not read (xz, zstd, gzip, lz4 and lzo it does)")
        }
        var config = sqfs_compressor_config_t()
        status = sqfs_compressor_config_init(
            &config, SQFS_COMPRESSOR(UInt32(superblock.pointee.compression_id)), Int(superblock.pointee.block_size),
            UInt16(SQFS_COMP_FLAG_UNCOMPRESS.rawValue))
        var created: UnsafeMutablePointer<sqfs_compressor_t>?
        if status == 0 { status = sqfs_compressor_create(&config, &created) }
        guard status == 0, let compressor = created else {
            superblock.deallocate()
            sqfs_destroy(file)
            throw SquashfsError("open the decompressor of \(image)", status)
        }
        if superblock.pointee.flags & UInt16(SQFS_FLAG_COMPRESSOR_OPTIONS.rawValue) != 0 {
            status = compressor.pointee.read_options(compressor, file)
            if status < 0 {
                sqfs_destroy(compressor)
                superblock.deallocate()
                sqfs_destroy(file)
                throw SquashfsError("read the compressor options of \(image)", status)
            }
        }
        // Blocks the kernel's decoder reads otherwise than the library's (zstd, xz) are refused;
        // wrapped after the options are read, which say how large an xz dictionary may be.
        guard let compressor = lc_sqfs_kernel_decoder(compressor, superblock.pointee.block_size) else {
            superblock.deallocate()
            sqfs_destroy(file)
            throw SquashfsError("open the decompressor of \(image)", SQFS_ERROR_ALLOC.rawValue)
        }
        guard let directories = sqfs_dir_reader_create(superblock, compressor, file, 0) else {
            sqfs_destroy(compressor)
            superblock.deallocate()
            sqfs_destroy(file)
            throw SquashfsError("read the directories of \(image)", SQFS_ERROR_ALLOC.rawValue)
        }
        guard let data = sqfs_data_reader_create(file, Int(superblock.pointee.block_size), compressor, 0) else {
            sqfsDestroy(directories)
            sqfs_destroy(compressor)
            superblock.deallocate()
            sqfs_destroy(file)
            throw SquashfsError("read the data of \(image)", SQFS_ERROR_ALLOC.rawValue)
        }
        status = sqfs_data_reader_load_fragment_table(data, superblock)
        if status != 0 {
            sqfsDestroy(data)
            sqfsDestroy(directories)
            sqfs_destroy(compressor)
            superblock.deallocate()
            sqfs_destroy(file)
            throw SquashfsError("read the fragment table of \(image)", status, reading: true)
        }
        self.file = file
        self.superblock = superblock
        self.compressor = compressor
        self.directories = directories
        self.data = data
    }

    deinit {
        sqfsDestroy(data)
        sqfsDestroy(directories)
        sqfs_destroy(compressor)
        superblock.deallocate()
        sqfs_destroy(file)
    }

    /// The entries of the directory at `path`, in the image's (byte) order.
    public func list(_ path: String) throws -> [Entry] {
        let inode = try resolve(path)
        defer { sqfs_free(inode) }
        guard Self.kind(of: inode) == .directory else { throw notA("directory", path) }
        try sqfsRead("list \(path) in \(image)") { sqfs_dir_reader_open_dir(directories, inode, 0) }
        var entries: [Entry] = []
        while true {
            var entry: UnsafeMutablePointer<sqfs_dir_entry_t>?
            let status = sqfs_dir_reader_read(directories, &entry)
            if status > 0 { break }
            guard status == 0, let entry else { throw SquashfsError("list \(path) in \(image)", status, reading: true) }
            defer { sqfs_free(entry) }
            let name = Array(
                UnsafeBufferPointer(start: lc_sqfs_dir_entry_name(entry), count: Int(entry.pointee.size) + 1))
            var child: UnsafeMutablePointer<sqfs_inode_generic_t>?
            try sqfsRead("read \(path) in \(image)") { sqfs_dir_reader_get_inode(directories, &child) }
            guard let child else { throw SquashfsError("read \(path) in \(image)", SQFS_ERROR_INTERNAL.rawValue) }
            defer { sqfs_free(child) }
            var size: UInt64 = 0
            if Self.kind(of: child) == .regular { sqfs_inode_get_file_size(child, &size) }
            entries.append(Entry(name: name, kind: Self.kind(of: child) ?? .regular, size: size))
        }
        return entries
    }

    /// Whether `path` names something in the image (symlinks followed). A damaged image throws.
    public func exists(_ path: String) throws -> Bool {
        do {
            sqfs_free(try resolve(path))
            return true
        } catch let error as SystemError where error.errno == ENOENT || error.errno == ENOTDIR {
            return false
        }
    }

    /// The size of the regular file at `path` (symlinks followed).
    public func size(_ path: String) throws -> UInt64 {
        let inode = try resolve(path)
        defer { sqfs_free(inode) }
        guard Self.kind(of: inode) == .regular else { throw notA("regular file", path) }
        var size: UInt64 = 0
        sqfs_inode_get_file_size(inode, &size)
        return size
    }

    /// Copies the regular file at `path` to a new file `destination` (mode 0644) and returns its size.
    @discardableResult
    public func copy(_ path: String, to destination: String) throws -> UInt64 {
        let inode = try resolve(path)
        defer { sqfs_free(inode) }
        guard Self.kind(of: inode) == .regular else { throw notA("regular file", path) }
        let fd = open(destination, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        if fd < 0 { throw SystemError("create", destination) }
        defer { close(fd) }
        return try readData(inode, path: path) { try FileSystem.writeAll(fd, $0, to: destination) }
    }

    /// The bytes of the regular file at `path` (symlinks followed), or nil when it holds more than
    /// `limit`: an image's file is read into memory only up to a size its reader chose.
    public func contents(_ path: String, atMost limit: UInt64) throws -> [UInt8]? {
        let inode = try resolve(path)
        defer { sqfs_free(inode) }
        guard Self.kind(of: inode) == .regular else { throw notA("regular file", path) }
        var size: UInt64 = 0
        sqfs_inode_get_file_size(inode, &size)
        guard size <= limit else { return nil }
        var bytes: [UInt8] = []
        bytes.reserveCapacity(Int(size))
        try readData(inode, path: path) { bytes.append(contentsOf: $0) }
        return bytes
    }

    /// Calls `body` with the data of the regular file `inode` (at `path`, for messages), a block at a
    /// time, through sqfs_data_reader_read; returns its size.
    @discardableResult
    func readData(
        _ inode: UnsafePointer<sqfs_inode_generic_t>, path: @autoclosure () -> String,
        _ body: (UnsafeRawBufferPointer) throws -> Void
    ) throws -> UInt64 {
        var size: UInt64 = 0
        sqfs_inode_get_file_size(inode, &size)
        let chunk = Int(superblock.pointee.block_size)
        let buffer = UnsafeMutableRawPointer.allocate(byteCount: chunk, alignment: 16)
        defer { buffer.deallocate() }
        var offset: UInt64 = 0
        while offset < size {
            let count = sqfs_data_reader_read(data, inode, offset, buffer, UInt32(min(UInt64(chunk), size - offset)))
            if count < 0 { throw SquashfsError("read \(path()) in \(image)", count, reading: true) }
            if count == 0 { break }
            try body(UnsafeRawBufferPointer(start: buffer, count: Int(count)))
            offset += UInt64(count)
        }
        if offset != size {
            throw SquashfsError("read \(path()) in \(image) (it ends early)", SQFS_ERROR_CORRUPTED.rawValue)
        }
        return size
    }

    /// The inode at `path`, following symlinks inside the image. The caller frees it.
    private func resolve(_ path: String) throws -> UnsafeMutablePointer<sqfs_inode_generic_t> {
        // `resolved` never holds a symlink, so ".." can simply drop its last component.
        var resolved: [String] = []
        var pending = path.split(separator: "/").map(String.init)
        var hops = 0
        while !pending.isEmpty {
            let name = pending.removeFirst()
            if name == "." { continue }
            if name == ".." {
                if !resolved.isEmpty { resolved.removeLast() }
                continue
            }
            // Past a link, what is missing is named as the links made it: a stranger's image may
            // point its kernel at a file it does not hold.
            let inode = try find(
                resolved + [name], for: hops == 0 ? path : "\(path), a link to /\((resolved + [name] + pending).joined(separator: "/")),")
            defer { sqfs_free(inode) }
            guard Self.kind(of: inode) == .symlink else {
                resolved.append(name)
                continue
            }
            hops += 1
            if hops > 40 { throw SystemError("find \(path) in", image, errno: ELOOP) }
            let target = Self.linkTarget(inode)
            if target.hasPrefix("/") { resolved = [] }
            pending = target.split(separator: "/").map(String.init) + pending
        }
        return try find(resolved, for: hops == 0 ? path : "\(path), a link to /\(resolved.joined(separator: "/")),")
    }

    /// The inode at `components` below the root, none of them a symlink.
    private func find(
        _ components: [String], for path: @autoclosure () -> String
    ) throws -> UnsafeMutablePointer<sqfs_inode_generic_t> {
        var root: UnsafeMutablePointer<sqfs_inode_generic_t>?
        try sqfsRead("read the root of \(image)") { sqfs_dir_reader_get_root_inode(directories, &root) }
        guard let root else { throw SquashfsError("read the root of \(image)", SQFS_ERROR_INTERNAL.rawValue) }
        if components.isEmpty { return root }
        defer { sqfs_free(root) }
        var found: UnsafeMutablePointer<sqfs_inode_generic_t>?
        let status = sqfs_dir_reader_find_by_path(directories, root, components.joined(separator: "/"), &found)
        switch status {
        case 0: break
        case SQFS_ERROR_NO_ENTRY.rawValue: throw SystemError("find \(path()) in", image, errno: ENOENT)
        case SQFS_ERROR_NOT_DIR.rawValue: throw SystemError("find \(path()) in", image, errno: ENOTDIR)
        default: throw SquashfsError("find \(path()) in \(image)", status, reading: true)
        }
        guard let found else { throw SquashfsError("find \(path()) in \(image)", SQFS_ERROR_INTERNAL.rawValue) }
        return found
    }

    private func notA(_ what: String, _ path: String) -> SquashfsError {
        SquashfsError("read \(path) in \(image): not a \(what)", SQFS_ERROR_ARG_INVALID.rawValue)
    }

    static func kind(of inode: UnsafePointer<sqfs_inode_generic_t>) -> MergedTree.Kind? {
        switch UInt32(inode.pointee.base.type) {
        case SQFS_INODE_DIR.rawValue, SQFS_INODE_EXT_DIR.rawValue: .directory
        case SQFS_INODE_FILE.rawValue, SQFS_INODE_EXT_FILE.rawValue: .regular
        case SQFS_INODE_SLINK.rawValue, SQFS_INODE_EXT_SLINK.rawValue: .symlink
        case SQFS_INODE_BDEV.rawValue, SQFS_INODE_EXT_BDEV.rawValue: .blockDevice
        case SQFS_INODE_CDEV.rawValue, SQFS_INODE_EXT_CDEV.rawValue: .characterDevice
        case SQFS_INODE_FIFO.rawValue, SQFS_INODE_EXT_FIFO.rawValue: .fifo
        case SQFS_INODE_SOCKET.rawValue, SQFS_INODE_EXT_SOCKET.rawValue: .socket
        default: nil
        }
    }

    /// A symlink's target as stored: raw bytes, which need not be UTF-8.
    static func linkTargetBytes(_ inode: UnsafePointer<sqfs_inode_generic_t>) -> [UInt8] {
        let size =
            UInt32(inode.pointee.base.type) == SQFS_INODE_EXT_SLINK.rawValue
            ? inode.pointee.data.slink_ext.target_size : inode.pointee.data.slink.target_size
        return Array(UnsafeRawBufferPointer(start: lc_sqfs_inode_payload(inode), count: Int(size)))
    }

    static func linkTarget(_ inode: UnsafePointer<sqfs_inode_generic_t>) -> String {
        String(decoding: linkTargetBytes(inode), as: UTF8.self)
    }
}
