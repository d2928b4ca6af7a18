import Crypto
import LayerSupport
import Testing

/// Block digests taken as bytes stream in: the same whatever the chunks, full blocks only.
@Suite("Block digests")
struct BlockDigestsTests {
    @Test("chunks of any size and alignment give each full block's sha256, and no digest for the tail")
    func chunked() {
        let blockSize = 4096
        // Five blocks and a tail of 100 bytes, no two blocks alike.
        var bytes: [UInt8] = []
        var state: UInt32 = 1
        while bytes.count < 5 * blockSize + 100 {
            state = state &* 1_664_525 &+ 1_013_904_223
            bytes.append(UInt8(truncatingIfNeeded: state >> 24))
        }
        let expected = (0..<5).map { Hash256(SHA256.hash(data: bytes[($0 * blockSize)..<(($0 + 1) * blockSize)])) }
        for chunk in [1, 7, 100, blockSize - 1, blockSize, blockSize + 1, 3 * blockSize, bytes.count] {
            var stream = BlockDigests.Stream(blockSize: blockSize)
            var offset = 0
            while offset < bytes.count {
                let end = min(offset + chunk, bytes.count)
                bytes[offset..<end].withUnsafeBytes { stream.update($0) }
                offset = end
            }
            #expect(stream.blocks == expected, "chunks of \(chunk) bytes")
        }
        var empty = BlockDigests.Stream(blockSize: blockSize)
        [UInt8]().withUnsafeBytes { empty.update($0) }
        #expect(empty.blocks.isEmpty)
    }

    @Test("digests are kept by content; a merge keeps what was there")
    func byContent() {
        let a = Hash256.of(Array("a".utf8))
        let b = Hash256.of(Array("b".utf8))
        var first = BlockDigests(blockSize: 4096)
        first.record(a, [b])
        var second = BlockDigests(blockSize: 4096)
        second.record(a, [a])
        second.record(b, [a, b])
        first.merge(second)
        #expect(first[a] == [b])
        #expect(first[b] == [a, b])
        #expect(first[Hash256.of([])] == nil)
    }
}
