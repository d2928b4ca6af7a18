import LayerEntries
import LayerSupport

/// Where an image's file data goes, decided from the merged tree alone before anything is read:
/// which files are distinct, how each splits into full blocks and a tail, which fragment block
/// each tail lands in, and the order in which blocks are written. The same tree and block size
/// always give the same layout, so the image's bytes do not depend on the workers or the cache.
struct DataLayout {
    /// A distinct file's data.
    struct File {
        var entry: Int
        var size: UInt64
        /// Full blocks; the rest, `tail` bytes, goes to a fragment block.
        var blocks: Int
        var tail: Int
        /// The fragment block and offset of the tail, when there is one.
        var fragment: (block: Int, offset: Int)?
    }

    /// A tail's place in a fragment block: `length` bytes of file `file`, from `offset` in it.
    struct Piece {
        var file: Int
        var offset: UInt64
        var length: Int
    }

    /// One step of writing, in image order: a run of a file's full blocks, or a fragment block.
    enum Unit {
        case blocks(file: Int, first: Int, count: Int)
        case fragment(Int)
    }

    var files: [File] = []
    /// For each entry of the tree, the `files` index of its data; -1 for entries that are not
    /// regular files, and for further names of hard links.
    var fileOfEntry: [Int]
    var fragments: [[Piece]] = []
    var units: [Unit] = []
    let blockSize: Int

    /// Full blocks written per unit: enough to keep a worker busy, few enough to bound memory.
    static let blocksPerUnit = 8

    /// Fragment blocks pack the tails of many files, so one file added or removed would shift every
    /// later fragment block and defeat the block cache. The layout therefore closes the current
    /// fragment block after files whose path hash marks a boundary, once at least this many tail
    /// bytes were packed since the last one: a change then touches only the fragment blocks between
    /// two boundaries, a little over 1 MiB of tails.
    static let minimumFragmentRun = 1 << 20

    /// True for about one path in eight, decided by the path alone (FNV-1a).
    static func isFragmentBoundary(_ path: [UInt8]) -> Bool {
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in path { hash = (hash ^ UInt64(byte)) &* 0x100_0000_01b3 }
        return hash % 8 == 0
    }

    /// Files with the same content digest share one copy of the data.
    init(_ tree: MergedTree, blockSize: Int) {
        self.blockSize = blockSize
        fileOfEntry = Array(repeating: -1, count: tree.entries.count)
        var byContent: [Hash256: Int] = [:]
        var open: [Piece] = []
        var openSize = 0
        var packed = 0
        func closeFragment() {
            guard !open.isEmpty else { return }
            units.append(.fragment(fragments.count))
            fragments.append(open)
            open = []
            openSize = 0
        }
        for index in tree.depthFirst() {
            // A further name of a hard link shares its first name's inode, which has the data.
            guard tree.entries[index].kind == .regular, tree.entries[index].hardLinkTarget == nil else { continue }
            let size = tree.entries[index].size
            let content = tree.entries[index].content
            if let content, let earlier = byContent[content], files[earlier].size == size {
                fileOfEntry[index] = earlier
                continue
            }
            let number = files.count
            if let content { byContent[content] = number }
            fileOfEntry[index] = number
            let blocks = Int(size / UInt64(blockSize))
            let tail = Int(size % UInt64(blockSize))
            files.append(File(entry: index, size: size, blocks: blocks, tail: tail, fragment: nil))
            var first = 0
            while first < blocks {
                let count = min(Self.blocksPerUnit, blocks - first)
                units.append(.blocks(file: number, first: first, count: count))
                first += count
            }
            guard tail > 0 else { continue }
            if openSize + tail > blockSize { closeFragment() }
            files[number].fragment = (fragments.count, openSize)
            open.append(Piece(file: number, offset: UInt64(blocks) * UInt64(blockSize), length: tail))
            openSize += tail
            packed += tail
            if packed >= Self.minimumFragmentRun && Self.isFragmentBoundary(tree.path(of: index)) {
                closeFragment()
                packed = 0
            }
        }
        closeFragment()
    }
}
