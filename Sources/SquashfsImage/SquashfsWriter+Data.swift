import CLayerSupport
import CSquashfs
import Crypto
import Glibc
import LayerEntries
import LayerSupport
import Synchronization

/// Frees a libsquashfs object (sqfs_destroy on an opaque handle).
func sqfsDestroy(_ object: OpaquePointer?) {
    if let object { sqfs_destroy(UnsafeMutableRawPointer(object)) }
}

extension SquashfsWriter {
    /// Writes the file data in the order `DataLayout` fixes: worker threads read and compress the
    /// units (or copy them from the block cache) while this thread writes the finished ones in
    /// order. Each distinct file's inode lands in `inodes[index]`. Returns the fragment table,
    /// which the caller writes out and frees.
    func writeData(
        _ tree: MergedTree, into inodes: UnsafeMutablePointer<UnsafeMutablePointer<sqfs_inode_generic_t>?>,
        progress: (Progress) -> Void
    ) throws -> OpaquePointer {
        let layout = DataLayout(tree, blockSize: Int(options.blockSize))
        guard let fragments = sqfs_frag_table_create(0) else {
            throw SquashfsError("create the fragment table", SQFS_ERROR_ALLOC.rawValue)
        }
        do {
            try writeUnits(layout, tree, fragments: fragments, inodes: inodes, progress: progress)
        } catch {
            sqfsDestroy(fragments)
            throw error
        }
        return fragments
    }

    private func writeUnits(
        _ layout: DataLayout, _ tree: MergedTree, fragments: OpaquePointer,
        inodes: UnsafeMutablePointer<UnsafeMutablePointer<sqfs_inode_generic_t>?>, progress: (Progress) -> Void
    ) throws {
        var starts = [UInt64](repeating: 0, count: layout.files.count)
        var words = [[UInt32]](repeating: [], count: layout.files.count)
        let context = UnitContext(tree: tree, layout: layout, cache: cache, compressor: compressor, tally: tally)
        var reported: UInt64 = 0
        var end = size
        var writtenBack = end
        var copy = PendingCopy(fd: fd, path: output)
        // Units whose every block the cache holds by recipe are copied by this thread; only the
        // others go to the workers, so a re-export hands little to them.
        let cached = layout.units.indices.map { context.cachedOutput($0) }
        let jobs = layout.units.indices.filter { cached[$0] == nil }
        var nextUnit = 0
        func write(_ number: Int, _ output: UnitOutput) throws {
            let at = end
            for piece in output.pieces {
                switch piece {
                case .made(let offset, let length):
                    try copy.flush()
                    try FileSystem.writeAll(
                        fd, UnsafeRawBufferPointer(start: output.buffer! + offset, count: length), at: end,
                        to: self.output)
                case .cached(let pack, let offset, let length):
                    try copy.add(pack: pack, offset: offset, length: length, at: end)
                }
                end += UInt64(piece.length)
            }
            if let cache {
                for note in output.notes {
                    switch note {
                    case .made(let keys, let word, let offset):
                        let bytes = UnsafeRawBufferPointer(
                            start: output.buffer.map { $0 + offset }, count: Int(word & 0x00FF_FFFF))
                        cache.store(keys, word: word, bytes: bytes)
                    case .alias(let key, let location):
                        cache.alias(key, to: location)
                    }
                }
            }
            // Start writing to disk now, so that the fsync at the end finds little left to do.
            if end - writtenBack >= 8 << 20 {
                try copy.flush()
                lc_start_writeback(fd, writtenBack, end - writtenBack)
                writtenBack = end
            }
            switch layout.units[number] {
            case .blocks(let index, let first, _):
                if first == 0 { starts[index] = at }
                words[index] += output.words
            case .fragment(let block):
                var index: UInt32 = 0
                try sqfs("record a fragment block") { sqfs_frag_table_append(fragments, at, output.words[0], &index) }
                precondition(Int(index) == block, "fragment blocks are written in layout order")
            }
            let bytesIn = tally.bytesIn
            if bytesIn - reported >= 4 << 20 {
                reported = bytesIn
                progress(Progress(bytesIn: bytesIn, bytesOut: end, ratio: tally.ratio))
            }
            nextUnit = number + 1
        }
        // Deep enough that a slow unit does not idle the other workers; each waiting unit holds at
        // most `blocksPerUnit` blocks.
        let work = OrderedWork<UnitOutput>(count: jobs.count, window: 4 * options.jobs + 4)
        try work.run(
            workers: options.jobs,
            makeJob: {
                let worker = try UnitWorker(context)
                return { job in try worker.run(jobs[job]) }
            }
        ) { job, output in
            while nextUnit < jobs[job] { try write(nextUnit, cached[nextUnit]!) }
            try write(jobs[job], output)
        }
        while nextUnit < layout.units.count { try write(nextUnit, cached[nextUnit]!) }
        try copy.flush()
        lc_sqfs_fd_file_grow(file, end)
        for (index, number) in layout.fileOfEntry.enumerated()
        where number >= 0 && tree.entries[index].hardLinkTarget == nil {
            let data = layout.files[number]
            let sparse = UInt64(words[number].count { $0 == 0 }) * UInt64(options.blockSize)
            let inode = words[number].withUnsafeBufferPointer { sizes in
                lc_sqfs_file_inode(
                    data.blocks > 0 ? starts[number] : 0, data.size, sparse,
                    data.fragment.map { UInt32($0.block) } ?? 0xFFFF_FFFF,
                    data.fragment.map { UInt32($0.offset) } ?? 0xFFFF_FFFF, sizes.baseAddress, sizes.count)
            }
            guard let inode else { throw SquashfsError("create a file inode", SQFS_ERROR_ALLOC.rawValue) }
            inodes[index] = inode
        }
    }
}

