import Foundation
import LayerSupport

/// A thread that looks at some work every `interval` seconds (or only at `deadline`) until it is
/// stopped, and acts once `check` finds a limit passed: the build's watchdog kills its namespaced
/// work; the watches on libalpm's resolution and downloads, which run in a library call that
/// cannot be interrupted, end the process (`ProcessEnd`), so whatever the process leaves then
/// must be safe to leave.
final class LimitWatch<Outcome>: @unchecked Sendable {
    // @unchecked: `done` and `outcome` are only touched under `condition`.
    private let condition = NSCondition()
    private var done = false
    private var outcome: Outcome?

    init(
        name: String, every interval: Double? = nil, until deadline: Date = .distantFuture,
        check: @escaping @Sendable () -> Outcome?, act: @escaping @Sendable (Outcome) -> Void
    ) {
        let thread = Thread { [self] in
            condition.lock()
            defer { condition.unlock() }
            while !done {
                let look = interval.map { min(deadline, Date(timeIntervalSinceNow: $0)) } ?? deadline
                if condition.wait(until: look) || done { continue }
                if let found = check() {
                    outcome = found
                    act(found)
                    return
                }
            }
        }
        thread.name = name
        thread.start()
    }

    /// Stops watching; says which limit was passed, if one was.
    @discardableResult
    func stop() -> Outcome? {
        condition.lock()
        defer { condition.unlock() }
        done = true
        condition.broadcast()
        return outcome
    }
}

extension LimitWatch where Outcome == any Error {
    /// Ends the process with the error `check` returns, if it returns one.
    convenience init(name: String, every interval: Double, check: @escaping @Sendable () -> (any Error)?) {
        self.init(name: name, every: interval, check: check) { ProcessEnd.now($0) }
    }
}
