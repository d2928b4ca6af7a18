import CLayerSupport
import CSquashfs
import Crypto
import Glibc
import Synchronization

/// Compressed blocks remembered across exports, so no block is compressed twice.
///
/// A block's cache key is sha256 over a tag naming the compressor, level, block size and a probe of
/// the compressor library's output, followed by the uncompressed bytes. The probe is the digest of
/// one fixed block compressed by the real compressor: a compressor library that compresses
/// differently gets a different tag, so a cached block is only ever what a cold run would write.
///
/// Each block is one file, `cache/blocks/<tag>/<2 hex>/<62 hex>`, holding "LCB1", the result length
/// (0: the block does not compress and is stored as it is) and the compressed bytes. Files appear by
/// `rename(2)`, so a reader sees a whole entry or none; an entry whose size disagrees with its header
/// is a miss.
final class BlockCache: @unchecked Sendable {
    // @unchecked: the hooks run on libsquashfs's worker threads at once; the only mutable state is
    // `counters`, behind a Mutex, and the file system does the rest.
    let directory: String
    private let tag: [UInt8]
    private let counters = Mutex(Counters())
    private let serial = Atomic<Int>(0)

    struct Counters: Sendable {
        var hits = 0
        var misses = 0
    }

    var statistics: Counters { counters.withLock { $0 } }

    init(root: String, options: ImageOptions, compressor: UnsafeMutablePointer<sqfs_compressor_t>) throws {
        let probe = try Self.probe(compressor, blockSize: Int(options.blockSize))
        let name = "\(options.compressor.rawValue)-\(options.level)-\(options.blockSize)-\(probe)"
        directory = root + "/" + name
        tag = Array("layerctl block cache 1 \(name)\n".utf8)
        try FileSystem.makeDirectories(directory)
    }

    /// The hooks a caching compressor calls; valid while this cache lives.
    var hooks: lc_block_cache_hooks {
        lc_block_cache_hooks(
            context: Unmanaged.passUnretained(self).toOpaque(),
            lookup: { context, input, size, output, outputSize, key in
                let cache = Unmanaged<BlockCache>.fromOpaque(context!).takeUnretainedValue()
                return cache.lookup(UnsafeRawBufferPointer(start: input, count: Int(size)), output!, Int(outputSize), key!)
            },
            store: { context, key, output, result in
                let cache = Unmanaged<BlockCache>.fromOpaque(context!).takeUnretainedValue()
                cache.store(key!, UnsafeRawBufferPointer(start: output, count: Int(max(result, 0))))
            })
    }

    private func lookup(_ block: UnsafeRawBufferPointer, _ output: UnsafeMutablePointer<UInt8>, _ capacity: Int,
                        _ key: UnsafeMutablePointer<UInt8>) -> Int {
        var hasher = SHA256()
        hasher.update(data: tag)
        hasher.update(bufferPointer: block)
        let digest = hasher.finalize()
        digest.withUnsafeBytes { key.update(from: $0.bindMemory(to: UInt8.self).baseAddress!, count: 32) }

        let fd = open(path(key), O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return miss() }
        defer { close(fd) }
        // One readv: the header into `header`, the payload straight into libsquashfs's buffer.
        var header: UInt64 = 0
        let count = withUnsafeMutableBytes(of: &header) { raw -> Int in
            var vectors = [iovec(iov_base: raw.baseAddress, iov_len: 8), iovec(iov_base: output, iov_len: capacity)]
            return readv(fd, &vectors, 2)
        }
        guard count >= 8 else { return miss() }
        let fields = withUnsafeBytes(of: header) { Array($0) }
        guard fields[0..<4].elementsEqual("LCB1".utf8) else { return miss() }
        let length = Int(fields[4]) | Int(fields[5]) << 8 | Int(fields[6]) << 16 | Int(fields[7]) << 24
        guard length <= capacity, count == 8 + length else { return miss() }
        counters.withLock { $0.hits += 1 }
        return length
    }

    private func miss() -> Int {
        counters.withLock { $0.misses += 1 }
        return -1
    }

    private func store(_ key: UnsafePointer<UInt8>, _ result: UnsafeRawBufferPointer) {
        let final = path(key)
        let temporary = final + ".\(getpid()).\(serial.add(1, ordering: .relaxed).newValue)"
        var fd = open(temporary, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o644)
        if fd < 0 && errno == ENOENT {
            mkdir(String(final.dropLast(63)), 0o755)
            fd = open(temporary, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o644)
        }
        guard fd >= 0 else { return }
        let length = UInt32(result.count)
        var header: [UInt8] = Array("LCB1".utf8) + [0, 8, 16, 24].map { UInt8(truncatingIfNeeded: length >> $0) }
        let written = header.withUnsafeMutableBytes { raw -> Int in
            var vectors = [
                iovec(iov_base: raw.baseAddress, iov_len: 8),
                iovec(iov_base: UnsafeMutableRawPointer(mutating: result.baseAddress), iov_len: result.count),
            ]
            return writev(fd, &vectors, 2)
        }
        let ok = written == 8 + result.count
        close(fd)
        if !ok || rename(temporary, final) != 0 { unlink(temporary) }
    }

    private func path(_ key: UnsafePointer<UInt8>) -> String {
        let hex = Digest.hex(UnsafeBufferPointer(start: key, count: 32))
        return directory + "/" + hex.prefix(2) + "/" + hex.dropFirst(2)
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
        let digest = SHA256.hash(data: output[0..<Int(size)])
        return Digest.hex(digest.prefix(4))
    }
}