/// Cached blocks waiting to be copied into the image: neighbours in a pack that are neighbours in
/// the image too are copied with one call.
private struct PendingCopy {
    let fd: Int32
    let path: String
    private var pending: (pack: Int32, offset: UInt64, length: Int, at: UInt64)?

    init(fd: Int32, path: String) {
        self.fd = fd
        self.path = path
    }

    mutating func add(pack: Int32, offset: UInt64, length: Int, at: UInt64) throws {
        if let run = pending, run.pack == pack, run.offset + UInt64(run.length) == offset,
            run.at + UInt64(run.length) == at
        {
            pending!.length += length
            return
        }
        try flush()
        pending = (pack, offset, length, at)
    }

    mutating func flush() throws {
        guard let run = pending else { return }
        pending = nil
        if lc_copy_range(run.pack, run.offset, fd, run.at, run.length) != 0 {
            throw SystemError("copy cached blocks into", path)
        }
    }
}

/// Bytes read and written and blocks compressed or reused, counted by the workers at once.
final class DataTally: Sendable {
    private let read = Atomic<UInt64>(0)
    private let written = Atomic<UInt64>(0)
    private let hitCount = Atomic<Int>(0)
    private let missCount = Atomic<Int>(0)

    var bytesIn: UInt64 { read.load(ordering: .relaxed) }
    var hits: Int { hitCount.load(ordering: .relaxed) }
    var misses: Int { missCount.load(ordering: .relaxed) }

    /// Bytes on disk per byte of file data, over the blocks finished so far; nil before the first.
    var ratio: Double? {
        let input = read.load(ordering: .relaxed)
        return input > 0 ? Double(written.load(ordering: .relaxed)) / Double(input) : nil
    }

    func count(in bytesIn: Int, out bytesOut: Int, fromCache: Bool) {
        read.add(UInt64(bytesIn), ordering: .relaxed)
        written.add(UInt64(bytesOut), ordering: .relaxed)
        if fromCache { hitCount.add(1, ordering: .relaxed) } else { missCount.add(1, ordering: .relaxed) }
    }
}

/// What every worker shares: the tree, its layout, the cache and the compressor to copy.
private final class UnitContext: @unchecked Sendable {
    // @unchecked: all immutable, except through the thread-safe cache and tally; the compressor is
    // only copied, never used.
    let tree: MergedTree
    let layout: DataLayout
    let cache: BlockCache?
    let compressor: UnsafeMutablePointer<sqfs_compressor_t>
    let tally: DataTally

