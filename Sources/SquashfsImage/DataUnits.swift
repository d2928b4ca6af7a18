import CLayerSupport
import CSquashfs
import Crypto
import Glibc
import LayerEntries
import LayerSupport
import Synchronization

// The units of an image's data as the workers make them: what they share, what each makes, and
// the tally of bytes and blocks.

/// Bytes read and written and blocks compressed, reused or of zeros, counted by the workers at once.
final class DataTally: Sendable {
    private let read = Atomic<UInt64>(0)
    private let readFromFiles = Atomic<UInt64>(0)
    private let written = Atomic<UInt64>(0)
    private let hitCount = Atomic<Int>(0)
    private let missCount = Atomic<Int>(0)
    private let zeroCount = Atomic<Int>(0)

    var bytesIn: UInt64 { read.load(ordering: .relaxed) }
    /// File data read from the files themselves; the rest came from the cache unread.
    var bytesRead: UInt64 { readFromFiles.load(ordering: .relaxed) }
    var hits: Int { hitCount.load(ordering: .relaxed) }
    var misses: Int { missCount.load(ordering: .relaxed) }
    /// Blocks of zeros, stored as nothing (a sparse block).
    var zeros: Int { zeroCount.load(ordering: .relaxed) }

    /// Bytes on disk per byte of file data, over the blocks finished so far; nil before the first.
    var ratio: Double? {
        let input = read.load(ordering: .relaxed)
        return input > 0 ? Double(written.load(ordering: .relaxed)) / Double(input) : nil
    }

    func countRead(_ bytes: Int) { readFromFiles.add(UInt64(bytes), ordering: .relaxed) }

    func count(in bytesIn: Int, out bytesOut: Int, fromCache: Bool) {
        read.add(UInt64(bytesIn), ordering: .relaxed)
        written.add(UInt64(bytesOut), ordering: .relaxed)
        if fromCache { hitCount.add(1, ordering: .relaxed) } else { missCount.add(1, ordering: .relaxed) }
    }

    func countZeros(_ bytesIn: Int) {
        read.add(UInt64(bytesIn), ordering: .relaxed)
        zeroCount.add(1, ordering: .relaxed)
    }
}

/// What every worker shares: the tree, its layout, the cache, the digests of blocks known unread,
/// and the compressor to copy.
final class UnitContext: @unchecked Sendable {
    // @unchecked: all immutable, except through the thread-safe cache and tally; the compressor is
    // only copied, never used.
    let tree: MergedTree
    let layout: DataLayout
    let cache: BlockCache?
    let knownBlocks: BlockDigests?
    let compressor: UnsafeMutablePointer<sqfs_compressor_t>
    let tally: DataTally

    init(
        tree: MergedTree, layout: DataLayout, cache: BlockCache?, knownBlocks: BlockDigests?,
        compressor: UnsafeMutablePointer<sqfs_compressor_t>, tally: DataTally
    ) {
        self.tree = tree
        self.layout = layout
        self.cache = cache
        self.knownBlocks = knownBlocks.flatMap { $0.blockSize == layout.blockSize ? $0 : nil }
        self.compressor = compressor
        self.tally = tally
    }

    /// What a data block's recipe starts with; its file's content digest and its number follow.
    static let dataRecipe = Array("data block".utf8)
    /// What a fragment block's recipe starts with; each tail's content digest, offset and length
    /// follow.
    static let fragmentRecipe = Array("fragment block".utf8)

    /// The cache key of block `block` of file `file` by its recipe; nil without a cache or a content
    /// digest.
    func recipe(file: Int, block: Int) -> Hash256? {
        guard let cache, let content = tree.entries[layout.files[file].entry].content else { return nil }
        return cache.key { hasher in
            hasher.update(data: Self.dataRecipe)
            content.feed(&hasher)
            withUnsafeBytes(of: UInt64(block).littleEndian) { hasher.update(bufferPointer: $0) }
        }
    }

    /// The cache key of fragment block `block` by its recipe; nil without a cache or without the
    /// content digest of one of its tails.
    func recipe(fragment block: Int) -> Hash256? {
        let pieces = layout.fragments[block]
        guard let cache, pieces.allSatisfy({ tree.entries[layout.files[$0.file].entry].content != nil }) else {
            return nil
        }
        return cache.key { hasher in
            hasher.update(data: Self.fragmentRecipe)
            for piece in pieces {
                tree.entries[layout.files[piece.file].entry].content!.feed(&hasher)
                withUnsafeBytes(of: (piece.offset.littleEndian, UInt64(piece.length).littleEndian)) {
                    hasher.update(bufferPointer: $0)
                }
            }
        }
    }

