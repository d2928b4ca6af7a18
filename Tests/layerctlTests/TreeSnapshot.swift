import CLayerSupport
import Crypto
import Foundation
import Glibc
import LayerSupport

/// Everything a mounted tree shows of each entry, as text, so two trees compare with `==` and a
/// difference reads as a line: type, permissions, owner, size, content hash, link target, device
/// numbers, mtime, xattrs and hard-link group. Names are raw bytes, printed with \xNN escapes.
struct TreeSnapshot: Equatable {
    var entries: [String: String] = [:]
    /// `system.*` attributes (POSIX ACLs), which squashfs cannot hold: path → names.
    var systemAttributes: [String: [String]] = [:]
    /// Non-directories whose link count is not the number of names this tree shows for their
    /// inode. In an image that is a fault; an overlay mount shows a lower file's own count, names
    /// hidden by a whiteout included.
    var linkCountMismatches: [String] = []
    private var linkCounts: [String: Int] = [:]

    init(_ root: String) throws {
        var inodes: [UInt64: [String]] = [:]
        try walk(Array(root.utf8), relative: [], inodes: &inodes)
        for (_, paths) in inodes where paths.count > 1 {
            let group = paths.sorted().first!
            for path in paths { entries[path]! += " links=\(group)" }
        }
        var names: [String: Int] = [:]
        for paths in inodes.values { for path in paths { names[path] = paths.count } }
        for (path, count) in linkCounts where count != (names[path] ?? 1) {
            linkCountMismatches.append("\(path): nlink \(count), names \(names[path] ?? 1)")
        }
        linkCountMismatches.sort()
    }

    /// The lines that differ, at most `limit`, for a readable failure.
    func differences(from other: TreeSnapshot, limit: Int = 20) -> [String] {
        var lines: [String] = []
        for path in Set(entries.keys).union(other.entries.keys).sorted() where entries[path] != other.entries[path] {
            lines.append("\(path):\n  - \(entries[path] ?? "absent")\n  + \(other.entries[path] ?? "absent")")
            if lines.count == limit { break }
        }
        return lines
    }

    static func display(_ bytes: [UInt8]) -> String {
        bytes.map { $0 >= 0x20 && $0 < 0x7F && $0 != 0x5C ? String(UnicodeScalar($0)) : String(format: "\\x%02x", $0) }
            .joined()
    }

    private mutating func walk(_ path: [UInt8], relative: [UInt8], inodes: inout [UInt64: [String]]) throws {
        var st = stat()
        guard withC(path, { lstat($0, &st) }) == 0 else { throw SystemError("lstat", Self.display(path)) }
        let name = relative.isEmpty ? "/" : Self.display(relative)
        var line = ""
        switch st.st_mode & S_IFMT {
        case S_IFDIR: line = "dir"
        case S_IFREG: line = "file size=\(st.st_size) sha256=\(try Self.hash(path))"
        case S_IFLNK: line = "symlink -> \(Self.display(try Self.readLink(path)))"
        case S_IFCHR: line = "chr \(Device.major(st.st_rdev)):\(Device.minor(st.st_rdev))"
        case S_IFBLK: line = "blk \(Device.major(st.st_rdev)):\(Device.minor(st.st_rdev))"
        case S_IFIFO: line = "fifo"
        case S_IFSOCK: line = "socket"
        default: line = "unknown"
        }
        line += String(
            format: " mode=%o uid=%d gid=%d mtime=%d", st.st_mode & 0o7777, st.st_uid, st.st_gid, st.st_mtim.tv_sec)
        var system: [String] = []
        for attribute in Self.attributes(path) {
            if attribute.name.hasPrefix("system.") {
                system.append(attribute.name)
            } else {
                line += " xattr:\(attribute.name)=\(attribute.value.map { String(format: "%02x", $0) }.joined())"
            }
        }
        if !system.isEmpty { systemAttributes[name] = system }
        entries[name] = line
        if (st.st_mode & S_IFMT) != S_IFDIR {
            linkCounts[name] = Int(st.st_nlink)
            if st.st_nlink > 1 { inodes[UInt64(st.st_ino), default: []].append(name) }
        }
        guard (st.st_mode & S_IFMT) == S_IFDIR else { return }
        guard let dir = withC(path, { opendir($0) }) else { throw SystemError("opendir", Self.display(path)) }
        var names: [[UInt8]] = []
        while let entry = readdir(dir) {
            let child = withUnsafeBytes(of: entry.pointee.d_name) { Array($0.prefix { $0 != 0 }) }
            if child != [0x2E] && child != [0x2E, 0x2E] { names.append(child) }
        }
        closedir(dir)
        for child in names {
            try walk(path + [0x2F] + child, relative: relative + [0x2F] + child, inodes: &inodes)
        }
    }