    init(
        tree: MergedTree, layout: DataLayout, cache: BlockCache?, compressor: UnsafeMutablePointer<sqfs_compressor_t>,
        tally: DataTally
    ) {
        self.tree = tree
        self.layout = layout
        self.cache = cache
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

    /// Unit `number` as copies of cached blocks, when the cache holds every one of them by recipe.
    func cachedOutput(_ number: Int) -> UnitOutput? {
        guard let cache else { return nil }
        let output = UnitOutput(capacity: 0)
        var bytesIn = 0
        switch layout.units[number] {
        case .blocks(let file, let first, let count):
            for block in first..<(first + count) {
                guard let key = recipe(file: file, block: block), let location = cache.location(key) else { return nil }
                output.append(cached: location.word, pack: cache.packFile(location), offset: location.offset)
            }
            bytesIn = count * layout.blockSize
        case .fragment(let block):
            guard let key = recipe(fragment: block), let location = cache.location(key) else { return nil }
            output.append(cached: location.word, pack: cache.packFile(location), offset: location.offset)
            bytesIn = layout.fragments[block].reduce(0) { $0 + $1.length }
        }
        for word in output.words {
            tally.count(in: bytesIn / output.words.count, out: Int(word & 0x00FF_FFFF), fromCache: true)
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

/// One worker's compressor and buffers, and the work on one unit.
private final class UnitWorker {
    private let context: UnitContext
    private let compressor: UnsafeMutablePointer<sqfs_compressor_t>
    private let input: UnsafeMutableRawPointer
    private let blockSize: Int

    init(_ context: UnitContext) throws {
        self.context = context
        blockSize = context.layout.blockSize
        guard let copy = sqfs_copy(UnsafeRawPointer(context.compressor)) else {
            throw SquashfsError("start a compression worker", SQFS_ERROR_ALLOC.rawValue)
        }
        compressor = copy.assumingMemoryBound(to: sqfs_compressor_t.self)
        input = UnsafeMutableRawPointer.allocate(byteCount: blockSize * DataLayout.blocksPerUnit, alignment: 4096)
    }

    deinit {
        sqfs_destroy(UnsafeMutableRawPointer(compressor))
        input.deallocate()
    }

    func run(_ number: Int) throws -> UnitOutput {
        switch context.layout.units[number] {
        case .blocks(let file, let first, let count): try blocks(file, first: first, count: count)
        case .fragment(let block): try fragment(block)
        }
    }

    private func blocks(_ number: Int, first: Int, count: Int) throws -> UnitOutput {
        let file = context.layout.files[number]
        let entry = context.tree.entries[file.entry]
        let output = UnitOutput(capacity: count * blockSize)
        var loaded = false
        for block in first..<(first + count) {
            let recipe = context.recipe(file: number, block: block)
            if let recipe, copyCached(recipe, bytesIn: blockSize, into: output) { continue }
            if !loaded {
                try readFully(
                    entry.source, at: UInt64(first) * UInt64(blockSize), count: count * blockSize, into: input)
                loaded = true
            }
            let data = UnsafeRawBufferPointer(start: input + (block - first) * blockSize, count: blockSize)
            if data.allSatisfy({ $0 == 0 }) {
                if let recipe { output.remember(.made(keys: [recipe], word: 0, offset: 0)) }
                output.append(made: 0)
                context.tally.count(in: blockSize, out: 0, fromCache: false)
                continue
            }
            try compress(data, recipe: recipe, into: output)
        }
        return output
    }

    private func fragment(_ block: Int) throws -> UnitOutput {
        let pieces = context.layout.fragments[block]
        let output = UnitOutput(capacity: blockSize)
        // The writing thread looked the recipe up before handing the unit out, and no other block
        // of this export has the same tails, so it is only needed to remember the block by.
        let recipe = context.recipe(fragment: block)
        var filled = 0
        for piece in pieces {
            let source = context.tree.entries[context.layout.files[piece.file].entry].source
            try readFully(source, at: piece.offset, count: piece.length, into: input + filled)
            filled += piece.length
        }
        try compress(UnsafeRawBufferPointer(start: input, count: filled), recipe: recipe, into: output)
        return output
    }

    /// Appends the cached block `key` names; false when there is none.
    private func copyCached(_ key: Hash256, bytesIn: Int, into output: UnitOutput) -> Bool {
        guard let cache = context.cache, let location = cache.location(key) else { return false }
        output.append(cached: location.word, pack: cache.packFile(location), offset: location.offset)
        context.tally.count(in: bytesIn, out: location.length, fromCache: true)
        return true
    }

    /// Appends `data` as it goes on disk: from the cache when a block of the same bytes is there,
    /// else compressed (or as it is, when compressing would not make it smaller) and remembered.
    private func compress(_ data: UnsafeRawBufferPointer, recipe: Hash256?, into output: UnitOutput) throws {
        let cache = context.cache
        let key = cache?.key(of: data)
        if let cache, let key, let location = cache.location(key) {
            output.append(cached: location.word, pack: cache.packFile(location), offset: location.offset)
            // Known by its bytes but not by its recipe: remember the recipe too, for the next export.
            if let recipe { output.remember(.alias(recipe, location)) }
            context.tally.count(in: data.count, out: location.length, fromCache: true)
            return
        }
        let target = output.next
        let result = compressor.pointee.do_block(
            compressor, data.baseAddress!.assumingMemoryBound(to: UInt8.self), UInt32(data.count),
            target.assumingMemoryBound(to: UInt8.self), UInt32(data.count))
        if result < 0 { throw SquashfsError("compress a block", result) }
        let word: UInt32
        if result == 0 {
            target.copyMemory(from: data.baseAddress!, byteCount: data.count)
            word = UInt32(data.count) | (1 << 24)
        } else {
            word = UInt32(result)
        }
        if let key {
            output.remember(.made(keys: [key] + (recipe.map { [$0] } ?? []), word: word, offset: output.used))
        }
        output.append(made: word)
        context.tally.count(in: data.count, out: Int(word & 0x00FF_FFFF), fromCache: false)
    }

    /// Reads `count` bytes at `offset` of the file at `path`; a file shorter than its layer's
    /// record says is an error, since layer trees never change.
    private func readFully(_ path: [UInt8], at offset: UInt64, count: Int, into buffer: UnsafeMutableRawPointer) throws
    {
        let fd = RawPath.with(path) { open($0, O_RDONLY | O_CLOEXEC | O_NOFOLLOW) }
        if fd < 0 { throw SystemError("read", RawPath.string(path)) }
        defer { close(fd) }
        var done = 0
        while done < count {
            let n = pread(fd, buffer + done, count - done, off_t(offset) + off_t(done))
            if n < 0 {
                if errno == EINTR { continue }
                throw SystemError("read", RawPath.string(path))
            }
            if n == 0 { throw SystemError("read", RawPath.string(path) + " (it shrank while read)", errno: EIO) }
            done += n
        }
    }
}