    /// The cache key of block `block` of file `file` by the digest of its bytes, when `knownBlocks`
    /// has it.
    func digestKey(file: Int, block: Int) -> Hash256? {
        guard let cache, let knownBlocks, let content = tree.entries[layout.files[file].entry].content,
            let digests = knownBlocks[content], block < digests.count
        else { return nil }
        return cache.key(digest: digests[block])
    }

    /// Unit `number` as copies of cached blocks, when the cache holds every one of them by recipe
    /// or, for data blocks, by a digest `knownBlocks` has; such a block is remembered by its recipe
    /// too, for the next export.
    func cachedOutput(_ number: Int) -> UnitOutput? {
        guard let cache else { return nil }
        let output = UnitOutput(capacity: 0)
        var bytesIn = 0
        switch layout.units[number] {
        case .blocks(let file, let first, let count):
            for block in first..<(first + count) {
                let recipe = recipe(file: file, block: block)
                if let recipe, let location = cache.location(recipe) {
                    output.append(cached: location.word, pack: cache.packFile(location), offset: location.offset)
                    continue
                }
                guard let key = digestKey(file: file, block: block), let location = cache.location(key) else { return nil }
                output.append(cached: location.word, pack: cache.packFile(location), offset: location.offset)
                if let recipe { output.remember(.alias(recipe, location)) }
            }
            bytesIn = count * layout.blockSize
        case .fragment(let block):
            guard let key = recipe(fragment: block), let location = cache.location(key) else { return nil }
            output.append(cached: location.word, pack: cache.packFile(location), offset: location.offset)
            bytesIn = layout.fragments[block].reduce(0) { $0 + $1.length }
        }
        for word in output.words {
            if word == 0 {
                tally.countZeros(bytesIn / output.words.count)
            } else {
                tally.count(in: bytesIn / output.words.count, out: Int(word & 0x00FF_FFFF), fromCache: true)
            }
        }
        return output
    }
}

/// A unit's blocks as they go on disk, in order: bytes a worker made, or ranges of block-cache
/// packs, which the writing thread copies inside the kernel without reading them.
final class UnitOutput: @unchecked Sendable {
    // @unchecked: made by one worker, then handed whole to the writing thread.
    enum Piece {
        case made(offset: Int, length: Int)
        case cached(pack: Int32, offset: UInt64, length: Int)

        var length: Int {
            switch self {
            case .made(_, let length), .cached(_, _, let length): length
            }
        }
    }

    /// What the block cache should learn once the unit is written; the writing thread tells it,
    /// so that packs hold blocks in image order and later copies join up.
    enum Note {
        /// A block this unit made, at `offset` in `buffer`, under its keys.
        case made(keys: [Hash256], word: UInt32, offset: Int)
        /// A further key for a block the cache holds.
        case alias(Hash256, BlockCache.Location)
    }

    private let capacity: Int
    private(set) var buffer: UnsafeMutableRawPointer?
    private(set) var used = 0
    private(set) var pieces: [Piece] = []
    private(set) var words: [UInt32] = []
    private(set) var notes: [Note] = []

    init(capacity: Int) { self.capacity = capacity }

    deinit { buffer?.deallocate() }

    /// Where the next made block goes; `append(made:)` then takes it.
    var next: UnsafeMutableRawPointer {
        if buffer == nil { buffer = UnsafeMutableRawPointer.allocate(byteCount: max(capacity, 1), alignment: 16) }
        return buffer! + used
    }

    func remember(_ note: Note) { notes.append(note) }

    func append(made word: UInt32) {
        let length = Int(word & 0x00FF_FFFF)
        if length > 0 {
            if case .made(let offset, let previous) = pieces.last {
                pieces[pieces.count - 1] = .made(offset: offset, length: previous + length)
            } else {
                pieces.append(.made(offset: used, length: length))
            }
        }
        used += length
        words.append(word)
    }

    /// Appends a block from a pack, joined to the previous piece when it follows it there.
    func append(cached word: UInt32, pack: Int32, offset: UInt64) {
        let length = Int(word & 0x00FF_FFFF)
        if length > 0 {
            if case .cached(pack, let start, let previous) = pieces.last, start + UInt64(previous) == offset {
                pieces[pieces.count - 1] = .cached(pack: pack, offset: start, length: previous + length)
            } else {
                pieces.append(.cached(pack: pack, offset: offset, length: length))
            }
        }
        words.append(word)
    }
}
