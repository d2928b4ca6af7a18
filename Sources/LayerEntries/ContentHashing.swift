import Foundation
import Glibc
import LayerSupport

/// Hashes files on worker threads while the caller is still finding them: a tree's walk hands each
/// regular file over as it meets it, and the digests are ready soon after the walk ends. The walk
/// is mostly system calls and the hashing mostly sha256, so on two cores they take about as long
/// together as the longer one alone.
final class ContentHashing: @unchecked Sendable {
    // @unchecked: every field below is read and written with `mutex` held.
    // Allocated, because pthread objects must not move and `&property` need not be stable.
    private let mutex = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
    private let changed = UnsafeMutablePointer<pthread_cond_t>.allocate(capacity: 1)
    private var queue: [(number: Int, path: [UInt8], part: Part)] = []
    private var taken = 0
    private var closed = false
    private var idle = 0
    private var running = 0
    private var digests: [Int: Hash256] = [:]
    private var failure: Error?
    /// The digests of the files' full blocks, when `init` was given a block size.
    private(set) var blocks: BlockDigests?
    /// Those of large files, by number, until their content digests are in too.
    private var largeFileBlocks: [Int: [Hash256]] = [:]

    /// What a worker takes of a file: all of it in one read, or, for a large file when block
    /// digests are asked for, its content digest and its block digests on two workers at once.
    /// sha256 runs at one core's speed, and the one file a pull changed is often the whole layer.
    private enum Part { case both, content, blocks }

    /// The size from which a file's two digests are taken apart: 8 blocks.
    private var largeFile: Int64 { Int64((blocks?.blockSize ?? 0) * 8) }

    private let deadline: Deadline?

    init(workers: Int, deadline: Deadline?, blockSize: Int? = nil) {
        self.deadline = deadline
        blocks = blockSize.map(BlockDigests.init)
        pthread_mutex_init(mutex, nil)
        pthread_cond_init(changed, nil)
        running = max(1, workers)
        for _ in 0..<running {
            let thread = Thread { [self] in work() }
            thread.stackSize = 1 << 20
            thread.start()
        }
    }

    deinit {
        pthread_cond_destroy(changed)
        pthread_mutex_destroy(mutex)
        changed.deallocate()
        mutex.deallocate()
    }

    /// Hashes the file at `path`, of `size` bytes, as file `number`.
    func add(_ number: Int, _ path: [UInt8], size: Int64) {
        pthread_mutex_lock(mutex)
        if blocks != nil && size >= largeFile {
            queue.append((number, path, .content))
            queue.append((number, path, .blocks))
            if idle > 1 { pthread_cond_broadcast(changed) } else if idle > 0 { pthread_cond_signal(changed) }
        } else {
            queue.append((number, path, .both))
            if idle > 0 { pthread_cond_signal(changed) }
        }
        pthread_mutex_unlock(mutex)
    }

    /// Waits for every file added and returns their digests by number; rethrows the first
    /// failure.
    func finish() throws -> [Int: Hash256] {
        stop(discarding: false)
        if let failure { throw failure }
        for (number, fileBlocks) in largeFileBlocks where !fileBlocks.isEmpty {
            if let digest = digests[number] { blocks?.record(digest, fileBlocks) }
        }
        return digests
    }

    /// Stops the workers, when the walk failed: what is left in the queue is not hashed.
    func cancel() { stop(discarding: true) }

    private func stop(discarding: Bool) {
        pthread_mutex_lock(mutex)
        closed = true
        if discarding { taken = queue.count }
        pthread_cond_broadcast(changed)
        while running > 0 { pthread_cond_wait(changed, mutex) }
        pthread_mutex_unlock(mutex)
    }

    private func work() {
        let buffer = Digest.ReadBuffer()
        pthread_mutex_lock(mutex)
        while true {
            if taken < queue.count && failure == nil {
                let (number, path, part) = queue[taken]
                taken += 1
                pthread_mutex_unlock(mutex)
                if part == .blocks, let blockSize = blocks?.blockSize {
                    let result = Result { try Digest.blockDigests(file: path, blockSize: blockSize, buffer: buffer, deadline: deadline) }
                    pthread_mutex_lock(mutex)
                    switch result {
                    case .success(let fileBlocks): largeFileBlocks[number] = fileBlocks
                    case .failure(let error): if failure == nil { failure = error }
                    }
                    continue
                }
                var stream = part == .content ? nil : blocks.map { BlockDigests.Stream(blockSize: $0.blockSize) }
                let result = Result { try Digest.contentHash(file: path, buffer: buffer, deadline: deadline, blocks: &stream) }
                pthread_mutex_lock(mutex)
                switch result {
                case .success(let digest):
                    digests[number] = digest
                    // A file without a full block has none to find in a block cache.
                    if let stream, !stream.blocks.isEmpty { blocks?.record(digest, stream.blocks) }
                case .failure(let error): if failure == nil { failure = error }
                }
            } else if closed || failure != nil {
                break
            } else {
                idle += 1
                pthread_cond_wait(changed, mutex)
                idle -= 1
            }
        }
        running -= 1
        pthread_cond_broadcast(changed)
        pthread_mutex_unlock(mutex)
    }
}
