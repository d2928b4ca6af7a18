import CLayerSupport
import Foundation
import Glibc
import LayerSupport

/// The entry point of namespaced work: building one layer, the throwaway root of a shell, and
/// libalpm's work on strangers' data before a build (`PackageWork`, which answers one job after
/// another: `Session`).
///
/// Such work runs in a child process: the program that asks for it (`run`) starts its own
/// executable again (`/proc/self/exe`) as pid 1 of new mount, pid, uts, ipc and network namespaces
/// (the host's network only when a layer asks), with a request in the environment variable
/// `LAYERCTL_NAMESPACED_WORK`. The child makes `/` a slave of the host's mounts (the host's
/// unmounts reach it; nothing mounted in it reaches the host), names the host after the layer,
/// mounts the layer's root, enters the `Confinement` and does the work. When it dies the kernel
/// kills every process it started and tears every mount down; it dies with the process that
/// started it.
///
/// Any program that links `LayerBuilder` can do this work: it calls `runIfRequested()` first thing
/// in `main`, before it reads its command line, which plays no part. A builder reports on
/// `eventDescriptor`, one JSON `BuildEvent` per line, and so does a shell's root when it fails; a
/// shell's command has the terminal.
public enum NamespacedWork {
    /// Carries the request: `ROLE PARENT-PID JOB-PATH`.
    static let requestVariable = "LAYERCTL_NAMESPACED_WORK"
    /// The descriptor a builder writes its events to.
    static let eventDescriptor: Int32 = 3

    enum Role: String { case build, shell, packages, unpack }

    struct Request: Equatable {
        var role: Role
        /// The process whose death ends this one, as the host's /proc names it.
        var parent: pid_t
        var jobPath: String

        init(role: Role, parent: pid_t, jobPath: String) {
            self.role = role
            self.parent = parent
            self.jobPath = jobPath
        }

        init?(_ text: String) {
            let fields = text.split(separator: " ", maxSplits: 2, omittingEmptySubsequences: false)
            guard fields.count == 3, let role = Role(rawValue: String(fields[0])), let parent = pid_t(fields[1])
            else { return nil }
            self.init(role: role, parent: parent, jobPath: String(fields[2]))
        }

        var text: String { "\(role.rawValue) \(parent) \(jobPath)" }
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
        switch request.role {
        case .build: BuilderChild.build(request)
        case .shell: LayerShell.work(request)
        case .packages: PackageWork.work(request)
        case .unpack: TarUnpackWork.work(request)
        }
    }

    /// Runs `role` for the job at `jobPath` (with the host's network when `network`, with the
    /// terminal's stdin when `interactive`), hands each event to `observe`, and returns the exit
    /// status once the work is done. A `failed` event is thrown as the `BuildFailure` it reports.
    /// After `timeLimit` seconds, or once less than `reserve` is free, the work is killed, every
    /// process and mount of it with it, and `TimeLimitExceeded` or the reserve's `Reached` is
    /// thrown.
    static func run(
        _ role: Role, jobPath: String, network: Bool, interactive: Bool = false, timeLimit: Double? = nil,
        reserve: DiskReserve? = nil, observe: (BuildEvent) -> Void
    ) throws -> Int32 {
        let (readEnd, writeEnd) = try makePipe("\(role.rawValue) events")
        let pid: pid_t
        do {
            let request = Request(role: role, parent: getpid(), jobPath: jobPath)
            pid = try start(request, events: writeEnd, network: network, interactive: interactive)
        } catch {
            close(readEnd)
            close(writeEnd)
            throw error
        }
        close(writeEnd)
        let watchdog = timeLimit != nil || reserve != nil ? Watchdog.start(pid: pid, seconds: timeLimit, reserve: reserve) : nil
        var failure: (any Error)?
        var events = EventLines(role: role, descriptor: readEnd)
        // Until the work has ended: its own commands do not inherit the descriptor.
        do {
            while let event = try events.next() {
                if event.kind == .failed {
                    failure = event.failure
                } else {
                    observe(event)
                }
            }
        } catch {
            kill(pid, SIGKILL)
            failure = error
        }
        // The watchdog is done before the child is reaped: its pid is not reused until then.
        let stopped = watchdog?.stop()
        let status = waitForExit(pid, counting: role.rawValue)
        switch stopped {
        case .timeLimit: throw TimeLimitExceeded(seconds: timeLimit ?? 0)
        case .reserve(let reached): throw reached
        case nil: break
        }
        if let failure { throw failure }
        return status
    }

    /// The work took longer than it may.
    struct TimeLimitExceeded: Error {
        var seconds: Double
    }

    /// Kills a process (pid 1 of namespaced work: the rest dies with it) once its time is up, or
    /// once less than the reserve is free on the store's filesystem, which it looks at four times
    /// a second: a step that writes faster can take the reserve for that long, no longer.
    enum Watchdog {
        enum Stop {
            case timeLimit
            case reserve(DiskReserve.Reached)
        }

