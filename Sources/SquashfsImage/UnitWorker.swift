import CLayerSupport
import CSquashfs
import Crypto
import Glibc
import LayerEntries
import LayerSupport

/// One worker's compressor and buffers, and the work on one unit.
final class UnitWorker {
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
        var hole = false
        for block in first..<(first + count) {
            let recipe = context.recipe(file: number, block: block)
            if let recipe, copyCached(recipe, bytesIn: blockSize, into: output) { continue }
            if !loaded {
                hole = try readFully(
                    entry.source, at: UInt64(first) * UInt64(blockSize), count: count * blockSize, into: input,
                    unlessHole: true)
                loaded = true
            }
            let data = UnsafeRawBufferPointer(start: input + (block - first) * blockSize, count: blockSize)
            // A block of zeros is a sparse one, stored as nothing: mksquashfs does the same.
            if hole || Zeros.all(data) {
                if let recipe { output.remember(.made(keys: [recipe], word: 0, offset: 0)) }
                output.append(made: 0)
                context.tally.countZeros(blockSize)
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
        // A block of zeros the cache knows by its recipe is still one of zeros, not a copy.
        if location.word == 0 {
            context.tally.countZeros(bytesIn)
        } else {
            context.tally.count(in: bytesIn, out: location.length, fromCache: true)
        }
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
    /// record says is an error, since layer trees never change. With `unlessHole`, when the bytes
    /// are all in one of the file's holes (a disk image made with `truncate`), says so and reads
    /// nothing: the kernel would fill a page of its cache with zeros for every 4 KiB of it.
    @discardableResult
    private func readFully(
        _ path: [UInt8], at offset: UInt64, count: Int, into buffer: UnsafeMutableRawPointer, unlessHole: Bool = false
    ) throws -> Bool {
        let fd = RawPath.with(path) { open($0, O_RDONLY | O_CLOEXEC | O_NOFOLLOW) }
        if fd < 0 { throw SystemError("read", RawPath.string(path)) }
        defer { close(fd) }
        if unlessHole {
            let data = lc_seek_extent(fd, off_t(offset), 0)
            // ENXIO: no data from `offset` to the end. (Past the end, the pread below says so.)
            var st = stat()
            if (data < 0 && errno == ENXIO) || data >= off_t(offset) + off_t(count),
                fstat(fd, &st) == 0, st.st_size >= off_t(offset) + off_t(count)
            {
                return true
            }
        }
        var done = 0
        while done < count {
            let n = pread(fd, buffer + done, count - done, off_t(offset) + off_t(done))
            if n < 0 {
                if errno == EINTR { continue }
                throw SystemError("read", RawPath.string(path))
            }
            if n == 0 {
                throw SystemError(
                    "read",
                    RawPath.string(path)
                        + " (it is shorter than its manifest says; in a layer, `layerctl gc --verify` removes the damaged layer)",
                    errno: EIO)
            }
            done += n
        }
        context.tally.countRead(count)
        return false
    }
}
