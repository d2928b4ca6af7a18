import CLayerSupport
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
    private let room = UnsafeMutablePointer<pthread_cond_t>.allocate(capacity: 1)
    private var queue: [(number: Int, path: [UInt8], part: Part, file: Opened?)] = []
    private var taken = 0
    /// Files the walk opened that no worker has taken yet, and whether the walk waits for room.
    private var openWaiting = 0
    private var walkWaits = false
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

    /// A file the walk opened for a worker, with what its fstatat said.
    private struct Opened {
        var fd: Int32
        var known: FileChunks.Known
    }

    /// How many opened files may wait for a worker: the walk stops for room beyond it, well below
    /// the soft limit of open files (1,024).
    private static let openLimit = 128

    /// How many waiting files, or how large a file, wakes an idle worker; `finish` wakes them all
    /// for the rest.
    private static let wakeBatch = 8
    private static let wakeSize: Int64 = 256 << 10

    /// The size from which a file's two digests are taken apart: 8 blocks.
    private var largeFile: Int64 { Int64((blocks?.blockSize ?? 0) * 8) }

    private let deadline: Deadline?

    init(workers: Int, deadline: Deadline?, blockSize: Int? = nil) {
        self.deadline = deadline
        blocks = blockSize.map(BlockDigests.init)
        pthread_mutex_init(mutex, nil)
        pthread_cond_init(changed, nil)
        pthread_cond_init(room, nil)
        running = max(1, workers)
        for _ in 0..<running {
            let thread = Thread { [self] in work() }
            thread.stackSize = 1 << 20
            thread.start()
        }
    }

    deinit {
        pthread_cond_destroy(changed)
        pthread_cond_destroy(room)
        pthread_mutex_destroy(mutex)
        changed.deallocate()
        room.deallocate()
        mutex.deallocate()
    }

    /// Hashes the regular file `name` in the open folder `folder`, at `path`, as file `number`;
    /// `st` is its fstatat. The file is opened here, relative to its folder, where a worker would
    /// open it by its whole path, a lookup of each of its components (some 15 in a build's tree),
    /// and the worker takes the size from `st` instead of an fstat. Without following a symlink,
    /// and without touching its access time: a file just written has one older than its change
    /// time, which a read with relatime would set, a write of the inode for each file.
    func add(_ number: Int, _ path: [UInt8], folder: Int32, name: [UInt8], st: stat) throws {
        let size = Int64(st.st_size)
        if blocks != nil && size >= largeFile {
            // Two workers read it at once, each from its own descriptor.
            pthread_mutex_lock(mutex)
            queue.append((number, path, .content, nil))
            queue.append((number, path, .blocks, nil))
            if idle > 1 { pthread_cond_broadcast(changed) } else if idle > 0 { pthread_cond_signal(changed) }
            pthread_mutex_unlock(mutex)
            return
        }
        let flags = O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK
        var fd = RawPath.with(name) { openat(folder, $0, flags | lc_o_noatime) }
        // O_NOATIME is for the file's owner, or a process with CAP_FOWNER.
        if fd < 0 && errno == EPERM { fd = RawPath.with(name) { openat(folder, $0, flags) } }
        if fd < 0 { throw SystemError("read", RawPath.string(path)) }
        pthread_mutex_lock(mutex)
        while openWaiting >= Self.openLimit && failure == nil {
            walkWaits = true
            pthread_cond_wait(room, mutex)
        }
        queue.append((number, path, .both, Opened(fd: fd, known: FileChunks.Known(st))))
        openWaiting += 1
        // A worker waits for a few small files to take at once: woken for each, it went idle and
        // was woken again some 2,500 times in the scan of a cold base layer (5,059 futex calls;
        // 974 now), each costing both threads some microseconds.
        if idle > 0 && (queue.count - taken >= Self.wakeBatch || size >= Self.wakeSize) { pthread_cond_signal(changed) }
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
        if discarding { discardQueue() }
        pthread_cond_broadcast(changed)
        while running > 0 { pthread_cond_wait(changed, mutex) }
        // What the workers left after a failure.
        discardQueue()
        pthread_mutex_unlock(mutex)
    }

    /// Closes the files no worker took, which none will. With `mutex` held.
    private func discardQueue() {
        for item in queue[taken...] { if let file = item.file { close(file.fd) } }
        taken = queue.count
        openWaiting = 0
    }

    /// Records the first failure; the walk, if it waits for room, goes on (to its end, or to the
    /// next file, where `finish` throws this). With `mutex` held.
    private func fail(_ error: any Error) {
        if failure == nil { failure = error }
        pthread_cond_signal(room)
    }

    private func work() {
        let buffer = Digest.ReadBuffer()
        pthread_mutex_lock(mutex)
        while true {
            if taken < queue.count && failure == nil {
                let (number, path, part, file) = queue[taken]
                taken += 1
                if file != nil {
                    openWaiting -= 1
                    // The walk goes on once half the room is free, not at each file taken.
                    if walkWaits && openWaiting <= Self.openLimit / 2 {
                        walkWaits = false
                        pthread_cond_signal(room)
                    }
                }
                pthread_mutex_unlock(mutex)
                if part == .blocks, let blockSize = blocks?.blockSize {
                    let result = Result { try Digest.blockDigests(file: path, blockSize: blockSize, buffer: buffer, deadline: deadline) }
                    pthread_mutex_lock(mutex)
                    switch result {
                    case .success(let fileBlocks): largeFileBlocks[number] = fileBlocks
                    case .failure(let error): fail(error)
                    }
                    continue
                }
                var stream = part == .content ? nil : blocks.map { BlockDigests.Stream(blockSize: $0.blockSize) }
                let result = Result {
                    guard let file else { return try Digest.contentHash(file: path, buffer: buffer, deadline: deadline, blocks: &stream) }
                    defer { close(file.fd) }
                    return try Digest.contentHash(
                        open: file.fd, path, known: file.known, buffer: buffer, deadline: deadline, blocks: &stream)
                }
                pthread_mutex_lock(mutex)
                switch result {
                case .success(let digest):
                    digests[number] = digest
                    // A file without a full block has none to find in a block cache.
                    if let stream, !stream.blocks.isEmpty { blocks?.record(digest, stream.blocks) }
                case .failure(let error): fail(error)
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
