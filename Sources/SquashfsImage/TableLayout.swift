import CSquashfs
import LayerSupport

/// Where a squashfs image's tables lie, checked as the kernel checks them when it mounts one.
///
/// After the inode and directory tables come the fragment, export, id and xattr tables, each a
/// run of metadata blocks followed by an index of where those blocks start. The kernel reads the
/// indexes from the end of the image backwards, each ending where the table after it begins, and
/// refuses an image whose indexes do not fit that chain; libsquashfs reads only what it needs and
/// would read the rest of such an image as sound. So a damaged superblock (a count, a table's
/// start, the image's size) could make `diff` call an image the same as a tree, and `stage` put it
/// on a boot partition, where the kernel then refused to mount it.
struct TableLayout {
    let superblock: sqfs_super_t
    /// The file's size.
    let fileSize: UInt64
    /// Reads `count` bytes at an offset of the image, or nil past its end.
    let read: (UInt64, Int) -> [UInt8]?

    /// A metadata block on disk: a 2-byte header and at most 8 KiB.
    static let largestMetadataBlock: UInt64 = 8192 + 2
    static let absent = UInt64.max

    /// What is wrong with the layout, or nil when the kernel would mount it.
    func problem() -> String? {
        do {
            try check()
            return nil
        } catch {
            return error.text
        }
    }

    private struct Problem: Error {
        let text: String
        init(_ text: String) { self.text = text }
    }

    private func check() throws(Problem) {
        let used = superblock.bytes_used
        if used > fileSize { throw Problem("its superblock says it holds \(used) bytes, and the file has \(fileSize)") }
        // The kernel reads an image in blocks of 1 KiB, and a loop device holds a file's whole
        // sectors of 512 bytes: the block that holds the image's last byte must be all there.
        // (Writers pad images to 4 KiB.)
        guard (used + 1023) / 1024 * 1024 <= fileSize / 1024 * 1024 else {
            throw Problem(
                "its superblock says it holds \(used) bytes, which the kernel reads in whole blocks of 1 KiB, "
                    + "and its file of \(fileSize) bytes ends inside the last")
        }
        if superblock.root_inode_ref & 0xFFFF >= 8192 { throw Problem("its root inode lies outside its metadata block") }
        var next = used
        if superblock.xattr_id_table_start != Self.absent {
            // A header first: where the key-value table starts, and how many ids there are.
            let start = superblock.xattr_id_table_start
            guard start < next, next - start >= 16, let header = read(start, 16) else {
                throw Problem("its xattr id table does not fit in the image")
            }
            let (keyValues, ids) = header.withUnsafeBytes { raw in
                var fields = ByteReader(raw: raw)
                return (fields.u64() ?? 0, UInt64(fields.u32() ?? 0))
            }
            if ids == 0 { throw Problem("its xattr id table has no ids") }
            _ = try index("xattr id", at: start + 16, entries: ids, entrySize: 16, end: next, exact: true)
            guard keyValues < start else { throw Problem("its xattr table starts after its id table") }
            next = keyValues
        }
        if superblock.id_count == 0 { throw Problem("its id table has no ids") }
        next = try index(
            "id", at: superblock.id_table_start, entries: UInt64(superblock.id_count), entrySize: 4, end: next, exact: true)
        if superblock.export_table_start != Self.absent {
            if superblock.inode_count == 0 { throw Problem("its export table is for no inodes") }
            next = try index(
                "export", at: superblock.export_table_start, entries: UInt64(superblock.inode_count), entrySize: 8,
                end: next, exact: true)
        }
        if superblock.fragment_entry_count > 0 {
            next = try index(
                "fragment", at: superblock.fragment_table_start, entries: UInt64(superblock.fragment_entry_count),
                entrySize: 16, end: next, exact: false)
        }
        guard superblock.directory_table_start <= next,
            superblock.inode_table_start < superblock.directory_table_start
        else { throw Problem("its inode and directory tables are out of order") }
    }

    /// Checks the index at `start` of a table of `entries` entries of `entrySize` bytes: it ends at
    /// `end` (or before it, where not `exact`), and names blocks that lie before it, in order, each
    /// no larger than a metadata block. Returns where the table's first block starts.
    private func index(
        _ name: String, at start: UInt64, entries: UInt64, entrySize: UInt64, end: UInt64, exact: Bool
    ) throws(Problem) -> UInt64 {
        let blocks = (entries * entrySize + 8191) / 8192
        let length = blocks * 8
        guard start <= end, exact ? end - start == length : end - start >= length else {
            throw Problem(
                "its \(name) table's index, \(length) bytes at \(start), does not end \(exact ? "at" : "by") \(end), "
                    + "where the next table starts")
        }
        guard let bytes = read(start, Int(length)) else {
            throw Problem("its \(name) table's index lies past the end of the file")
        }
        let starts = bytes.withUnsafeBytes { raw in
            var fields = ByteReader(raw: raw)
            return (0..<blocks).compactMap { _ in fields.u64() }
        }
        for (before, after) in zip(starts, starts.dropFirst())
        where after <= before || after - before > Self.largestMetadataBlock {
            throw Problem("its \(name) table's blocks are out of order")
        }
        guard let first = starts.first, let last = starts.last, last < start,
            start - last <= Self.largestMetadataBlock
        else { throw Problem("its \(name) table's blocks do not lie before its index") }
        return first
    }
}
