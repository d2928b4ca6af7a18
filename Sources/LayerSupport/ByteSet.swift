/// A set of ASCII bytes, written as a bracket expression's inside is (`a-z0-9._-`), for the shapes
/// of names that layer files and the store take: one byte of a first set, then bytes of a second.
///
/// Where a Regex literal would say the same: Swift builds a literal's Regex each time the
/// expression runs, parsing and compiling its pattern, some 2 ms of a build's CPU for the few
/// names of a layer file. And a Regex matches Characters, where `\d` takes digits of every script.
package struct ByteSet: Sendable {
    private var low: UInt64 = 0
    private var high: UInt64 = 0

    /// `members`: bytes and ranges `x-y`; a `-` first or last is itself.
    package init(_ members: String) {
        let bytes = Array(members.utf8)
        var index = 0
        while index < bytes.count {
            if index + 2 < bytes.count && bytes[index + 1] == UInt8(ascii: "-") {
                for byte in bytes[index]...bytes[index + 2] { insert(byte) }
                index += 3
            } else {
                insert(bytes[index])
                index += 1
            }
        }
    }

    private mutating func insert(_ byte: UInt8) {
        precondition(byte < 128, "ByteSet holds ASCII bytes")
        if byte < 64 { low |= 1 << UInt64(byte) } else { high |= 1 << UInt64(byte - 64) }
    }

    package func contains(_ byte: UInt8) -> Bool {
        byte < 64 ? low & (1 << UInt64(byte)) != 0 : byte < 128 && high & (1 << UInt64(byte - 64)) != 0
    }

    /// Whether `bytes` are all in this set, and at least one.
    package func holdsAll(_ bytes: some Collection<UInt8>) -> Bool {
        !bytes.isEmpty && bytes.allSatisfy(contains)
    }

    /// Whether `bytes` are one byte of `first`, then any number of `rest`'s.
    package static func isName(_ bytes: some Collection<UInt8>, first: ByteSet, rest: ByteSet) -> Bool {
        guard let head = bytes.first, first.contains(head) else { return false }
        return bytes.dropFirst().allSatisfy(rest.contains)
    }
}
