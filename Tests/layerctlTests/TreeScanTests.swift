import Foundation
import CLayerSupport
import Crypto
import Glibc
import LayerEntries
import LayerSupport
import Testing

/// The scan that sums up every layer tree, held against a plain walk by path written here from
/// the digest's definition: on a tree with every kind of entry, hostile names, hard links whose
/// names sort either way, and attribute lists both short and too long for the scan's first buffer.
@Suite("Tree scan", .serialized, .enabled(if: Harness.canBuild, Harness.cannotBuildReason))
struct TreeScanTests {
    @Test("the scan's digest, sizes and manifest agree with a walk by path, listing attributes by folder or by path")
    func agreesWithWalkByPath() throws {
        let root = try Harness.temporaryDirectory("scan")
        defer { try? FileSystem.removeTree(root) }
        let files = try Self.craft(root)
        let expected = try Self.referenceDigest(root)
        for byFolder in [true, false] {
            ExtendedAttributes.listsAtFolder.store(byFolder, ordering: .relaxed)
            defer { ExtendedAttributes.listsAtFolder.store(true, ordering: .relaxed) }
            let scan = try TreeScan.scan(root)
            #expect(scan.digest == expected, "listing attributes \(byFolder ? "by folder" : "by path")")
            #expect(scan.fileCount == files.entries, "listing attributes \(byFolder ? "by folder" : "by path")")
            #expect(scan.bytes == files.bytes)
            // Each name of a hard-linked file points at the first name the walk met.
            let entries = scan.manifest.entries
            let linked = entries.indices.filter { entries[$0].hardLinkTarget != nil }
            #expect(linked.map { String(decoding: entries[$0].name, as: UTF8.self) }.sorted() == ["a-link", "m-original"])
            for index in linked {
                let target = entries[entries[index].hardLinkTarget!]
                #expect(target.hardLinkTarget == nil && target.content == entries[index].content)
            }
        }
    }

