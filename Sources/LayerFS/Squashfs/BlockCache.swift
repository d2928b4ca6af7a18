import CLayerSupport
import CSquashfs
import Crypto
import Foundation
import Glibc
import Synchronization

/// Compressed blocks remembered across exports, so no block is compressed twice.
///
/// A block's cache key is sha256 over a tag naming the compressor, level, block size and a probe of
/// the compressor library's output, followed by the uncompressed bytes. The probe is the digest of
/// one fixed block compressed by the real compressor: a compressor library that compresses
/// differently gets a different tag, so a cached block is only ever what a cold run would write.
///
/// The cache is a folder per tag, `cache/blocks/<tag>/`, of pack files. Each export appends the
/// blocks it compresses to a pack of its own, `NAME.pack`, and when the export succeeds it fsyncs
/// the pack and publishes `NAME.index` (key, offset, length per block) by rename(2). Only indexed
/// blocks are ever read, so a killed export leaves at most a pack nobody reads, which the next
/// export removes once no process holds its lock.
final class BlockCache: @unchecked Sendable {
    // @unchecked: the hooks run on libsquashfs's worker threads at once. `known` and `packs` are
    // immutable after init; `fresh` and `counters` are behind Mutexes, the end of the new pack is
    // an Atomic, and pread/pwrite at distinct offsets need no lock.
    let directory: String
    private let tag: [UInt8]
    private let known: [Key: Location]
    private let packs: [Int32]
    private let pack: Int32
    private let packName: String
    private let end = Atomic<Int>(0)
    private let fresh = Mutex<[Key: Location]>([:])
    private let counters = Mutex(Counters())
    private var published = false

    struct Counters: Sendable {
        var hits = 0
        var misses = 0
    }

    /// A sha256 cache key.
    struct Key: Hashable, Sendable {
        var words: (UInt64, UInt64, UInt64, UInt64)

        init(_ bytes: UnsafeRawPointer) {
            words = (
                bytes.loadUnaligned(as: UInt64.self), bytes.loadUnaligned(fromByteOffset: 8, as: UInt64.self),
                bytes.loadUnaligned(fromByteOffset: 16, as: UInt64.self),
                bytes.loadUnaligned(fromByteOffset: 24, as: UInt64.self)
            )
        }

        static func == (a: Key, b: Key) -> Bool { a.words == b.words }

        func hash(into hasher: inout Hasher) { hasher.combine(words.0) }
    }

    /// Where a block's compressed bytes are: pack `pack` (an index into `packs`; -1 for the pack
    /// this export writes), `length` bytes at `offset`. A length of 0 means the block does not
    /// compress and is stored as it is.
    struct Location: Sendable {
        var pack: Int32
        var length: UInt32
        var offset: UInt64
    }

    static let indexMagic = Array("LCBI0001".utf8)
    static let recordSize = 32 + 8 + 4

    var statistics: Counters { counters.withLock { $0 } }

    init(root: String, options: ImageOptions, compressor: UnsafeMutablePointer<sqfs_compressor_t>) throws {
        let probe = try Self.probe(compressor, blockSize: Int(options.blockSize))
        let name = "\(options.compressor.rawValue)-\(options.level)-\(options.blockSize)-\(probe)"
        directory = root + "/" + name
        tag = Array("layerctl block cache 1 \(name)\n".utf8)
        try FileSystem.makeDirectories(directory)

        var known: [Key: Location] = [:]
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
            let number = Int32(packs.count)
            packs.append(packFd)
            index.withUnsafeBytes { raw in
                var at = 8
                while at < raw.count {
                    let key = Key(raw.baseAddress! + at)
                    let offset = raw.loadUnaligned(fromByteOffset: at + 32, as: UInt64.self)
                    let length = raw.loadUnaligned(fromByteOffset: at + 40, as: UInt32.self)
                    known[key] = Location(pack: number, length: length, offset: offset)
                    at += Self.recordSize
                }
            }
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
        let entries = fresh.withLock { $0 }.filter { $0.value.pack == -1 }.sorted { $0.value.offset < $1.value.offset }
        guard !entries.isEmpty else { return }
        try sys("write the block cache", packName + ".pack") { fsync(pack) }
        var index = Self.indexMagic
        index.reserveCapacity(8 + entries.count * Self.recordSize)
        for (key, location) in entries {
            withUnsafeBytes(of: key.words) { index.append(contentsOf: $0) }
            withUnsafeBytes(of: location.offset.littleEndian) { index.append(contentsOf: $0) }
            withUnsafeBytes(of: location.length.littleEndian) { index.append(contentsOf: $0) }
        }
        try FileSystem.writeAtomically(Data(index), to: packName + ".index")
        published = true
    }

    /// Looks up a block; on a hit copies its compressed bytes to `output` and returns their count.
    func lookup(
        _ block: UnsafeRawBufferPointer, _ output: UnsafeMutablePointer<UInt8>, _ capacity: Int,
        _ keyBytes: UnsafeMutablePointer<UInt8>
    ) -> Int {
        var hasher = SHA256()
        hasher.update(data: tag)
        hasher.update(bufferPointer: block)
        hasher.finalize().withUnsafeBytes {
            keyBytes.update(from: $0.bindMemory(to: UInt8.self).baseAddress!, count: 32)
        }
        let key = Key(keyBytes)
        guard let location = known[key] ?? fresh.withLock({ $0[key] }), Int(location.length) <= capacity else {
            counters.withLock { $0.misses += 1 }
            return -1
        }
        let fd = location.pack < 0 ? pack : packs[Int(location.pack)]
        let length = Int(location.length)
        if length > 0 && pread(fd, output, length, off_t(location.offset)) != length {
            counters.withLock { $0.misses += 1 }
            return -1
        }
        counters.withLock { $0.hits += 1 }
        return length
    }

    /// Remembers what the compressor made of the block whose key is `keyBytes`.
    func store(_ keyBytes: UnsafePointer<UInt8>, _ result: UnsafeRawBufferPointer) {
        let key = Key(keyBytes)
        let offset = end.add(result.count, ordering: .relaxed).newValue - result.count
        if result.count > 0 && pwrite(pack, result.baseAddress, result.count, off_t(offset)) != result.count { return }
        fresh.withLock { $0[key] = Location(pack: -1, length: UInt32(result.count), offset: UInt64(offset)) }
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
