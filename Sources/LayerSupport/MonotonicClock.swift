import Glibc

/// Seconds on CLOCK_MONOTONIC, for durations.
package enum MonotonicClock {
    package static func seconds() -> Double {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
    }
}
