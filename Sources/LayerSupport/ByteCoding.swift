/// Little-endian fields and length-prefixed byte strings, appended.
package struct ByteWriter {
    package var bytes: [UInt8] = []

    package init() {}

    package mutating func put<T: FixedWidthInteger>(_ value: T) {
        withUnsafeBytes(of: value.littleEndian) { bytes.append(contentsOf: $0) }
    }

    package mutating func putBytes(_ value: [UInt8]) {
        put(UInt32(value.count))
        bytes += value
    }
}

/// Reads what `ByteWriter` wrote; every read is nil past the end.
package struct ByteReader {
    package let raw: UnsafeRawBufferPointer
    package var at = 0

    package init(raw: UnsafeRawBufferPointer) { self.raw = raw }

    package var isAtEnd: Bool { at == raw.count }

    package mutating func take(_ count: Int) -> UnsafeRawBufferPointer? {
        guard count >= 0, raw.count - at >= count else { return nil }
        defer { at += count }
        return UnsafeRawBufferPointer(rebasing: raw[at..<(at + count)])
    }

    private mutating func integer<T: FixedWidthInteger>(_: T.Type) -> T? {
        take(MemoryLayout<T>.size).map { T(littleEndian: $0.loadUnaligned(as: T.self)) }
    }

    package mutating func u8() -> UInt8? { integer(UInt8.self) }
    package mutating func u16() -> UInt16? { integer(UInt16.self) }
    package mutating func u32() -> UInt32? { integer(UInt32.self) }
    package mutating func u64() -> UInt64? { integer(UInt64.self) }

    package mutating func bytes() -> [UInt8]? {
        guard let count = u32(), let slice = take(Int(count)) else { return nil }
        return Array(slice)
    }
}
