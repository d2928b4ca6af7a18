import CLayerSupport
import Crypto
import Foundation
import Glibc

/// sha256 in lower-case hex.
package enum Digest {
    package static func sha256(_ data: Data) -> String { hex(SHA256.hash(data: data)) }

    package static func hex<D: Sequence>(_ digest: D) -> String where D.Element == UInt8 {
        let digits = Array("0123456789abcdef".utf8)
        var text: [UInt8] = []
        for byte in digest {
            text.append(digits[Int(byte >> 4)])
            text.append(digits[Int(byte & 15)])
        }
        return String(decoding: text, as: UTF8.self)
    }

    /// Streams a file through sha256.
    package static func sha256(file path: String) throws -> String { try sha256(file: Array(path.utf8)) }

    /// sha256 of a file's contents, named by raw bytes.
    package static func sha256(file path: [UInt8]) throws -> String { try contentHash(file: path).hex }

    /// A buffer for reading files to digest, reused from one file to the next by one thread. At
    /// 128 KiB, what `read` copies in is still in the core's cache when sha256 reads it.
    package final class ReadBuffer {
        package init() {}
        let bytes = UnsafeMutableRawBufferPointer.allocate(byteCount: 128 << 10, alignment: 16)
        deinit { bytes.deallocate() }
    }

    /// sha256 of a file's contents, as a value; checks `deadline` every 8 MiB, since a sparse file
    /// can be as large as a filesystem allows without taking a block.
    package static func contentHash(
        file path: [UInt8], buffer: ReadBuffer = ReadBuffer(), deadline: Deadline? = nil
    ) throws -> Hash256 {
        var none: BlockDigests.Stream?
        return try contentHash(file: path, buffer: buffer, deadline: deadline, blocks: &none)
    }

    /// `contentHash`, also passing the bytes through `blocks`, when there is one, in the same read.
    package static func contentHash(
        file path: [UInt8], buffer: ReadBuffer, deadline: Deadline?, blocks: inout BlockDigests.Stream?
    ) throws -> Hash256 {
        var hasher = SHA256()
        try read(file: path, buffer: buffer, deadline: deadline) { bytes, hole in
            hasher.update(bufferPointer: bytes)
            if hole { blocks?.update(zeros: bytes.count) } else { blocks?.update(bytes) }
        }
        return Hash256(hasher.finalize())
    }

    /// The digests of a file's full blocks alone (`BlockDigests.Stream`).
    package static func blockDigests(
        file path: [UInt8], blockSize: Int, buffer: ReadBuffer, deadline: Deadline?
    ) throws -> [Hash256] {
        var stream = BlockDigests.Stream(blockSize: blockSize)
        try read(file: path, buffer: buffer, deadline: deadline) { bytes, hole in
            if hole { stream.update(zeros: bytes.count) } else { stream.update(bytes) }
        }
        return stream.blocks
    }

    /// Reads the file at `path` into `take`, in chunks. The holes of a sparse file are passed as
    /// zeros without reading them: the kernel fills a new page of its cache with zeros for every
    /// 4 KiB of hole read, which cost twice the hashing's CPU time and took the host's memory for
    /// a file of gigabytes that takes no disk (a disk image made with `truncate`, `lastlog` after
    /// a large uid). `take`'s second argument says the chunk is a hole's.
    private static func read(
        file path: [UInt8], buffer: ReadBuffer, deadline: Deadline?, _ take: (UnsafeRawBufferPointer, Bool) -> Void
    ) throws {
        let fd = RawPath.with(path) { open($0, O_RDONLY | O_CLOEXEC) }
        if fd < 0 { throw SystemError("read", RawPath.string(path)) }
        defer { close(fd) }
        let buffer = buffer.bytes
        var chunks = 0
        func check() throws {
            chunks += 1
            if let deadline, chunks % 64 == 0 { try deadline.check("reading \(RawPath.display(path))") }
        }
        // Reads from where the descriptor is to `end` (nil: the end of the file).
        func readData(to end: off_t?, from start: off_t) throws {
            var at = start
            while end.map({ at < $0 }) ?? true {
                try check()
                let want = end.map { min(buffer.count, Int($0 - at)) } ?? buffer.count
                let count = Glibc.read(fd, buffer.baseAddress, want)
                if count < 0 && errno == EINTR { continue }
                if count < 0 { throw SystemError("read", RawPath.string(path)) }
                if count == 0 { return }
                take(UnsafeRawBufferPointer(rebasing: buffer[0..<count]), false)
                at += off_t(count)
            }
        }
        var st = stat()
        guard fstat(fd, &st) == 0, st.st_mode & S_IFMT == S_IFREG, Int64(st.st_blocks) * 512 < Int64(st.st_size) else {
            return try readData(to: nil, from: 0)
        }
        // Holes, then the data after each, as SEEK_DATA and SEEK_HOLE find them; what lies past
        // the size fstat gave is read as data, should the file have grown.
        let size = off_t(st.st_size)
        var at: off_t = 0
        while at < size {
            var data = lc_seek_extent(fd, at, 0)
            if data < 0 {
                // ENXIO: nothing but hole to the end. Any other error: read it all as data.
                guard errno == ENXIO else { break }
                data = size
            }
            while at < min(data, size) {
                try check()
                let count = Int(min(off_t(Zeros.buffer.count), min(data, size) - at))
                take(UnsafeRawBufferPointer(rebasing: Zeros.buffer[0..<count]), true)
                at += off_t(count)
            }
            guard at < size else { break }
            let hole = lc_seek_extent(fd, at, 1)
            guard hole > at, lseek(fd, at, SEEK_SET) == at else { break }
            try readData(to: min(hole, size), from: at)
            at = min(hole, size)
        }
        guard lseek(fd, at, SEEK_SET) == at else { throw SystemError("read", RawPath.string(path)) }
        try readData(to: nil, from: at)
    }
}
