import Glibc

/// Seconds on CLOCK_MONOTONIC, for durations.
package enum MonotonicClock {
    package static func seconds() -> Double {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
    }
}

/// A moment on the monotonic clock by which work must be done: a layer's time limit, which covers
/// reading the tree its steps made as well as the steps.
package struct Deadline: Sendable {
    package let seconds: Double
    private let at: Double

    /// `seconds` from now.
    package init(seconds: Double) {
        self.seconds = seconds
        self.at = MonotonicClock.seconds() + seconds
    }

    /// Throws `Passed`, saying what was being done, once the moment has come.
    package func check(_ doing: @autoclosure () -> String) throws {
        if MonotonicClock.seconds() > at { throw Passed(seconds: seconds, doing: doing()) }
    }

    package struct Passed: Error {
        package let seconds: Double
        package let doing: String
    }
}
