import CLayerSupport
import CSquashfs
import Crypto
import Foundation
import Glibc
import LayerSupport
import Synchronization

/// Compressed blocks remembered across exports, so no block is compressed twice.
///
/// Every block is stored under two kinds of key, both sha256 over a tag naming the compressor,
/// level, block size and a probe of the compressor library's output (so a library that compresses
/// differently never meets another's blocks), followed by:
/// - the sha256 of its uncompressed bytes: the key of any block, found after reading it, or
///   without reading it when whoever last held the bytes took the digest (`BlockDigests`);
/// - what it is made of: "data block N of the file whose content digest is D", or "these tails of
///   these files, in this order" for a fragment block. Content digests come from the layers'
///   manifests, so these keys are known before anything is read, and a block found by one is
///   copied into the image without reading its files at all.
///
/// The cache is a folder per tag, `cache/blocks/<tag>/`, of pack files. Each export appends the
/// blocks it compresses to a pack of its own, `NAME.pack`, and when the export succeeds it fsyncs
/// the pack and publishes `NAME.index` (key, offset, squashfs size word per block, then a sha256
/// of all that) by rename(2). Only indexed blocks are ever read, so a killed export leaves at most
/// a pack nobody reads, which the next export removes once no process holds its lock. An index
/// that is cut short, edited, or names bytes past the end of its pack is removed with its pack
/// and reported: a damaged cache costs compression time, never a wrong image.
///
/// The cache is bounded (`BlockCacheLimit`): an index's mtime is the last time an export used its pack, and
/// after each export the least recently used packs go until the rest fit, over every tag.
final class BlockCache: @unchecked Sendable {
    // @unchecked: used by the writer's workers at once. `known`, `packs`, `indexPaths` and `damaged`
    // are set in init and only read after; `fresh` and `used` are behind Mutexes, the end of the new
    // pack is an Atomic, and pread/pwrite at distinct offsets need no lock. `published` is written by
    // `publish`, which runs once, after the workers have stopped.
    let directory: String
    let tag: [UInt8]
    private let known: [Hash256: Location]
    private let packs: [Int32]
    private let pack: Int32
    private let packName: String
    private let end = Atomic<Int>(0)
    private let fresh = Mutex<[Hash256: Location]>([:])
    /// The packs (by number) this export found blocks in, to mark as used when it publishes.
    private let used = Mutex<Set<Int32>>([])
    /// The index file of each pack in `packs`.
    private let indexPaths: [String]
    private let limit: BlockCacheLimit
    private var published = false
    /// Index files found damaged and removed with their packs, as "PATH: WHY".
    let damaged: [String]
    /// How many earlier packs this export opened: the cache's share of open descriptors.
    var openPacks: Int { packs.count }

    /// Where a block's on-disk bytes are: pack `pack` (an index into `packs`; -1 for the pack this
    /// export writes), at `offset`. `word` is the block's squashfs size word: its length on disk,
    /// with bit 24 set when it is stored uncompressed.
    struct Location: Sendable {
        var pack: Int32
        var word: UInt32
        var offset: UInt64

        var length: Int { Int(word & 0x00FF_FFFF) }
    }

    /// Ends the name of every tag folder of this format; folders of other formats are removed.
    static let formatSuffix = "-4"

    init(
        root: String, options: ImageOptions, compressor: UnsafeMutablePointer<sqfs_compressor_t>,
        limit: BlockCacheLimit = .default
    ) throws {
        let name = try Self.tagName(options, compressor: compressor)
        directory = root + "/" + name
        tag = Array("layerctl block cache 3 \(name)\n".utf8)
        self.limit = limit
        try FileSystem.makeDirectories(directory)

        var known: [Hash256: Location] = [:]
        var packs: [Int32] = []
        var indexPaths: [String] = []
        var damaged: [String] = []
        // Most recently used first, and no more than the limit allows beside the new pack.
        for index in Self.packsByUse(in: directory).prefix(max(0, limit.packs - 1)) {
            let indexPath = directory + "/" + index.name
            switch Self.loadIndex(indexPath, number: Int32(packs.count)) {
            case .loaded(let packFd, let records):
                packs.append(packFd)
                indexPaths.append(indexPath)
                for (key, location) in records { known[key] = location }
            case .damaged(let why):
                damaged.append("\(indexPath): \(why)")
                Self.removePack(indexPath)
            case .gone:
                continue
            }
        }
        for file in try FileSystem.listDirectory(directory) where file.hasSuffix(".pack") {
            Self.removeIfAbandoned(directory + "/" + file)
        }
        self.known = known
        self.packs = packs
        self.indexPaths = indexPaths
        self.damaged = damaged

        // The new pack is locked before it gets its name, so no other export mistakes it for abandoned.
        let base = "\(getpid())-\(UInt64.random(in: 0...UInt64.max))"
        let temporary = directory + "/" + base + ".new"
        let fd = open(temporary, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0o644)
        if fd < 0 {
            let error = SystemError("create a block pack in", directory)
            for packFd in packs { close(packFd) }
            throw error
        }
        packName = directory + "/" + base
        if flock(fd, LOCK_EX) != 0 || rename(temporary, packName + ".pack") != 0 {
            let error = SystemError("start a block pack in", directory)
            unlink(temporary)
            close(fd)
            for packFd in packs { close(packFd) }
            throw error
        }
        pack = fd
    }