    @Test("the scan hashes a sparse file as its bytes without reading its holes, with block digests or without")
    func sparseFile() throws {
        let root = try Harness.temporaryDirectory("scan-sparse")
        defer { try? FileSystem.removeTree(root) }
        // 256 MiB, one page of data in the middle.
        let path = root + "/disk.img"
        let fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o644)
        try #require(fd >= 0)
        let page = [UInt8](repeating: 0x5A, count: 4096)
        #expect(pwrite(fd, page, page.count, 128 << 20) == page.count && ftruncate(fd, 256 << 20) == 0)
        close(fd)
        var bytes = [UInt8](repeating: 0, count: 256 << 20)
        bytes.replaceSubrange((128 << 20)..<((128 << 20) + 4096), with: page)
        let expected = Hash256(SHA256.hash(data: bytes))
        for blockSize in [nil, 128 << 10] {
            try PageCache.evict(path)
            let before = try PageCache.residentPages(path)
            let scan = try TreeScan.scan(root, blockSize: blockSize)
            let after = try PageCache.residentPages(path)
            #expect(scan.manifest.entries.first { $0.name == Array("disk.img".utf8) }?.content == expected)
            // Reading the page of data may read ahead into the hole around it: at most a few MiB.
            #expect(after - before < 1024, "\(after - before) of 65536 pages read into the cache")
        }
    }

    @Test("a tree of more files than a process may have open: each digest right, no descriptor left open, no access time set")
    func manyFiles() throws {
        let root = try Harness.temporaryDirectory("scan-many")
        defer { try? FileSystem.removeTree(root) }
        // 1,500 files, more than the soft limit of open files (1,024) and than the scan lets wait
        // open for its hashing threads, in one folder and in a folder each of ten.
        var expected: [String: Hash256] = [:]
        for number in 0..<1500 {
            let folder = number < 750 ? "/flat" : "/nested-\(number % 10)"
            if number == 0 || (number >= 750 && number < 760) { #expect(mkdir(root + folder, 0o755) == 0) }
            let path = root + folder + "/file-\(number)"
            let data = Array("file \(number)\n".utf8) + [UInt8](repeating: UInt8(number % 251), count: number * 7)
            try Data(data).write(to: URL(fileURLWithPath: path))
            // An access time older than the change time: a read under relatime would set it.
            var times = [timespec(tv_sec: 1, tv_nsec: 0), timespec(tv_sec: 1, tv_nsec: 0)]
            #expect(utimensat(AT_FDCWD, path, &times, 0) == 0)
            expected[String(folder.dropFirst()) + "/file-\(number)"] = Hash256(SHA256.hash(data: data))
        }
        let scan = try TreeScan.scan(root)
        let entries = scan.manifest.entries
        var found = 0
        for entry in entries where entry.content != nil {
            let name = String(decoding: entries[entry.parent].name, as: UTF8.self) + "/" + String(decoding: entry.name, as: UTF8.self)
            #expect(entry.content == expected[name], "\(name)")
            found += 1
        }
        #expect(found == expected.count)
        #expect(try Self.openDescriptors(under: root) == [])
        var st = stat()
        #expect(stat(root + "/flat/file-1", &st) == 0 && st.st_atim.tv_sec == 1, "access time \(st.st_atim.tv_sec)")

        // A scan that stops half way (its deadline passed at the 1,024th entry) closes what it
        // opened for the hashing threads.
        #expect(throws: Deadline.Passed.self) { try TreeScan.scan(root, deadline: Deadline(seconds: 0)) }
        #expect(try Self.openDescriptors(under: root) == [])
    }

    /// What the descriptors this process has open on files under `root` point at (other tests
    /// run in this process meanwhile, with descriptors of their own).
    static func openDescriptors(under root: String) throws -> [String] {
        try FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd").compactMap { fd in
            let target = try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/fd/" + fd)
            return target.flatMap { $0.hasPrefix(root + "/") ? $0 : nil }
        }
    }

    /// Makes the tree under `root`; returns how many entries it holds below the root, and the
    /// bytes of its regular files.
    static func craft(_ root: String) throws -> (entries: Int, bytes: Int64) {
        var entries = 0
        var bytes: Int64 = 0
        func file(_ path: [UInt8], _ data: [UInt8], mode: mode_t = 0o644, owner: (uid_t, gid_t)? = nil) throws {
            let full = Array(root.utf8) + [0x2F] + path
            let fd = RawPath.with(full) { open($0, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode) }
            guard fd >= 0 else { throw SystemError("create", RawPath.string(full)) }
            defer { close(fd) }
            try data.withUnsafeBytes { try FileSystem.writeAll(fd, $0, to: RawPath.string(full)) }
            // chown drops the setuid bit: the mode is set after it.
            if let owner { guard fchown(fd, owner.0, owner.1) == 0 else { throw SystemError("chown", RawPath.string(full)) } }
            guard fchmod(fd, mode) == 0 else { throw SystemError("chmod", RawPath.string(full)) }
            entries += 1
            bytes += Int64(data.count)
        }
        func folder(_ path: [UInt8]) throws {
            let full = Array(root.utf8) + [0x2F] + path
            guard RawPath.with(full, { mkdir($0, 0o755) }) == 0 else { throw SystemError("mkdir", RawPath.string(full)) }
            entries += 1
        }
        func attribute(_ path: [UInt8], _ name: [UInt8], _ value: [UInt8]) throws {
            let full = Array(root.utf8) + [0x2F] + path
            let set = RawPath.with(full) { p in RawPath.with(name) { lsetxattr(p, $0, value, value.count, 0) } }
            guard set == 0 else { throw SystemError("set attribute \(RawPath.display(name)) on", RawPath.string(full)) }
        }
        let b = Array("b".utf8), y = Array("y".utf8)
        let hostile: [UInt8] = [0xFF, 0xFE, 0x0A, 0x2D]  // not UTF-8, a newline, a dash
        try folder(b)
        try folder(y)
        try folder(hostile)
        var deep = hostile
        for level in 0..<8 {
            deep += [0x2F] + Array("level-\(level)".utf8)
            try folder(deep)
        }
        try file(deep + Array("/bottom".utf8), Array("the bottom\n".utf8))
        try file(Array("empty".utf8), [])
        try file(Array("setuid".utf8), Array("#!/bin/sh\n".utf8), mode: 0o4755, owner: (1234, 5678))
        // Larger than the hash's read buffer, twice over.
        try file(Array("large".utf8), (0..<(300 << 10)).map { UInt8(truncatingIfNeeded: $0 &* 2_654_435_761 >> 13) })
        try file(hostile + Array("/inside".utf8), Array("inside\n".utf8))
        try file(Array(String(repeating: "n", count: 255).utf8), Array("a long name\n".utf8))
        // Hard links: made as y/m-original, then y/a-link (sorts before it) and b/z-link (met
        // first of the three, in a folder met earlier).
        try file(Array("y/m-original".utf8), Array("linked\n".utf8))
        for other in ["y/a-link", "b/z-link"] {
            guard link(root + "/y/m-original", root + "/" + other) == 0 else { throw SystemError("link", other) }
            entries += 1
            bytes += 7
        }
        for (name, target) in [("dangling", "../nowhere"), ("absolute", "/etc/passwd"), ("loop", "loop")] {
            guard symlink(target, root + "/" + name) == 0 else { throw SystemError("symlink", name) }
            entries += 1
        }
        guard mkfifo(root + "/fifo", 0o600) == 0, mknod(root + "/whiteout", S_IFCHR, 0) == 0,
            mknod(root + "/null", S_IFCHR | 0o666, __dev_t(lc_makedev(1, 3))) == 0, mknod(root + "/disk", S_IFBLK | 0o600, __dev_t(lc_makedev(7, 0))) == 0
        else { throw SystemError("mknod", root) }
        entries += 4
        try attribute(Array("large".utf8), Array("user.plain".utf8), Array("value".utf8))
        try attribute(Array("empty".utf8), Array("user.".utf8) + [0xFF, 0xFE], [0, 1, 2, 0xFF])
        try attribute(b, Array("trusted.overlay.opaque".utf8), Array("y".utf8))
        try attribute(hostile, Array("trusted.overlay.origin".utf8), [0, 0x80])
        // More names than the first listing's buffer holds (256 bytes).
        for number in 0..<40 {
            try attribute(Array("setuid".utf8), Array("user.attribute-number-\(number)".utf8), Array("\(number)".utf8))
        }
        return (entries, bytes)
    }

    /// The tree digest as `TreeScan` defines it, by a plain recursive walk by path: for each entry
    /// in pre-order, names in byte order, the line `relative\0mode\0uid:gid\0mtime\0` then for a
    /// regular file `size\0sha256`, for a symlink its target, for a device its number; then
    /// `\0name=hex(value)` for each attribute in name order, and a newline.
    static func referenceDigest(_ root: String) throws -> String {
        var all: [UInt8] = []
        func walk(_ path: [UInt8], _ relative: [UInt8]) throws {
            var st = stat()
            guard RawPath.with(path, { lstat($0, &st) }) == 0 else { throw SystemError("lstat", RawPath.string(path)) }
            var line = relative.isEmpty ? Array("/".utf8) : relative
            line += Array("\0\(st.st_mode)\0\(st.st_uid):\(st.st_gid)\0\(st.st_mtim.tv_sec)\0".utf8)
            switch st.st_mode & S_IFMT {
            case S_IFREG: line += Array("\(st.st_size)\0".utf8) + Array(try Digest.sha256(file: path).utf8)
            case S_IFLNK: line += try FileSystem.readLink(path)
            case S_IFCHR, S_IFBLK: line += Array("\(st.st_rdev)".utf8)
            default: break
            }
            for attribute in try ExtendedAttributes.every(path) {
                line += [0] + attribute.name + Array("=".utf8) + Array(Digest.hex(attribute.value).utf8)
            }
            all += line + [0x0A]
            if st.st_mode & S_IFMT == S_IFDIR {
                for name in try FileSystem.listDirectory(path) {
                    try walk(RawPath.join(path, name), relative + [0x2F] + name)
                }
            }
        }
        try walk(Array(root.utf8), [])
        return Digest.sha256(Data(all))
    }
}