    static func hash(_ path: [UInt8]) throws -> String {
        let fd = withC(path) { open($0, O_RDONLY) }
        guard fd >= 0 else { throw SystemError("open", display(path)) }
        defer { close(fd) }
        var hasher = SHA256()
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 1 << 16, alignment: 16)
        defer { buffer.deallocate() }
        while true {
            let count = read(fd, buffer.baseAddress, buffer.count)
            guard count >= 0 else { throw SystemError("read", display(path)) }
            if count == 0 { break }
            hasher.update(bufferPointer: UnsafeRawBufferPointer(rebasing: buffer[0..<count]))
        }
        return hasher.finalize().map { String(format: "%02x", $0) }.joined()
    }

    static func readLink(_ path: [UInt8]) throws -> [UInt8] {
        var buffer = [CChar](repeating: 0, count: 4097)
        let count = withC(path) { readlink($0, &buffer, 4096) }
        guard count >= 0 else { throw SystemError("readlink", display(path)) }
        return buffer[0..<count].map { UInt8(bitPattern: $0) }
    }

    static func attributes(_ path: [UInt8]) -> [(name: String, value: [UInt8])] {
        withC(path) { p in
            let size = llistxattr(p, nil, 0)
            guard size > 0 else { return [] }
            var names = [CChar](repeating: 0, count: size)
            let read = llistxattr(p, &names, size)
            guard read > 0 else { return [] }
            // Names are raw bytes (any but NUL after the prefix), shown with \xNN escapes.
            return names[0..<read].split(separator: 0).map { raw -> (String, [UInt8]) in
                let bytes = raw.map { UInt8(bitPattern: $0) }
                let length = withC(bytes) { lgetxattr(p, $0, nil, 0) }
                var value = [UInt8](repeating: 0, count: max(length, 0))
                if length > 0 { _ = withC(bytes) { lgetxattr(p, $0, &value, length) } }
                return (display(bytes), value)
            }.sorted { $0.0 < $1.0 }
        }
    }
}

/// Kernel mounts for the oracle: overlayfs over layer trees, and our squashfs through a loop device.
enum KernelMount {
    static func overlay(lowerdir: String) throws -> String {
        let target = try Harness.temporaryDirectory("overlay")
        try mount(["-t", "overlay", "overlay", "-o", "ro,lowerdir=\(lowerdir)", target])
        return target
    }

    static func squashfs(_ image: String) throws -> String {
        let target = try Harness.temporaryDirectory("squashfs")
        try mount(["-t", "squashfs", "-o", "loop,ro", image, target])
        return target
    }

    /// A new tmpfs of `size` (mount's words: 256m) and `inodes`, on a temporary folder: a small
    /// disk to fill. `unmount` it.
    static func tmpfs(size: String, inodes: Int) throws -> String {
        let target = try Harness.temporaryDirectory("tmpfs")
        try mount(["-t", "tmpfs", "-o", "size=\(size),nr_inodes=\(inodes)", "tmpfs", target])
        return target
    }

    /// Mounts `upper` read-write over `lowerdir` and runs `script` (sh, in the mount), so the kernel
    /// itself writes into `upper` what a change through an overlay leaves: copy-ups, whiteouts (one
    /// shared inode for many), links. Then every time in `upper` is set to 1600000000, as the
    /// builder clamps them.
    static func overlayWrite(lowerdir: String, upper: String, script: String) throws {
        let work = try Harness.temporaryDirectory("work")
        let target = try Harness.temporaryDirectory("overlay-rw")
        defer {
            rmdir(target)
            try? FileManager.default.removeItem(atPath: work)
        }
        try mount(["-t", "overlay", "overlay", "-o", "lowerdir=\(lowerdir),upperdir=\(upper),workdir=\(work)", target])
        let result = try run("/bin/sh", ["-euc", "cd '\(target)'\n" + script])
        unmount(target)
        guard result.status == 0 else { throw SystemError("in the overlay: \(script): \(result.output)", "", errno: EIO) }
        let times = try run("/bin/sh", ["-c", "find '\(upper)' -exec touch -h -d @1600000000 {} +"])
        guard times.status == 0 else { throw SystemError("touch: \(times.output)", upper, errno: EIO) }
    }

    /// The names in the folder at `path` with their `S_IFMT` bits, in byte order of the names.
    static func listRaw(_ path: [UInt8]) throws -> [(name: [UInt8], type: UInt32)] {
        guard let dir = withC(path, { opendir($0) }) else { throw SystemError("opendir", TreeSnapshot.display(path)) }
        defer { closedir(dir) }
        var result: [(name: [UInt8], type: UInt32)] = []
        while let entry = readdir(dir) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { Array($0.prefix { $0 != 0 }) }
            if name == [0x2E] || name == [0x2E, 0x2E] { continue }
            var st = stat()
            guard withC(path + [0x2F] + name, { lstat($0, &st) }) == 0 else {
                throw SystemError("lstat", TreeSnapshot.display(path + [0x2F] + name))
            }
            result.append((name, UInt32(st.st_mode & S_IFMT)))
        }
        return result.sorted { $0.name.lexicographicallyPrecedes($1.name) }
    }

    static func unmount(_ target: String) {
        _ = try? run("/bin/umount", [target])
        rmdir(target)
    }

    private static func mount(_ arguments: [String]) throws {
        let result = try run("/bin/mount", arguments)
        if result.status != 0 {
            throw SystemError("mount \(arguments.joined(separator: " ")): \(result.output)", "", errno: EIO)
        }
    }

    /// Runs a tool (from `/`, as `Harness.process`) and returns its status and combined output.
    @discardableResult
    static func run(_ tool: String, _ arguments: [String]) throws -> (status: Int32, output: String) {
        let process = Harness.process(arguments, tool: tool)
        let pipe = Pipe()
        process.standardOutput = pipe
        process.standardError = pipe
        try process.run()
        let data = pipe.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return (process.terminationStatus, String(decoding: data, as: UTF8.self))
    }
}
