import Crypto
import Glibc

/// A sha256 value held as four words, so that tables keyed by it are cheap to hash and compare.
public struct Hash256: Hashable, Sendable {
    public var words: (UInt64, UInt64, UInt64, UInt64)

    /// The 32 bytes at `bytes`.
    public init(_ bytes: UnsafeRawPointer) {
        words = (
            bytes.loadUnaligned(as: UInt64.self), bytes.loadUnaligned(fromByteOffset: 8, as: UInt64.self),
            bytes.loadUnaligned(fromByteOffset: 16, as: UInt64.self),
            bytes.loadUnaligned(fromByteOffset: 24, as: UInt64.self)
        )
    }

    public init(_ digest: SHA256.Digest) {
        var words = (UInt64(0), UInt64(0), UInt64(0), UInt64(0))
        digest.withUnsafeBytes { raw in withUnsafeMutableBytes(of: &words) { $0.copyMemory(from: raw) } }
        self.words = words
    }

    /// The digest of everything in `parts`, one after another.
    public static func of(_ parts: [UInt8]...) -> Hash256 {
        var hasher = SHA256()
        for part in parts { hasher.update(data: part) }
        return Hash256(hasher.finalize())
    }

    public static func == (a: Hash256, b: Hash256) -> Bool { a.words == b.words }

    /// One word is enough: the value is already uniformly distributed.
    public func hash(into hasher: inout Hasher) { hasher.combine(words.0) }

    /// Feeds the 32 bytes to `hasher`.
    public func feed(_ hasher: inout SHA256) { withUnsafeBytes(of: words) { hasher.update(bufferPointer: $0) } }

    /// The 32 bytes, in digest order.
    public var bytes: [UInt8] { withUnsafeBytes(of: words) { Array($0) } }

    public var hex: String { Digest.hex(bytes) }
}