        static func start(pid: pid_t, seconds: Double?, reserve: DiskReserve?) -> LimitWatch<Stop> {
            let deadline = seconds.map { Date(timeIntervalSinceNow: $0) } ?? .distantFuture
            return LimitWatch(name: "build limits", every: reserve == nil ? nil : 0.25, until: deadline) {
                if Date() >= deadline { return .timeLimit }
                do { try reserve?.check("the build") } catch let reached as DiskReserve.Reached {
                    return .reserve(reached)
                } catch {}
                return nil
            } act: { _ in
                kill(pid, SIGKILL)
            }
        }
    }

    /// First thing in the work's namespaces, once it is in its cgroup: that cgroup the root of a
    /// cgroup namespace of its own, `/` a slave of the host's mounts, the host named, and without
    /// the host's network, the loopback interface up. /proc/self/cgroup says `/` then: nothing
    /// the work runs learns the host's cgroup paths, which name the service or the user session
    /// layerctl runs in.
    static func settleNamespaces(hostname: String, network: Bool) throws {
        let cgroupNamespace = lc_unshare_cgroup_namespace()
        if cgroupNamespace != 0 { throw SystemError("make the cgroup namespace of", hostname, errno: cgroupNamespace) }
        try Mounter.makeSlave("/")
        _ = sethostname(hostname, hostname.utf8.count)
        if !network {
            let up = lc_bring_up_loopback()
            if up != 0 { throw SystemError("bring up the loopback interface of", hostname, errno: up) }
        }
    }

    /// The job a request names: the JSON file its parent wrote.
    static func readJob<Job: Decodable>(_ type: Job.Type, at path: String) throws -> Job {
        guard let data = FileManager.default.contents(atPath: path) else { throw SystemError("read", path, errno: ENOENT) }
        return try JSONDecoder().decode(Job.self, from: data)
    }

    /// Makes this process die with the one that started it, and fails if that one is gone already.
    static func dieWithParent(_ request: Request) throws {
        if lc_die_with_parent(request.parent) != 0 { throw BuildFailure("abandoned: the parent process is gone", code: .system) }
    }

    /// Fails, saying so, where a command whose work is namespaced ("layerctl build") cannot do it:
    /// in a process that is not root (that work makes mount and pid namespaces, mounts, and makes
    /// files of any owner, which only root may), or where `/` is no mount point. Called first
    /// thing, it stops such a command before it touches the store, where it would fail at the
    /// first such step, with words about that step.
    public static func requireHost(_ command: String) throws {
        try NotRoot.require(
            command, because: "it works in mount and pid namespaces of its own and makes files of any owner, as pacman does")
        try UnmountedRoot.require(command, because: "the mounts of its namespaces are kept from the host's by making / a slave mount")
    }

    /// Makes the starter (`work_starter.c`): a copy of this process, made now, while it has one
    /// thread, that starts namespaced work by cloning itself where `start` would exec this
    /// executable again, about 12 ms of CPU each. Returns at once here; in a process the starter
    /// started, does its work and exits. Called first thing in `main`, by a command that starts
    /// such work more than once (a build); a process that has none execs.
    public static func makeStarter() {
        var text: UnsafeMutablePointer<CChar>?
        guard lc_starter_begin(CommandLine.argc, CommandLine.unsafeArgv, &text) == 1, let text else { return }
        guard let request = Request(String(cString: text)) else { exit(2) }
        exit(run(request))
    }

    /// Starts `request` as pid 1 of new namespaces, with `events` as its `eventDescriptor`, and
    /// `input` as its stdin: from the starter where there is one and the work needs no terminal,
    /// else by an exec of this executable.
    static func start(_ request: Request, events: Int32, network: Bool, interactive: Bool, input: Int32 = -1) throws -> pid_t {
        let environment = ProcessInfo.processInfo.environment.filter { $0.key != requestVariable }.map { "\($0.key)=\($0.value)" }
        var pid: pid_t = 0
        if !interactive && lc_starter_available() != 0 {
            let err = withCStrings(environment) { envp in
                lc_starter_start(request.text, UnsafeMutablePointer(mutating: envp), input, events, 0, network ? 0 : 1, &pid)
            }
            // Where the starter failed, the exec'd way, which fails as it always did where the
            // reason was the namespaces.
            if err == 0 { return pid }
        }
        let executable = currentExecutable()
        let requested = environment + ["\(requestVariable)=\(request.text)"]
        let err = withCStrings([executable]) { argv in
            withCStrings(requested) { envp in
                lc_spawn_in_new_namespaces(
                    executable, UnsafeMutablePointer(mutating: argv), UnsafeMutablePointer(mutating: envp), events,
                    eventDescriptor, interactive ? 1 : 0, input, network ? 0 : 1, &pid)
            }
        }
        if err != 0 { throw SystemError("start namespaced work with", executable, errno: err) }
        return pid
    }
}
