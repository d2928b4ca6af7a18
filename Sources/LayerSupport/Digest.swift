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
        let fd = RawPath.with(path) { open($0, O_RDONLY | O_CLOEXEC) }
        if fd < 0 { throw SystemError("read", RawPath.string(path)) }
        defer { close(fd) }
        return try contentHash(open: fd, path, known: nil, buffer: buffer, deadline: deadline, blocks: &blocks)
    }

    /// `contentHash` of the file open at `fd` (at its start; the caller closes it), named `path` in
    /// errors, of which `known` says what the caller's stat of it said.
    package static func contentHash(
        open fd: Int32, _ path: [UInt8], known: FileChunks.Known?, buffer: ReadBuffer, deadline: Deadline?,
        blocks: inout BlockDigests.Stream?
    ) throws -> Hash256 {
        var hasher = SHA256()
        try FileChunks.read(fd, path, known: known, into: buffer.bytes, check: deadline.map { check($0, every: 64, reading: path) }) {
            bytes, hole in
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
        try FileChunks.read(path, into: buffer.bytes, check: deadline.map { check($0, every: 64, reading: path) }) {
            bytes, hole in
            if hole { stream.update(zeros: bytes.count) } else { stream.update(bytes) }
        }
        return stream.blocks
    }

    /// A check of `deadline` at every `every`th chunk of the file at `path`.
    private static func check(_ deadline: Deadline, every: Int, reading path: [UInt8]) -> () throws -> Void {
        var chunks = 0
        return {
            chunks += 1
            if chunks % every == 0 { try deadline.check("reading \(RawPath.display(path))") }
        }
    }
}
