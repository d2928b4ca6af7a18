import CLayerSupport
import CSquashfs
import Crypto
import Foundation
import Glibc
import Synchronization

/// Compressed blocks remembered across exports, so no block is compressed twice.
///
/// Every block is stored under two kinds of key, both sha256 over a tag naming the compressor,
/// level, block size and a probe of the compressor library's output (so a library that compresses
/// differently never meets another's blocks), followed by:
/// - its uncompressed bytes: the key of any block, found after reading it;
/// - what it is made of: "data block N of the file whose content digest is D", or "these tails of
///   these files, in this order" for a fragment block. Content digests come from the layers'
///   manifests, so these keys are known before anything is read, and a block found by one is
///   copied into the image without reading its files at all.
///
/// The cache is a folder per tag, `cache/blocks/<tag>/`, of pack files. Each export appends the
/// blocks it compresses to a pack of its own, `NAME.pack`, and when the export succeeds it fsyncs
/// the pack and publishes `NAME.index` (key, offset, squashfs size word per block) by rename(2).
/// Only indexed blocks are ever read, so a killed export leaves at most a pack nobody reads, which
/// the next export removes once no process holds its lock.
final class BlockCache: @unchecked Sendable {
    // @unchecked: used by the writer's workers at once. `known` and `packs` are immutable after
    // init; `fresh` and `counters` are behind Mutexes, the end of the new pack is an Atomic, and
    // pread/pwrite at distinct offsets need no lock.
    let directory: String
    let tag: [UInt8]
    private let known: [Hash256: Location]
    private let packs: [Int32]
    private let pack: Int32
    private let packName: String
    private let end = Atomic<Int>(0)
    private let fresh = Mutex<[Hash256: Location]>([:])
    private var published = false

    /// Where a block's on-disk bytes are: pack `pack` (an index into `packs`; -1 for the pack this
    /// export writes), at `offset`. `word` is the block's squashfs size word: its length on disk,
    /// with bit 24 set when it is stored uncompressed.
    struct Location: Sendable {
        var pack: Int32
        var word: UInt32
        var offset: UInt64

        var length: Int { Int(word & 0x00FF_FFFF) }
    }

    static let indexMagic = Array("LCBI0002".utf8)
    static let recordSize = 32 + 8 + 4

    init(root: String, options: ImageOptions, compressor: UnsafeMutablePointer<sqfs_compressor_t>) throws {
        let probe = try Self.probe(compressor, blockSize: Int(options.blockSize))
        let name = "\(options.compressor.rawValue)-\(options.level)-\(options.blockSize)-\(probe)-2"
        directory = root + "/" + name
        tag = Array("layerctl block cache 2 \(name)\n".utf8)
        try FileSystem.makeDirectories(directory)

        var known: [Hash256: Location] = [:]
        var packs: [Int32] = []
        for file in try FileSystem.listDirectory(directory) {
            if file.hasSuffix(".pack") {
                Self.removeIfAbandoned(directory + "/" + file)
                continue
            }
            guard file.hasSuffix(".index"), let index = FileSystem.contents(directory + "/" + file),
                index.count >= 8, index.prefix(8).elementsEqual(Self.indexMagic),
                (index.count - 8) % Self.recordSize == 0
            else { continue }
            let packFd = open(directory + "/" + file.dropLast(6) + ".pack", O_RDONLY | O_CLOEXEC)
            guard packFd >= 0 else { continue }
            var st = stat()
            fstat(packFd, &st)
            let number = Int32(packs.count)
            var records: [(Hash256, Location)] = []
            records.reserveCapacity((index.count - 8) / Self.recordSize)
            index.withUnsafeBytes { raw in
                var at = 8
                while at < raw.count {
                    let key = Hash256(raw.baseAddress! + at)
                    let offset = UInt64(littleEndian: raw.loadUnaligned(fromByteOffset: at + 32, as: UInt64.self))
                    let word = UInt32(littleEndian: raw.loadUnaligned(fromByteOffset: at + 40, as: UInt32.self))
                    records.append((key, Location(pack: number, word: word, offset: offset)))
                    at += Self.recordSize
                }
            }
            // A pack shorter than its index says (a damaged disk, a copy cut short) is not used at all.
            guard records.allSatisfy({ $0.1.offset + UInt64($0.1.length) <= UInt64(st.st_size) }) else {
                close(packFd)
                continue
            }
            packs.append(packFd)
            for (key, location) in records { known[key] = location }
        }
        self.known = known
        self.packs = packs

        // The new pack is locked before it gets its name, so no other export mistakes it for abandoned.
        let base = "\(getpid())-\(UInt64.random(in: 0...UInt64.max))"
        let temporary = directory + "/" + base + ".new"
        let fd = open(temporary, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0o644)
        if fd < 0 {
            let error = SystemError("create a block pack in", directory)
            for packFd in packs { close(packFd) }
            throw error
        }
        flock(fd, LOCK_EX)
        packName = directory + "/" + base
        rename(temporary, packName + ".pack")
        pack = fd
    }

