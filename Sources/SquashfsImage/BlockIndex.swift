import Crypto
import LayerSupport

/// The bytes of a block-cache index, `NAME.index`: the magic, then per block its key (32 bytes),
/// the offset of its bytes in the pack (8, little-endian) and its squashfs size word (4), then a
/// sha256 of everything before it. Pure: reading the file and opening the pack are the cache's.
enum BlockIndex {
    static let magic = Array("LCBI0003".utf8)
    static let recordSize = 32 + 8 + 4

    struct Record: Equatable {
        var key: Hash256
        var offset: UInt64
        var word: UInt32

        /// Bytes of the block on disk: the size word without its "stored uncompressed" bit.
        var length: Int { Int(word & 0x00FF_FFFF) }
    }

    /// Why an index cannot be used; the index is removed with its pack.
    enum Damage: Error, Equatable, CustomStringConvertible {
        case notAnIndex, cutShort, checksum, pastPackEnd

        var description: String {
            switch self {
            case .notAnIndex: "not a block index of this layerctl"
            case .cutShort: "cut short"
            case .checksum: "its checksum does not match"
            case .pastPackEnd: "its pack is shorter than the index says"
            }
        }
    }

    static func encode(_ records: [Record]) -> [UInt8] {
        var index = ByteWriter()
        index.bytes = magic
        index.bytes.reserveCapacity(magic.count + records.count * recordSize + 32)
        for record in records {
            index.bytes += record.key.bytes
            index.put(record.offset)
            index.put(record.word)
        }
        index.bytes += Array(SHA256.hash(data: index.bytes))
        return index.bytes
    }

    /// The records of `index`, checked: the magic, whole records, and the checksum.
    static func decode(_ index: [UInt8]) throws(Damage) -> [Record] {
        guard index.count >= magic.count, index.prefix(magic.count).elementsEqual(magic) else { throw .notAnIndex }
        let body = index.count - 32
        guard body >= magic.count, (body - magic.count) % recordSize == 0 else { throw .cutShort }
        guard SHA256.hash(data: index[..<body]).elementsEqual(index[body...]) else { throw .checksum }
        var records: [Record] = []
        records.reserveCapacity((body - magic.count) / recordSize)
        index.withUnsafeBytes { raw in
            var at = magic.count
            while at < body {
                records.append(
                    Record(
                        key: Hash256(raw.baseAddress! + at),
                        offset: UInt64(littleEndian: raw.loadUnaligned(fromByteOffset: at + 32, as: UInt64.self)),
                        word: UInt32(littleEndian: raw.loadUnaligned(fromByteOffset: at + 40, as: UInt32.self))))
                at += recordSize
            }
        }
        return records
    }

    /// Checks that every record's bytes lie inside a pack of `packSize` bytes: a pack shorter than its
    /// index says (a damaged disk, a copy cut short) is not used at all.
    static func check(_ records: [Record], packSize: UInt64) throws(Damage) {
        guard records.allSatisfy({ $0.offset + UInt64($0.length) <= packSize }) else { throw .pastPackEnd }
    }
}
