import Foundation
import Glibc
import LayerSupport

/// A thread that looks at some work every `interval` seconds (or only at `deadline`) until it is
/// stopped, and acts once `check` finds a limit passed: the build's watchdog kills its namespaced
/// work, and the watches on libalpm's resolution and downloads kill the package work
/// (`PackageWork`), whose library calls cannot be interrupted.
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
    /// Kills the process `pid` once `check` returns an error, which `stop()` then returns.
    convenience init(name: String, every interval: Double, killing pid: pid_t, check: @escaping @Sendable () -> (any Error)?) {
        self.init(name: name, every: interval, check: check) { _ in kill(pid, SIGKILL) }
    }
}
