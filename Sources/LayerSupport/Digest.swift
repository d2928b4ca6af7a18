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
        try read(file: path, buffer: buffer, deadline: deadline) { bytes in
            hasher.update(bufferPointer: bytes)
            blocks?.update(bytes)
        }
        return Hash256(hasher.finalize())
    }

    /// The digests of a file's full blocks alone (`BlockDigests.Stream`).
    package static func blockDigests(
        file path: [UInt8], blockSize: Int, buffer: ReadBuffer, deadline: Deadline?
    ) throws -> [Hash256] {
        var stream = BlockDigests.Stream(blockSize: blockSize)
        try read(file: path, buffer: buffer, deadline: deadline) { stream.update($0) }
        return stream.blocks
    }

    private static func read(
        file path: [UInt8], buffer: ReadBuffer, deadline: Deadline?, _ take: (UnsafeRawBufferPointer) -> Void
    ) throws {
        let fd = RawPath.with(path) { open($0, O_RDONLY | O_CLOEXEC) }
        if fd < 0 { throw SystemError("read", RawPath.string(path)) }
        defer { close(fd) }
        let buffer = buffer.bytes
        var chunks = 0
        while true {
            chunks += 1
            if let deadline, chunks % 64 == 0 { try deadline.check("reading \(RawPath.display(path))") }
            let count = Glibc.read(fd, buffer.baseAddress, buffer.count)
            if count < 0 && errno == EINTR { continue }
            if count < 0 { throw SystemError("read", RawPath.string(path)) }
            if count == 0 { break }
            take(UnsafeRawBufferPointer(rebasing: buffer[0..<count]))
        }
    }
}
