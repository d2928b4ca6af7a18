import CLayerSupport
import Foundation
import Glibc
import LayerSupport

/// The entry point of namespaced work: building one layer, and the throwaway root of a shell.
///
/// Such work runs in a child process, in two stages. The program that asks for it (`start`) runs
/// its own executable again (`/proc/self/exe`) with a request in the environment variable
/// `LAYERCTL_NAMESPACED_WORK`. Stage one leaves the program's namespaces: new mount, pid, uts, ipc
/// and network namespaces (the host's network only when a layer asks), `/` made a slave of the
/// host's mounts (the host's unmounts reach it; nothing mounted in it reaches the host), the host
/// named after the layer; it mounts the layer's root. It starts stage two the same way, as pid 1
/// of the new pid namespace, which enters the `Confinement` and does the work. When either stage
/// dies the kernel kills the rest and tears every mount down; each stage dies with the process
/// that started it.
///
/// Any program that links `LayerBuilder` can do this work: it calls `runIfRequested()` first thing
/// in `main`, before it reads its command line, which plays no part. A builder reports on
/// `eventDescriptor`, one JSON `BuildEvent` per line, and so does a shell's root when it fails; a
/// shell's command has the terminal.
public enum NamespacedWork {
    /// Carries the request: `ROLE STAGE PARENT-PID JOB-PATH`.
    static let requestVariable = "LAYERCTL_NAMESPACED_WORK"
    /// The descriptor a builder writes its events to, in both stages.
    static let eventDescriptor: Int32 = 3

    enum Role: String { case build, shell }
    enum Stage: String { case namespaces, work }

    struct Request: Equatable {
        var role: Role
        var stage: Stage
        /// The process whose death ends this one; 0 (as pid 1 sees its parent) in stage two.
        var parent: pid_t
        var jobPath: String

        init(role: Role, stage: Stage, parent: pid_t, jobPath: String) {
            self.role = role
            self.stage = stage
            self.parent = parent
            self.jobPath = jobPath
        }

        init?(_ text: String) {
            let fields = text.split(separator: " ", maxSplits: 3, omittingEmptySubsequences: false)
            guard fields.count == 4, let role = Role(rawValue: String(fields[0])),
                let stage = Stage(rawValue: String(fields[1])), let parent = pid_t(fields[2])
            else { return nil }
            self.init(role: role, stage: stage, parent: parent, jobPath: String(fields[3]))
        }

        var text: String { "\(role.rawValue) \(stage.rawValue) \(parent) \(jobPath)" }
    }

    /// Does the requested work and exits with its status, when this process was started to do
    /// namespaced work; returns at once otherwise. The request is taken out of the environment, so
    /// nothing the work starts (package scriptlets, `run:` commands) inherits it.
    public static func runIfRequested() {
        guard let text = getenv(requestVariable).map({ String(cString: $0) }) else { return }
        unsetenv(requestVariable)
        guard let request = Request(text) else {
            FileHandle.standardError.write(Data("layerctl: \(requestVariable): not a request: \(text)\n".utf8))
            exit(2)
        }
        exit(run(request))
    }

    static func run(_ request: Request) -> Int32 {
        switch (request.role, request.stage) {
        case (.build, .namespaces): BuilderChild.enterNamespaces(request)
        case (.build, .work): BuilderChild.build(request)
        case (.shell, .namespaces): LayerShell.enterNamespaces(request)
        case (.shell, .work): LayerShell.work(request)
        }
    }

