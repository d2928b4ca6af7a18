import Foundation

/// A value worked out on a thread of its own while the caller does something else, such as a
/// digest taken while an fsync waits for the disk. `value()` waits for it.
package final class Background<Value>: @unchecked Sendable {
    // @unchecked: the thread writes `result` before it signals `done`; `value()`, called by the
    // thread that made this, reads it only after waiting for `done`.
    private var result: Result<Value, any Error>?
    private let done = DispatchSemaphore(value: 0)
    private var waited = false

    package init(_ work: @escaping @Sendable () throws -> Value) {
        let thread = Thread { [self] in
            result = Result { try work() }
            done.signal()
        }
        thread.start()
    }

    /// The value, or the error the work threw; waits for the work the first time.
    package func value() throws -> Value {
        if !waited {
            done.wait()
            waited = true
        }
        return try result!.get()
    }
}
