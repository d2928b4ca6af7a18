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
        _ tree: MergedTree, knownBlocks: BlockDigests?,
        into inodes: UnsafeMutablePointer<UnsafeMutablePointer<sqfs_inode_generic_t>?>, progress: (Progress) -> Void
    ) throws -> OpaquePointer {
        let layout = DataLayout(tree, blockSize: Int(options.blockSize))
        guard let fragments = sqfs_frag_table_create(0) else {
            throw SquashfsError("create the fragment table", SQFS_ERROR_ALLOC.rawValue)
        }
        do {
            try writeUnits(
                layout, tree, knownBlocks: knownBlocks, fragments: fragments, inodes: inodes, progress: progress)
        } catch {
            sqfsDestroy(fragments)
            throw error
        }
        return fragments
    }

    private func writeUnits(
        _ layout: DataLayout, _ tree: MergedTree, knownBlocks: BlockDigests?, fragments: OpaquePointer,
        inodes: UnsafeMutablePointer<UnsafeMutablePointer<sqfs_inode_generic_t>?>, progress: (Progress) -> Void
    ) throws {
        var starts = [UInt64](repeating: 0, count: layout.files.count)
        var words = [[UInt32]](repeating: [], count: layout.files.count)
        let context = UnitContext(
            tree: tree, layout: layout, cache: cache, knownBlocks: knownBlocks, compressor: compressor, tally: tally)
        var reported: UInt64 = 0
        var end = size
        var writtenBack = end
        var copy = PendingCopy(file: file, path: output)
        // Units whose every block the cache holds by recipe (or by a known digest) are copied by
        // this thread; only the others go to the workers, so a re-export hands little to them.
        let cached = layout.units.indices.map { context.cachedOutput($0) }
        let jobs = layout.units.indices.filter { cached[$0] == nil }
        var nextUnit = 0
        func write(_ number: Int, _ output: UnitOutput) throws {
            let at = end
            for piece in output.pieces {
                switch piece {
                case .made(let offset, let length):
                    try copy.flush()
                    try self.written("write \(self.output)") { file.pointee.write_at(file, end, output.buffer! + offset, length) }
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
                lc_sqfs_fd_file_start_writeback(file, writtenBack, end - writtenBack)
                writtenBack = end
            }
            switch layout.units[number] {
            case .blocks(let index, let first, _):
                if first == 0 { starts[index] = at }
                words[index] += output.words
            case .fragment(let block):
                var index: UInt32 = 0
                try self.written("record a fragment block") { sqfs_frag_table_append(fragments, at, output.words[0], &index) }
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
    let file: UnsafeMutablePointer<sqfs_file_t>
    let path: String
    private var pending: (pack: Int32, offset: UInt64, length: Int, at: UInt64)?

    init(file: UnsafeMutablePointer<sqfs_file_t>, path: String) {
        self.file = file
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
        if lc_sqfs_fd_file_copy_in(file, run.pack, run.offset, run.at, run.length) != 0 {
            throw SystemError("copy cached blocks into", path)
        }
    }
}
