import Foundation
import Glibc

/// Runs `count` numbered jobs on worker threads and hands their results to the calling thread in
/// number order. At most `window` results wait to be consumed, so memory stays bounded however
/// far the workers could run ahead; they stop when the consumer or a job fails.
package final class OrderedWork<Result>: @unchecked Sendable {
    // @unchecked: every field below is read and written with `mutex` held.
    // Allocated, because pthread objects must not move and `&property` need not be stable.
    private let mutex = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
    private let ready = UnsafeMutablePointer<pthread_cond_t>.allocate(capacity: 1)
    private let space = UnsafeMutablePointer<pthread_cond_t>.allocate(capacity: 1)
    private var next = 0
    private var consumed = 0
    private var running = 0
    private var stopped = false
    private var slots: [Swift.Result<Result, Error>?]
    private let count: Int
    private let window: Int

    package init(count: Int, window: Int) {
        self.count = count
        self.window = max(1, window)
        slots = Array(repeating: nil, count: self.window)
        pthread_mutex_init(mutex, nil)
        pthread_cond_init(ready, nil)
        pthread_cond_init(space, nil)
    }

    deinit {
        pthread_cond_destroy(space)
        pthread_cond_destroy(ready)
        pthread_mutex_destroy(mutex)
        space.deallocate()
        ready.deallocate()
        mutex.deallocate()
    }

    /// Starts `workers` threads; each calls `makeJob` once for its own state (a compressor, buffers)
    /// and runs the jobs it takes with the function returned. Then consumes every result in order
    /// and waits for the threads. The first error, a job's or the consumer's, is rethrown.
    package func run(
        workers: Int, makeJob: @escaping @Sendable () throws -> (Int) throws -> Result,
        consume: (Int, Result) throws -> Void
    ) throws {
        guard count > 0 else { return }
        running = min(workers, count)
        for _ in 0..<running {
            let thread = Thread { [self] in work(makeJob) }
            thread.stackSize = 1 << 20
            thread.start()
        }
        defer {
            lock()
            stopped = true
            pthread_cond_broadcast(space)
            while running > 0 { pthread_cond_wait(ready, mutex) }
            unlock()
        }
        for number in 0..<count {
            lock()
            while slots[number % window] == nil { pthread_cond_wait(ready, mutex) }
            let result = slots[number % window]!
            slots[number % window] = nil
            consumed = number + 1
            // Waiting workers are woken once half the window is free, not after every result:
            // when results come quickly (blocks found in the cache), a wake-up per result would
            // cost more than the work. They are waiting only for results already claimed, which
            // this loop consumes, so the wake-up always comes.
            if next - consumed <= window / 2 { pthread_cond_broadcast(space) }
            unlock()
            try consume(number, try result.get())
        }
    }

    private func work(_ makeJob: () throws -> (Int) throws -> Result) {
        var job: ((Int) throws -> Result)?
        var setupError: Error?
        do { job = try makeJob() } catch { setupError = error }
        while true {
            lock()
            while !stopped && next < count && next >= consumed + window { pthread_cond_wait(space, mutex) }
            guard !stopped && next < count else { break }
            let number = next
            next += 1
            unlock()
            let result: Swift.Result<Result, Error>
            if let job { result = Swift.Result { try job(number) } } else { result = .failure(setupError!) }
            lock()
            slots[number % window] = result
            if case .failure = result { stopped = true }
            pthread_cond_broadcast(ready)
            unlock()
        }
        running -= 1
        pthread_cond_broadcast(ready)
        unlock()
    }

    private func lock() { pthread_mutex_lock(mutex) }
    private func unlock() { pthread_mutex_unlock(mutex) }
}