    /// Runs `role` for the job at `jobPath` (with the terminal's stdin when `interactive`), hands
    /// each event to `observe`, and returns the exit status once the work is done. A `failed` event
    /// is thrown as the `BuildFailure` it reports. After `timeLimit` seconds the work is killed,
    /// every process and mount of it with it, and `TimeLimitExceeded` is thrown.
    static func run(
        _ role: Role, jobPath: String, interactive: Bool = false, timeLimit: Double? = nil, observe: (BuildEvent) -> Void
    ) throws -> Int32 {
        let (readEnd, writeEnd) = try makePipe("\(role.rawValue) events")
        let pid: pid_t
        do {
            let request = Request(role: role, stage: .namespaces, parent: getpid(), jobPath: jobPath)
            pid = try startExecutable(request, events: writeEnd, interactive: interactive)
        } catch {
            close(readEnd)
            close(writeEnd)
            throw error
        }
        close(writeEnd)
        let watchdog = timeLimit.map { Watchdog(pid: pid, seconds: $0) }
        var failure: BuildFailure?
        let reader = FileHandle(fileDescriptor: readEnd, closeOnDealloc: true)
        var pending = Data()
        // Until every stage has ended: the work's own commands do not inherit the descriptor.
        while true {
            let chunk = reader.availableData
            if chunk.isEmpty { break }
            pending.append(chunk)
            while let newline = pending.firstIndex(of: 0x0A) {
                let line = pending[pending.startIndex..<newline]
                pending.removeSubrange(pending.startIndex...newline)
                guard let event = try? JSONDecoder().decode(BuildEvent.self, from: line) else { continue }
                if event.kind == .failed {
                    failure = BuildFailure(
                        event.message ?? "", at: event.location, code: event.code ?? .build, packages: event.packages ?? [])
                } else {
                    observe(event)
                }
            }
        }
        // The watchdog is done before the child is reaped: its pid is not reused until then.
        let expired = watchdog?.stop() ?? false
        let status = waitForExit(pid)
        if expired { throw TimeLimitExceeded(seconds: timeLimit ?? 0) }
        if let failure { throw failure }
        return status
    }

    /// The work took longer than it may.
    struct TimeLimitExceeded: Error {
        var seconds: Double
    }

    /// Kills a process (stage one of namespaced work: the rest dies with it) once its time is up.
    final class Watchdog: @unchecked Sendable {
        // @unchecked: `done` and `expired` are only touched under `condition`.
        private let condition = NSCondition()
        private var done = false
        private var expired = false

        init(pid: pid_t, seconds: Double) {
            let deadline = Date(timeIntervalSinceNow: seconds)
            let thread = Thread { [self] in
                condition.lock()
                defer { condition.unlock() }
                while !done && condition.wait(until: deadline) {}
                if !done {
                    expired = true
                    kill(pid, SIGKILL)
                }
            }
            thread.name = "build time limit"
            thread.start()
        }

        /// Stops watching; true when the time was up and the process was killed.
        func stop() -> Bool {
            condition.lock()
            defer { condition.unlock() }
            done = true
            condition.broadcast()
            return expired
        }
    }

    /// Stage one: moves into new mount, pid, uts and ipc namespaces, and a network namespace with
    /// loopback only unless `network`; makes `/` a slave of the host's mounts and names the host.
    static func enterNamespaces(hostname: String, network: Bool) throws {
        let err = lc_unshare_build_namespaces(network ? 0 : 1)
        if err != 0 { throw SystemError("create namespaces for", hostname, errno: err) }
        try Mounter.makeSlave("/")
        _ = sethostname(hostname, hostname.utf8.count)
        if !network {
            let up = lc_bring_up_loopback()
            if up != 0 { throw SystemError("bring up the loopback interface of", hostname, errno: up) }
        }
    }

    /// Stage one: runs stage two as pid 1 of the new pid namespace and returns its exit status.
    static func startWork(_ request: Request, interactive: Bool = false) throws -> Int32 {
        var inside = request
        inside.stage = .work
        inside.parent = 0  // pid 1 of a new pid namespace sees its parent as pid 0
        return waitForExit(try startExecutable(inside, events: eventDescriptor, interactive: interactive))
    }

    /// Makes this process die with the one that started it, and fails if that one is gone already.
    static func dieWithParent(_ request: Request) throws {
        if lc_die_with_parent(request.parent) != 0 { throw BuildFailure("abandoned: the parent process is gone", code: .system) }
    }

    private static func startExecutable(_ request: Request, events: Int32, interactive: Bool) throws -> pid_t {
        let environment =
            ProcessInfo.processInfo.environment.filter { $0.key != requestVariable }.map { "\($0.key)=\($0.value)" }
            + ["\(requestVariable)=\(request.text)"]
        return try spawn(
            currentExecutable(), [], environment: environment,
            handOver: (fd: events, as: eventDescriptor), keepStdin: interactive)
    }
}
