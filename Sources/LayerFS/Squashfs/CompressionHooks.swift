import CLayerSupport
import Synchronization

/// What the hooked compressor around the block processor's compressor calls for every data and
/// fragment block: the block cache, when there is one, and a tally of bytes in and out, which
/// gives the compression ratio of the work done so far.
final class CompressionHooks: @unchecked Sendable {
    // @unchecked: called from libsquashfs's worker threads at once; `cache` is thread-safe and the
    // tallies are Atomics.
    let cache: BlockCache?
    private let bytesIn = Atomic<Int>(0)
    private let bytesOut = Atomic<Int>(0)

    init(cache: BlockCache?) { self.cache = cache }

    /// Compressed bytes per uncompressed byte over the blocks finished so far; nil before the first.
    var ratio: Double? {
        let input = bytesIn.load(ordering: .relaxed)
        return input > 0 ? Double(bytesOut.load(ordering: .relaxed)) / Double(input) : nil
    }

    /// The C hooks; valid while this object lives.
    var hooks: lc_compressor_hooks {
        var hooks = lc_compressor_hooks(
            context: Unmanaged.passUnretained(self).toOpaque(), lookup: nil, store: nil,
            account: { context, size, result in
                let this = Unmanaged<CompressionHooks>.fromOpaque(context!).takeUnretainedValue()
                this.bytesIn.add(Int(size), ordering: .relaxed)
                this.bytesOut.add(result > 0 ? Int(result) : Int(size), ordering: .relaxed)
            })
        if cache != nil {
            hooks.lookup = { context, input, size, output, outputSize, key in
                let this = Unmanaged<CompressionHooks>.fromOpaque(context!).takeUnretainedValue()
                return this.cache!.lookup(
                    UnsafeRawBufferPointer(start: input, count: Int(size)), output!, Int(outputSize), key!)
            }
            hooks.store = { context, key, output, result in
                let this = Unmanaged<CompressionHooks>.fromOpaque(context!).takeUnretainedValue()
                this.cache!.store(key!, UnsafeRawBufferPointer(start: output, count: Int(max(result, 0))))
            }
        }
        return hooks
    }
}
