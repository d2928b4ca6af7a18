import Glibc
import Synchronization

/// Where a command's CPU time went: its own process (every thread), and the work of the children
/// it waited for, by what they did (`waitForExit(_:counting:)`), each with whatever they waited
/// for in turn. User and system time together, in seconds. A build's `--json` summary carries it,
/// and `Benchmarks/build.sh` puts each part beside pacman's.
package enum CPUTime {
    private static let children = Mutex<[String: Double]>([:])

    /// Adds a reaped child's time (`wait4`'s) to `work`'s.
    static func add(_ usage: rusage, to work: String) {
        let seconds = self.seconds(usage)
        children.withLock { $0[work, default: 0] += seconds }
    }

    /// The time of the children waited for so far, by the name they were counted under.
    package static var byWork: [String: Double] { children.withLock { $0 } }

    /// This process's own time so far, every thread of it (`getrusage(RUSAGE_SELF)`).
    package static var own: Double {
        var usage = rusage()
        getrusage(RUSAGE_SELF.rawValue, &usage)
        return seconds(usage)
    }

    /// User and system time of `usage`, in seconds.
    package static func seconds(_ usage: rusage) -> Double {
        Double(usage.ru_utime.tv_sec + usage.ru_stime.tv_sec) + Double(usage.ru_utime.tv_usec + usage.ru_stime.tv_usec) / 1e6
    }
}
