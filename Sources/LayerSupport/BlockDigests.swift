import Crypto

/// The sha256 of each full block of files, by the files' content digests: what an export needs to
/// find a file's blocks in its block cache without reading the file. Whoever last held the bytes
/// takes them in the same pass (a pull, as it unpacks), so the export after it reads only what the
/// cache lacks. A tail shorter than a block has none: it goes to a fragment block, read anyway.
public struct BlockDigests: Sendable {
    public let blockSize: Int
    private var byContent: [Hash256: [Hash256]] = [:]

    public init(blockSize: Int) {
        precondition(blockSize > 0)
        self.blockSize = blockSize
    }

    /// The digests of file `content`'s full blocks, in order; nil when they were not taken.
    public subscript(content: Hash256) -> [Hash256]? { byContent[content] }

    public mutating func record(_ content: Hash256, _ blocks: [Hash256]) { byContent[content] = blocks }

    public mutating func merge(_ other: BlockDigests) {
        precondition(other.blockSize == blockSize)
        byContent.merge(other.byContent) { first, _ in first }
    }

    /// Digests one file's bytes as they arrive, in chunks of any size.
    public struct Stream {
        public let blockSize: Int
        private var hasher = SHA256()
        private var filled = 0
        public private(set) var blocks: [Hash256] = []
        /// The digest of a block of zeros, once a hole had a whole one.
        private var zeroBlock: Hash256?

        public init(blockSize: Int) {
            precondition(blockSize > 0)
            self.blockSize = blockSize
        }

        public mutating func update(_ bytes: UnsafeRawBufferPointer) {
            var rest = bytes
            while !rest.isEmpty {
                let take = min(rest.count, blockSize - filled)
                hasher.update(bufferPointer: UnsafeRawBufferPointer(rebasing: rest.prefix(take)))
                filled += take
                rest = UnsafeRawBufferPointer(rebasing: rest.dropFirst(take))
                if filled == blockSize {
                    blocks.append(Hash256(hasher.finalize()))
                    hasher = SHA256()
                    filled = 0
                }
            }
        }

        /// `update` with `count` zeros, a hole's: each whole block of them gets the digest of a
        /// block of zeros, hashed once.
        mutating func update(zeros count: Int) {
            var rest = count
            while rest > 0 {
                if filled == 0 && rest >= blockSize {
                    if zeroBlock == nil {
                        var zeros = SHA256()
                        var left = blockSize
                        while left > 0 {
                            let take = min(left, Zeros.buffer.count)
                            zeros.update(bufferPointer: UnsafeRawBufferPointer(rebasing: Zeros.buffer[0..<take]))
                            left -= take
                        }
                        zeroBlock = Hash256(zeros.finalize())
                    }
                    blocks.append(zeroBlock!)
                    rest -= blockSize
                    continue
                }
                let take = min(rest, blockSize - filled, Zeros.buffer.count)
                update(UnsafeRawBufferPointer(rebasing: Zeros.buffer[0..<take]))
                rest -= take
            }
        }
    }
}