    deinit {
        if !published { unlink(packName + ".pack") }
        close(pack)
        for fd in packs { close(fd) }
    }

    /// Makes the blocks this export compressed available to later ones: fsyncs the pack, then
    /// publishes its index. Then marks the packs this export read from as used, and evicts what
    /// the limit does not allow. Call once, after the image is complete.
    func publish() throws {
        let entries = fresh.withLock { $0 }.sorted { $0.value.offset < $1.value.offset }
        if !entries.isEmpty {
            try sys("write the block cache", packName + ".pack") { fsync(pack) }
            let index = BlockIndex.encode(
                entries.map { BlockIndex.Record(key: $0.key, offset: $0.value.offset, word: $0.value.word) })
            try FileSystem.writeAtomically(Data(index), to: packName + ".index")
            published = true
        }
        for number in used.withLock({ $0 }) { Self.markUsed(indexPaths[Int(number)]) }
        Self.evict(
            in: FileSystem.parent(of: directory), limit: limit,
            keeping: published ? packName + ".index" : nil)
    }

    /// The key of a block by its uncompressed bytes.
    func key(of block: UnsafeRawBufferPointer) -> Hash256 {
        var hasher = SHA256()
        hasher.update(bufferPointer: block)
        return key(digest: Hash256(hasher.finalize()))
    }

    /// The key of a block by the sha256 of its uncompressed bytes.
    func key(digest: Hash256) -> Hash256 {
        var hasher = SHA256()
        hasher.update(data: tag)
        digest.feed(&hasher)
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

    func location(_ key: Hash256) -> Location? {
        if let location = known[key] {
            _ = used.withLock { $0.insert(location.pack) }
            return location
        }
        return fresh.withLock { $0[key] }
    }

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

    /// The name of the tag folder for `options`: compressor, level, block size, probe and format.
    /// The probe is worked out once per process; while one thread works it out, others wait for it.
    private static func tagName(
        _ options: ImageOptions, compressor: UnsafeMutablePointer<sqfs_compressor_t>
    ) throws -> String {
        let configuration = configurationName(options)
        return try probes.withLock { probes in
            if let probe = probes[configuration] { return "\(configuration)-\(probe)\(formatSuffix)" }
            let probe = try probe(compressor, blockSize: Int(options.blockSize))
            probes[configuration] = probe
            return "\(configuration)-\(probe)\(formatSuffix)"
        }
    }
    private static let probes = Mutex<[String: String]>([:])

    private static func configurationName(_ options: ImageOptions) -> String {
        "\(options.compressor.rawValue)-\(options.level)-\(options.blockSize)"
    }

    /// Works out the probe for `options` ahead of an export in this process, which then finds it
    /// done: at zstd:15 the probe takes about 30 ms, which a command can spend while it waits for
    /// something else (`stage REF` while it downloads). A failure here is left for the export to report.
    static func prepare(_ options: ImageOptions) {
        // Worked out already (a pull's export started it, and the export asks again): no compressor made.
        guard probes.withLock({ $0[configurationName(options)] == nil }) else { return }
        guard var config = try? options.configuration() else { return }
        var created: UnsafeMutablePointer<sqfs_compressor_t>?
        guard sqfs_compressor_create(&config, &created) == 0, let compressor = created else { return }
        defer { sqfs_destroy(compressor) }
        _ = try? tagName(options, compressor: compressor)
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
