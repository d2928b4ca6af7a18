import Crypto
import LayerSupport
import Testing

@testable import SquashfsImage

@Suite("Block-cache index")
struct BlockIndexTests {
    let records = (0..<3).map { number in
        BlockIndex.Record(
            key: Hash256(SHA256.hash(data: [UInt8(number)])), offset: UInt64(number * 1000),
            word: number == 2 ? (1 << 24) | 500 : 1000)
    }

    @Test("records come back as written; the uncompressed bit is not part of a block's length")
    func roundTrip() throws {
        let bytes = BlockIndex.encode(records)
        #expect(bytes.count == 8 + 3 * BlockIndex.recordSize + 32)
        #expect(try BlockIndex.decode(bytes) == records)
        #expect(try BlockIndex.decode(BlockIndex.encode([])) == [])
        #expect(records[2].length == 500)
        try BlockIndex.check(records, packSize: 2500)
        #expect(throws: BlockIndex.Damage.pastPackEnd) { try BlockIndex.check(records, packSize: 2499) }
    }

    @Test("another format, a cut, an edited byte, and an empty file are each refused with their reason")
    func damage() {
        let bytes = BlockIndex.encode(records)
        var other = bytes
        other[7] = UInt8(ascii: "2")
        #expect(throws: BlockIndex.Damage.notAnIndex) { try BlockIndex.decode(other) }
        #expect(throws: BlockIndex.Damage.notAnIndex) { try BlockIndex.decode([]) }
        for cut in [1, 20, BlockIndex.recordSize + 1] {
            #expect(throws: BlockIndex.Damage.cutShort) { try BlockIndex.decode(Array(bytes.dropLast(cut))) }
        }
        // A whole record cut keeps the length rule; the checksum catches it.
        #expect(throws: BlockIndex.Damage.checksum) {
            try BlockIndex.decode(Array(bytes.dropLast(BlockIndex.recordSize)))
        }
        for position in [8, 8 + 32, bytes.count - 1] {
            var edited = bytes
            edited[position] ^= 1
            #expect(throws: BlockIndex.Damage.checksum) { try BlockIndex.decode(edited) }
        }
    }
}
