import Foundation
import Synchronization

/// Ends the process on an error from any thread, as the command line ends it on an error it
/// catches: for a watchdog whose work is stuck in a library call that cannot be interrupted
/// (libalpm's resolution), so that the error is still one line, with its exit status and its
/// `--json` record. Nothing is unwound: whatever the process leaves must be safe to leave
/// (no mount, no half layer; the store's `tmp/` is swept by the next run).
package enum ProcessEnd {
    private static let handler = Mutex<(@Sendable (any Error) -> Never)?>(nil)

    /// How the command line reports an error and exits; installed once it knows its command.
    package static func install(_ end: @escaping @Sendable (any Error) -> Never) {
        handler.withLock { $0 = end }
    }

    /// Reports `error` and ends the process, whichever thread calls it.
    package static func now(_ error: any Error) -> Never {
        if let end = handler.withLock({ $0 }) { end(error) }
        FileHandle.standardError.write(Data("layerctl: \(error)\n".utf8))
        _exit(1)
    }
}