    deinit {
        if !published { unlink(packName + ".pack") }
        close(pack)
        for fd in packs { close(fd) }
    }

    /// Makes the blocks this export compressed available to later ones: fsyncs the pack, then
    /// publishes its index. Call once, after the image is complete.
    func publish() throws {
        let entries = fresh.withLock { $0 }.sorted { $0.value.offset < $1.value.offset }
        guard !entries.isEmpty else { return }
        try sys("write the block cache", packName + ".pack") { fsync(pack) }
        var index = ByteWriter()
        index.bytes = Self.indexMagic
        index.bytes.reserveCapacity(8 + entries.count * Self.recordSize)
        for (key, location) in entries {
            index.bytes += key.bytes
            index.put(location.offset)
            index.put(location.word)
        }
        try FileSystem.writeAtomically(Data(index.bytes), to: packName + ".index")
        published = true
    }

    /// The key of a block by its uncompressed bytes.
    func key(of block: UnsafeRawBufferPointer) -> Hash256 {
        var hasher = SHA256()
        hasher.update(data: tag)
        hasher.update(bufferPointer: block)
        return Hash256(hasher.finalize())
    }

    /// The key of a block by what it is made of, which `recipe` feeds to the hasher (see the
    /// type's documentation).
    func key(recipe: (inout SHA256) -> Void) -> Hash256 {
        var hasher = SHA256()
        hasher.update(data: tag)
        recipe(&hasher)
        return Hash256(hasher.finalize())
    }

    func location(_ key: Hash256) -> Location? { known[key] ?? fresh.withLock { $0[key] } }

    /// The open pack file that holds the block at `location`.
    func packFile(_ location: Location) -> Int32 { location.pack < 0 ? pack : packs[Int(location.pack)] }

    /// Remembers a block's on-disk bytes under every key in `keys`.
    func store(_ keys: [Hash256], word: UInt32, bytes: UnsafeRawBufferPointer) {
        let offset = end.add(bytes.count, ordering: .relaxed).newValue - bytes.count
        if bytes.count > 0 && pwrite(pack, bytes.baseAddress, bytes.count, off_t(offset)) != bytes.count { return }
        let location = Location(pack: -1, word: word, offset: UInt64(offset))
        fresh.withLock { table in for key in keys { table[key] = location } }
    }

    /// Makes `key` name the block at `location` too. Blocks of earlier packs are copied into this
    /// export's pack, whose index can only point into it.
    func alias(_ key: Hash256, to location: Location) {
        if location.pack < 0 {
            fresh.withLock { $0[key] = location }
            return
        }
        let length = location.length
        let offset = end.add(length, ordering: .relaxed).newValue - length
        if length > 0 && lc_copy_range(packs[Int(location.pack)], location.offset, pack, UInt64(offset), length) != 0 {
            return
        }
        fresh.withLock { $0[key] = Location(pack: -1, word: location.word, offset: UInt64(offset)) }
    }

    /// Removes a pack no process writes and no index names: what a killed export left.
    private static func removeIfAbandoned(_ path: String) {
        if FileSystem.exists(String(path.dropLast(5)) + ".index") { return }
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return }
        defer { close(fd) }
        if flock(fd, LOCK_EX | LOCK_NB) == 0 { unlink(path) }
    }

    /// Eight hex digits of the digest of a fixed, compressible block as `compressor` compresses it.
    private static func probe(_ compressor: UnsafeMutablePointer<sqfs_compressor_t>, blockSize: Int) throws -> String {
        var state: UInt32 = 0x9E37_79B9
        let words = ["layer", "stack", "image", "block", "cache", "squash", "overlay", "tree", "\n"]
        var input: [UInt8] = []
        input.reserveCapacity(blockSize)
        while input.count < blockSize {
            state = state &* 1_664_525 &+ 1_013_904_223
            input.append(contentsOf: words[Int(state >> 16) % words.count].utf8)
            input.append(UInt8(ascii: " "))
        }
        input.removeLast(input.count - blockSize)
        var output = [UInt8](repeating: 0, count: blockSize)
        let size = compressor.pointee.do_block(compressor, input, UInt32(blockSize), &output, UInt32(blockSize))
        if size < 0 { throw SquashfsError("probe the compressor", size) }
        return Digest.hex(SHA256.hash(data: output[0..<Int(size)]).prefix(4))
    }
}
