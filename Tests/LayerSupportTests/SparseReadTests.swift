import Crypto
import Foundation
import Glibc
import LayerSupport
import Testing

/// Files with holes, as `truncate` and `lseek` past the end make them, digested as the same bytes
/// written out. (That the holes are not read: `TreeScanTests.sparseFile`.)
@Suite("Sparse files")
struct SparseReadTests {
    /// A file's shape: its size and the bytes written at some offsets; the rest is hole.
    struct Shape {
        let name: String
        let size: Int
        let pieces: [(offset: Int, bytes: [UInt8])]

        /// Every byte of the file, holes as zeros.
        var bytes: [UInt8] {
            var all = [UInt8](repeating: 0, count: size)
            for piece in pieces {
                all.replaceSubrange(piece.offset..<(piece.offset + piece.bytes.count), with: piece.bytes)
            }
            return all
        }
    }

    static func noise(_ count: Int, seed: UInt32) -> [UInt8] {
        var state = seed
        return (0..<count).map { _ in
            state = state &* 1_664_525 &+ 1_013_904_223
            return UInt8(truncatingIfNeeded: state >> 24) | 1  // never zero, so a hole cannot pass for data
        }
    }

    static let block = 128 << 10
    static let shapes: [Shape] = [
        Shape(name: "all hole, an odd size", size: (1 << 20) + 1, pieces: []),
        Shape(name: "data first, hole to the end", size: 3 << 20, pieces: [(0, noise(4096, seed: 1))]),
        Shape(name: "hole first, data last", size: (3 << 20) + 10, pieces: [(3 << 20, noise(10, seed: 2))]),
        Shape(name: "one byte inside, unaligned", size: 4 << 20, pieces: [((1 << 20) + 100, [7])]),
        Shape(
            name: "a piece every 256 KiB", size: 8 << 20,
            pieces: (0..<32).map { ($0 * (256 << 10) + $0, noise(5, seed: UInt32(10 + $0))) }),
        Shape(name: "data across blocks", size: 2 << 20, pieces: [(3 * block + 7, noise(300 << 10, seed: 3))]),
        Shape(name: "a full block, then a block-aligned hole", size: 3 * block, pieces: [(0, noise(block, seed: 4))]),
        Shape(name: "no hole", size: 2 * block + 3, pieces: [(0, noise(2 * block + 3, seed: 5))]),
        Shape(name: "empty", size: 0, pieces: []),
    ]

    /// Writes `shape` at `path`, with holes (pieces written where they go, then the size set) or
    /// without (every byte written).
    static func write(_ shape: Shape, to path: String, holes: Bool) throws {
        let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw SystemError("create", path) }
        defer { close(fd) }
        let pieces = holes ? shape.pieces : [(0, shape.bytes)]
        for piece in pieces {
            let written = piece.bytes.withUnsafeBytes { pwrite(fd, $0.baseAddress, $0.count, off_t(piece.offset)) }
            guard written == piece.bytes.count else { throw SystemError("write", path) }
        }
        guard ftruncate(fd, off_t(shape.size)) == 0 else { throw SystemError("truncate", path) }
    }

    static func directory() throws -> String {
        let path = "/var/tmp/layerctl-test-sparse-" + UUID().uuidString
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: false)
        return path
    }

    @Test(
        "a sparse file's content and block digests are those of its bytes, holes first, last, inside, aligned or not, and of the same bytes written out",
        arguments: shapes.indices)
    func digests(_ index: Int) throws {
        let shape = Self.shapes[index]
        let folder = try Self.directory()
        defer { try? FileManager.default.removeItem(atPath: folder) }
        let bytes = shape.bytes
        let content = Hash256(SHA256.hash(data: bytes))
        for blockSize in [4096, Self.block] {
            let blocks = stride(from: 0, to: bytes.count - blockSize + 1, by: blockSize).map {
                Hash256(SHA256.hash(data: bytes[$0..<($0 + blockSize)]))
            }
            for holes in [true, false] {
                let path = folder + "/file-\(holes)"
                try Self.write(shape, to: path, holes: holes)
                var stream: BlockDigests.Stream? = BlockDigests.Stream(blockSize: blockSize)
                let digest = try Digest.contentHash(
                    file: Array(path.utf8), buffer: Digest.ReadBuffer(), deadline: nil, blocks: &stream)
                #expect(digest == content, "\(shape.name), holes \(holes)")
                #expect(stream?.blocks == blocks, "\(shape.name), holes \(holes), blocks of \(blockSize)")
                let alone = try Digest.blockDigests(
                    file: Array(path.utf8), blockSize: blockSize, buffer: Digest.ReadBuffer(), deadline: nil)
                #expect(alone == blocks, "\(shape.name), holes \(holes), blocks of \(blockSize) alone")
            }
        }
    }
}
