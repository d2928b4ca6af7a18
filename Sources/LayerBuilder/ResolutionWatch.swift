import Foundation
import Glibc
import LayerSupport

/// Holds libalpm's resolution of a layer's packages to a time and a memory limit.
///
/// libalpm's time and memory grow with the square of a dependency chain's length: a 570 KB
/// database of a 20,000-package chain took 190 s and 6 GB here, and a longer one would take the
/// host's memory. A repository is the layer author's choice. A real system resolves in seconds, in
/// less than 200 MB, so a resolution, which runs in the package work's child (`PackageWork`), gets
/// at most `seconds` and `memory` (less when `--timeout` or `--memory` say less). libalpm's call
/// cannot be interrupted: at a limit the watch kills the child, and the build fails with one line
/// at the layer's packages.
enum ResolutionWatch {
    static let seconds: Double = 300
    static let memory: Int64 = 2 << 30

    /// Starts watching the child `pid`; `failure` is the error for the limit passed ("more than
    /// 300 s").
    static func start(
        pid: pid_t, seconds: Double, memory: Int64, failure: @escaping @Sendable (String) -> any Error
    ) -> LimitWatch<any Error> {
        let deadline = Date(timeIntervalSinceNow: seconds)
        return LimitWatch(name: "resolution limits", every: 0.1, killing: pid) {
            if Date() >= deadline {
                return failure(
                    "more than \(StackBuilder.shown(seconds: seconds)) s (at most \(StackBuilder.shown(seconds: Self.seconds)) s, less with --timeout)")
            }
            if resident(pid) > memory {
                return failure("more than \(formatBytes(memory)) of memory (at most \(formatBytes(Self.memory)), less with --memory)")
            }
            return nil
        }
    }

    /// The resident memory of process `pid`, from its statm.
    private static func resident(_ pid: pid_t) -> Int64 {
        guard let text = try? String(contentsOfFile: "/proc/\(pid)/statm", encoding: .utf8) else { return 0 }
        let fields = text.split(separator: " ")
        guard fields.count > 1, let pages = Int64(fields[1]) else { return 0 }
        return pages * Int64(sysconf(Int32(_SC_PAGESIZE)))
    }
}
