import Foundation
import Glibc
import LayerSupport

/// The resource limits of everything a build runs (libalpm's scriptlets and hooks, `run:`,
/// `boot:`), and `layerctl shell` too: those of a systemd service on a fresh system, whatever
/// `ulimit` the caller has. A login shell has 1,024 open files, this machine's tool runner 20,000,
/// a container often a million; a step that sizes itself by them, or needs more, built differently
/// or failed by who ran layerctl.
///
/// Processes are not counted by uid (the count is of every root process of the host; the build's
/// pids cgroup bounds its own), and pending signals are left as they are (the kernel sizes them by
/// the machine's memory, and they too are the host's count). A hard limit can be raised only with
/// CAP_SYS_RESOURCE, which a container's root may lack: there a hard limit the caller had below a
/// build's stays, and the soft one goes no higher (`apply` says which fell short).
enum BuildLimits {
    struct Limit {
        var resource: __rlimit_resource
        /// As `ulimit` names it, with its option.
        var name: String
        var soft: rlim_t
        var hard: rlim_t
    }

    /// RLIM_INFINITY, which Swift does not import.
    static let unlimited = rlim_t.max

    static let all: [Limit] = [
        Limit(resource: RLIMIT_NOFILE, name: "open files (-n)", soft: 1024, hard: 524_288),
        Limit(resource: RLIMIT_STACK, name: "stack size (-s)", soft: 8 << 20, hard: unlimited),
        Limit(resource: __RLIMIT_MEMLOCK, name: "locked memory (-l)", soft: 8 << 20, hard: 8 << 20),
        Limit(resource: __RLIMIT_MSGQUEUE, name: "POSIX message queues (-q)", soft: 819_200, hard: 819_200),
        Limit(resource: RLIMIT_CORE, name: "core file size (-c)", soft: 0, hard: 0),
        Limit(resource: __RLIMIT_NICE, name: "scheduling priority (-e)", soft: 0, hard: 0),
        Limit(resource: __RLIMIT_RTPRIO, name: "real-time priority (-r)", soft: 0, hard: 0),
        Limit(resource: RLIMIT_CPU, name: "cpu time (-t)", soft: unlimited, hard: unlimited),
        Limit(resource: __RLIMIT_RTTIME, name: "real-time cpu time (-R)", soft: unlimited, hard: unlimited),
        Limit(resource: RLIMIT_FSIZE, name: "file size (-f)", soft: unlimited, hard: unlimited),
        Limit(resource: RLIMIT_DATA, name: "data size (-d)", soft: unlimited, hard: unlimited),
        Limit(resource: RLIMIT_AS, name: "virtual memory (-v)", soft: unlimited, hard: unlimited),
        Limit(resource: __RLIMIT_RSS, name: "resident set size (-m)", soft: unlimited, hard: unlimited),
        Limit(resource: __RLIMIT_LOCKS, name: "file locks (-x)", soft: unlimited, hard: unlimited),
        Limit(resource: __RLIMIT_NPROC, name: "processes (-u)", soft: unlimited, hard: unlimited),
    ]

    /// Sets the calling process's limits, and so those of what it starts, to `all`. Returns what
    /// fell short: each limit whose soft value stays below a build's, since the caller's hard
    /// limit is lower and this process cannot raise it (a caller's bound on what a build has no
    /// limit of, time or memory, holds without a word: it is a bound, and the build's own are
    /// `--timeout` and `--memory`).
    static func apply() throws -> [String] {
        var short: [String] = []
        for limit in all {
            let resource = Int32(limit.resource.rawValue)
            var wanted = rlimit(rlim_cur: limit.soft, rlim_max: limit.hard)
            if limit.resource == RLIMIT_NOFILE, let most = openFilesCeiling, most < wanted.rlim_max {
                // No process may have more than fs.nr_open, which an administrator may set lower
                // (systemd, too, takes the lower of the two).
                wanted = rlimit(rlim_cur: min(wanted.rlim_cur, most), rlim_max: most)
            }
            if setrlimit(resource, &wanted) == 0 { continue }
            guard errno == EPERM else { throw SystemError("set the limit of \(limit.name) of", "the build") }
            var caller = rlimit()
            guard getrlimit(resource, &caller) == 0 else {
                throw SystemError("read the limit of \(limit.name) of", "the build")
            }
            wanted.rlim_max = min(wanted.rlim_max, caller.rlim_max)
            wanted.rlim_cur = min(wanted.rlim_cur, wanted.rlim_max)
            guard setrlimit(resource, &wanted) == 0 else {
                throw SystemError("set the limit of \(limit.name) of", "the build")
            }
            if wanted.rlim_cur < limit.soft && limit.soft != unlimited {
                short.append("\(limit.name) \(wanted.rlim_cur) (a build's is \(limit.soft))")
            }
        }
        return short
    }

    /// What to say of the limits `apply` left short (`short`), for `who` ("the build's steps get"),
    /// or nil when none fell short.
    static func warning(_ short: [String], for who: String) -> String? {
        guard !short.isEmpty else { return nil }
        return "\(who) limits below a build's, since layerctl's hard limits are lower and it may not raise them "
            + "(no CAP_SYS_RESOURCE): \(short.joined(separator: ", "))"
    }

    /// fs.nr_open, the most open files the kernel lets a process have.
    private static var openFilesCeiling: rlim_t? {
        guard let text = try? String(contentsOfFile: "/proc/sys/fs/nr_open", encoding: .utf8) else { return nil }
        return rlim_t(text.trimmingCharacters(in: .whitespacesAndNewlines))
    }
}
