import CLayerSupport
import Glibc

/// A file's bytes, read in chunks. The holes of a sparse file come as zeros from memory, without
/// reading them: for every 4 KiB of hole read, the kernel fills a new page of its cache with zeros,
/// which cost twice sha256's CPU time and took the host's memory for a file of gigabytes that takes
/// no disk (a disk image made with `truncate`, `lastlog` after a large uid).
package enum FileChunks {
    /// Reads the file at `path` through `buffer` into `take`, whose second argument says the chunk
    /// is a hole's. `check` runs before each chunk (a deadline: a file of holes can be as large as
    /// the filesystem allows). With `size`, exactly that many bytes, and a shorter file is an error
    /// (a layer's files never change); else to its end. `noFollow`: a symlink is an error.
    package static func read(
        _ path: [UInt8], size expected: Int64? = nil, noFollow: Bool = false, into buffer: UnsafeMutableRawBufferPointer,
        check: (() throws -> Void)? = nil, _ take: (UnsafeRawBufferPointer, Bool) throws -> Void
    ) throws {
        let fd = RawPath.with(path) { open($0, O_RDONLY | O_CLOEXEC | (noFollow ? O_NOFOLLOW : 0)) }
        if fd < 0 { throw SystemError("read", RawPath.string(path)) }
        defer { close(fd) }
        try read(fd, path, known: nil, size: expected, into: buffer, check: check, take)
    }

    /// What a caller's stat of a file said, so that reading it needs no fstat of its own.
    package struct Known: Sendable {
        package var size: Int64
        /// Fewer blocks than bytes: holes, maybe.
        package var sparse: Bool

        package init(_ st: stat) {
            size = Int64(st.st_size)
            sparse = Int64(st.st_blocks) * 512 < Int64(st.st_size)
        }
    }

    /// `read` of the regular file open at `fd` from its start, named `path` in errors; `known`, what
    /// the caller's stat of it said (else this fstats it). The caller closes `fd`.
    package static func read(
        _ fd: Int32, _ path: [UInt8], known: Known?, size expected: Int64? = nil, into buffer: UnsafeMutableRawBufferPointer,
        check: (() throws -> Void)? = nil, _ take: (UnsafeRawBufferPointer, Bool) throws -> Void
    ) throws {
        // Reads from where the descriptor is, at `start`, to `end` (nil: the end of the file).
        func readData(from start: Int64, to end: Int64?) throws {
            var at = start
            while end.map({ at < $0 }) ?? true {
                try check?()
                let want = end.map { min(buffer.count, Int($0 - at)) } ?? buffer.count
                let count = Glibc.read(fd, buffer.baseAddress, want)
                if count < 0 && errno == EINTR { continue }
                if count < 0 { throw SystemError("read", RawPath.string(path)) }
                if count == 0 {
                    guard end == nil || expected == nil else { throw SystemError("read", RawPath.string(path), errno: EIO) }
                    return
                }
                try take(UnsafeRawBufferPointer(rebasing: buffer[0..<count]), false)
                at += Int64(count)
            }
        }
        var file = known
        if file == nil {
            var st = stat()
            if fstat(fd, &st) == 0, st.st_mode & S_IFMT == S_IFREG { file = Known(st) }
        }
        guard let file, file.sparse else { return try readData(from: 0, to: expected) }
        // Holes, then the data after each, as SEEK_DATA and SEEK_HOLE find them. Past the size
        // fstat gave, the file is read as data, should it have grown.
        let size = min(file.size, expected ?? .max)
        var at: Int64 = 0
        while at < size {
            var data = Int64(lc_seek_extent(fd, off_t(at), 0))
            if data < 0 {
                // ENXIO: nothing but hole to the end. Any other error: read the rest as data.
                guard errno == ENXIO else { break }
                data = size
            }
            while at < min(data, size) {
                try check?()
                let count = Int(min(Int64(Zeros.buffer.count), min(data, size) - at))
                try take(UnsafeRawBufferPointer(rebasing: Zeros.buffer[0..<count]), true)
                at += Int64(count)
            }
            guard at < size else { break }
            let hole = Int64(lc_seek_extent(fd, off_t(at), 1))
            guard hole > at, lseek(fd, off_t(at), SEEK_SET) == at else { break }
            try readData(from: at, to: min(hole, size))
            at = min(hole, size)
        }
        guard lseek(fd, off_t(at), SEEK_SET) == at else { throw SystemError("read", RawPath.string(path)) }
        try readData(from: at, to: expected)
    }
}
