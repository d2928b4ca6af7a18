import CLayerSupport
import Foundation
import Glibc
import LayerSupport

/// The first stage of every namespaced child (builder and shell): new mount, pid, uts and ipc
/// namespaces, `/` made private, then the second stage started as pid 1 of the new pid namespace.
enum Namespaces {
    static let parentVariable = "LAYERCTL_PARENT_PID"

    /// Enters the namespaces and runs `layerctl ARGUMENTS` inside; returns its exit status.
    static func enter(
        hostname: String, isolateNetwork: Bool, arguments: [String], eventFD: Int32?, interactive: Bool = false
    ) throws -> Int32 {
        let err = lc_unshare_build_namespaces(isolateNetwork ? 1 : 0)
        if err != 0 { throw SystemError("create namespaces for", hostname, errno: err) }
        try Mounter.makePrivate("/")
        _ = sethostname(hostname, hostname.utf8.count)
        // pid 1 of a new pid namespace sees its parent as pid 0.
        let pid = interactive
            ? try spawnInteractive(arguments, environment: environment(parent: 0))
            : try spawn(currentExecutable(), arguments, environment: environment(parent: 0), eventFD: eventFD)
        return waitForExit(pid)
    }

    /// This process's environment with the parent pid a child checks with `dieWithParent`.
    static func environment(parent: pid_t) -> [String] {
        ProcessInfo.processInfo.environment.filter { $0.key != parentVariable }.map { "\($0.key)=\($0.value)" }
            + ["\(parentVariable)=\(parent)"]
    }

    /// Makes this process die with the one that started it, and fails if that one is gone already.
    static func dieWithParent() throws {
        guard let text = ProcessInfo.processInfo.environment[parentVariable], let parent = pid_t(text) else {
            throw BuildFailure("this subcommand is started by layerctl itself, not by hand")
        }
        if lc_die_with_parent(parent) != 0 { throw BuildFailure("abandoned: the parent process is gone") }
    }
}
