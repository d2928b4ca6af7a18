import Foundation
import LayerSupport

/// A thread that looks at the process's work every `interval` seconds until it is stopped, and
/// ends the process (`ProcessEnd`) with the error `check` returns, if it returns one: for work in a
/// library call that cannot be interrupted (libalpm's resolution, its downloads). Whatever the
/// process leaves then must be safe to leave.
final class LimitWatch: @unchecked Sendable {
    // @unchecked: `done` is only touched under `condition`.
    private let condition = NSCondition()
    private var done = false

    init(every interval: Double, name: String, check: @escaping @Sendable () -> (any Error)?) {
        let thread = Thread { [self] in
            condition.lock()
            defer { condition.unlock() }
            while !done {
                if condition.wait(until: Date(timeIntervalSinceNow: interval)) || done { continue }
                if let error = check() { ProcessEnd.now(error) }
            }
        }
        thread.name = name
        thread.start()
    }

    func stop() {
        condition.lock()
        done = true
        condition.broadcast()
        condition.unlock()
    }
}
