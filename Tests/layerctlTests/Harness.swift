import Foundation
import Glibc
import LayerBuilder
import LayerStore
import LayerSupport
import Testing

/// Runs the real layerctl binary against the demo repository, as a user would.
enum Harness {
    static let packageRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().path

    static var isRoot: Bool { getuid() == 0 }

    /// Where demo/make-repo.sh wrote the repositories (`LAYERCTL_DEMO_OUT` moves it).
    static var demoOut: String { ProcessInfo.processInfo.environment["LAYERCTL_DEMO_OUT"] ?? packageRoot + "/demo/out" }

    static var hasDemoRepository: Bool { FileManager.default.fileExists(atPath: demoOut + "/repo/demo/demo.db") }

    /// Root and the demo repository: what a real build needs.
    static var canBuild: Bool { isRoot && hasDemoRepository }

    /// Whether the tests' process has capability `number` (linux/capability.h) in its effective set.
    static func hasCapability(_ number: Int) -> Bool {
        let status = (try? String(contentsOfFile: "/proc/self/status", encoding: .utf8)) ?? ""
        guard let line = status.split(separator: "\n").first(where: { $0.hasPrefix("CapEff:") }),
            let set = UInt64(line.dropFirst("CapEff:".count).trimmingCharacters(in: .whitespaces), radix: 16)
        else { return false }
        return set & (1 << UInt64(number)) != 0
    }
    static let cannotBuildReason: Comment = "needs root and the demo repository (run demo/make-repo.sh as root first)"

    static var executable: String {
        var buffer = [CChar](repeating: 0, count: 4097)
        let n = readlink("/proc/self/exe", &buffer, 4096)
        let dir = (String(decoding: buffer[0..<max(n, 0)].map { UInt8(bitPattern: $0) }, as: UTF8.self) as NSString)
            .deletingLastPathComponent
        return dir + "/layerctl"
    }

    struct Result {
        var status: Int32
        var stdout: String
        var stderr: String

        /// The lines of stderr that layerctl's errors begin with (`layerctl: `), without what
        /// libalpm or a step printed around them.
        var labelled: [Substring] { stderr.split(separator: "\n").filter { $0.hasPrefix("layerctl: ") } }

        /// The layers a `build --json` built and reused, by name.
        var built: [String] { events("built") }
        var cached: [String] { events("cached") }

        func events(_ kind: String) -> [String] {
            stdout.split(separator: "\n").compactMap { line in
                guard let data = line.data(using: .utf8),
                    let object = try? JSONSerialization.jsonObject(with: data) as? [String: Any],
                    object["kind"] as? String == kind
                else { return nil }
                return object["layer"] as? String
            }
        }
    }

    /// A process of `tool` (layerctl unless named) that starts in `/`, never in the test
    /// runner's own folder: a CI may run the suite from a folder it cannot reach all along, and
    /// a shell started there opens its output with "shell-init: error retrieving current
    /// directory", which broke every test that reads a shell's output.
    ///
    /// It starts under umask 022, whatever this process's is at that moment: libalpm's extraction
    /// (libarchive), which suites run in this process, reads the umask by setting it to 0 for a
    /// moment, and a tool started then made its folders 0777 (umoci's, as the oracle of the random
    /// images, failed a CI so). A test that wants another umask sets it in its own command.
    static func process(_ arguments: [String], tool: String = executable) -> Process {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/bin/sh")
        process.arguments = ["-c", "umask 022 && exec \"$0\" \"$@\"", tool] + arguments
        process.currentDirectoryURL = URL(fileURLWithPath: "/")
        return process
    }

    /// The CPU time, user and system, of every child this test process has waited for so far.
    static func childrenCPU() -> Double {
        var usage = rusage()
        getrusage(RUSAGE_CHILDREN.rawValue, &usage)
        return CPUTime.seconds(usage)
    }

    /// The pid of a process that was, and is no more (a /bin/true that ended).
    static func pidOfExited() throws -> pid_t {
        let gone = Process()
        gone.executableURL = URL(fileURLWithPath: "/bin/true")
        try gone.run()
        gone.waitUntilExit()
        return gone.processIdentifier
    }

    /// Starts layerctl with `arguments`, its output thrown away, and returns it running.
    static func start(_ arguments: [String]) throws -> Process {
        let process = process(arguments)
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        return process
    }

    /// Runs layerctl (or `tool`) with `arguments`, stdout and stderr apart.
    @discardableResult
    static func run(_ arguments: [String], environment: [String: String] = [:], tool: String = executable) throws
        -> Result
    {
        let process = process(arguments, tool: tool)
        var env = ProcessInfo.processInfo.environment
        env.removeValue(forKey: "LAYERCTL_STORE")
        for (key, value) in environment { env[key] = value }
        process.environment = env
        // stderr goes to a file, so a chatty build can never fill a pipe nobody is reading.
        let out = Pipe()
        let errPath = try temporaryDirectory("stderr") + "/stderr"
        _ = FileManager.default.createFile(atPath: errPath, contents: nil)
        let err = try FileHandle(forWritingTo: URL(fileURLWithPath: errPath))
        process.standardOutput = out
        process.standardError = err
        try process.run()
        let outData = out.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        try err.close()
        let errData = FileManager.default.contents(atPath: errPath) ?? Data()
        try? FileManager.default.removeItem(atPath: (errPath as NSString).deletingLastPathComponent)
        return Result(status: process.terminationStatus, stdout: String(decoding: outData, as: UTF8.self),
                      stderr: String(decoding: errData, as: UTF8.self))
    }

    /// Runs layerctl with `arguments` (which ask for `--json`) and calls `body` with each event
    /// as the command prints it, while it still runs; returns its exit status. `launcher` is a
    /// command that execs layerctl with its arguments (`env --block-signal=TERM`).
    static func runReadingEvents(
        _ arguments: [String], launcher: [String] = [],
        _ body: (_ event: [String: Any], _ process: Process) throws -> Void
    ) throws -> Int32 {
        let process =
            launcher.isEmpty
            ? process(arguments) : process(launcher.dropFirst() + [executable] + arguments, tool: launcher[0])
        var env = ProcessInfo.processInfo.environment
        env.removeValue(forKey: "LAYERCTL_STORE")
        process.environment = env
        let output = Pipe()
        process.standardOutput = output
        process.standardError = FileHandle.nullDevice
        try process.run()
        var pending = Data()
        // Read to the end whatever `body` does, so the command never blocks on a full pipe.
        while case let chunk = output.fileHandleForReading.availableData, !chunk.isEmpty {
            pending.append(chunk)
            while let newline = pending.firstIndex(of: UInt8(ascii: "\n")) {
                let line = pending[pending.startIndex..<newline]
                pending.removeSubrange(pending.startIndex...newline)
                if let event = try? JSONSerialization.jsonObject(with: line) as? [String: Any] { try body(event, process) }
            }
        }
        process.waitUntilExit()
        return process.terminationStatus
    }

    /// Runs layerctl with `arguments` as on a machine without `tool`: in a private mount namespace
    /// (the host keeps its own), /dev/null, which no one may execute, is bound over each place
    /// layerctl looks for it.
    static func runWithout(_ tool: String, _ arguments: [String]) throws -> Result {
        let hide = ["/usr/bin", "/bin", "/usr/local/bin", "/usr/sbin", "/sbin"].map { "\($0)/\(tool)" }
            .filter { FileManager.default.fileExists(atPath: $0) && link($0) == nil }
            .map { "mount --bind /dev/null \($0)" }.joined(separator: " && ")
        let command = ([executable] + arguments).map { "'\($0)'" }.joined(separator: " ")
        return try run(
            ["--propagation", "private", "--mount", "sh", "-c", (hide.isEmpty ? "" : hide + " && ") + "exec " + command],
            tool: "/usr/bin/unshare")
    }

    /// Where the symlink `path` points (`/proc/PID/exe`, `/proc/PID/ns/…`); nil when it is gone.
    static func link(_ path: String) -> String? {
        var buffer = [CChar](repeating: 0, count: 4097)
        let n = readlink(path, &buffer, 4096)
        return n > 0 ? String(decoding: buffer[0..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self) : nil
    }

    /// The children of layerctl `pid` that run layerctl and have confined themselves (the seccomp
    /// filter is the last thing they take on), with their `/proc/PID/status` fields.
    static func confinedChildren(of pid: pid_t) -> [pid_t: [String: String]] {
        var children: [pid_t: [String: String]] = [:]
        for entry in (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? [] {
            guard let child = pid_t(entry), child != pid, isExecutable("/proc/\(child)/exe") else { continue }
            let fields = processStatus(child)
            if fields["PPid"] == "\(pid)" && fields["Seccomp"] == "2" { children[child] = fields }
        }
        return children
    }

    /// Whether `path` (a process's `/proc/PID/exe`) is layerctl's executable: the same file, not
    /// the same name. The name the link reads is the file's path in the reader's root, and from a
    /// chroot that path does not reach a file that a process of another mount namespace runs
    /// (the kernel then names it from that namespace's root).
    static func isExecutable(_ path: String) -> Bool {
        var running = stat(), built = stat()
        return stat(path, &running) == 0 && stat(executable, &built) == 0
            && running.st_dev == built.st_dev && running.st_ino == built.st_ino
    }

    /// The fields of `/proc/PID/status`, by name; empty once the process is gone.
    static func processStatus(_ pid: pid_t) -> [String: String] {
        let text = (try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8)) ?? ""
        var fields: [String: String] = [:]
        for line in text.split(separator: "\n") {
            let parts = line.split(separator: ":", maxSplits: 1)
            if parts.count == 2 { fields[String(parts[0])] = parts[1].trimmingCharacters(in: .whitespaces) }
        }
        return fields
    }

    static func temporaryDirectory(_ name: String) throws -> String {
        var template = Array("/var/tmp/layerctl-test-\(name)-XXXXXX".utf8CString)
        guard let path = mkdtemp(&template) else { throw SystemError("create temporary directory", name) }
        return String(cString: path)
    }

    /// The start of a root layer file that installs `packages` from the demo repository, unsigned.
    static func demoRoot(_ packages: [String]) -> String {
        """
        from: scratch
        arch: x86_64
        repos:
          - name: demo
            servers: [\(demoOut)/repo/$repo]
            siglevel: Never
        packages: [\(packages.joined(separator: ", "))]

        """
    }

    /// A copy of layers/demo whose repository points at `repo` (default: the demo repository).
    static func demoLayers(repo: String = "repo") throws -> String {
        let folder = try temporaryDirectory("layers")
        let source = packageRoot + "/layers/demo"
        for name in try FileManager.default.contentsOfDirectory(atPath: source) {
            try FileManager.default.copyItem(atPath: source + "/" + name, toPath: folder + "/" + name)
        }
        try setRepository(in: folder, to: repo)
        return folder
    }

    static func setRepository(in folder: String, to repo: String) throws {
        let path = folder + "/base.yaml"
        var text = try String(contentsOfFile: path, encoding: .utf8)
        text = text.replacingOccurrences(
            of: #"servers: \[[^\]]*\]"#, with: "servers: [\(demoOut)/\(repo)/$repo]", options: .regularExpression)
        try text.write(toFile: path, atomically: false, encoding: .utf8)
    }

    static func edit(_ path: String, _ change: (String) -> String) throws {
        let text = try String(contentsOfFile: path, encoding: .utf8)
        try change(text).write(toFile: path, atomically: false, encoding: .utf8)
    }

    /// The cgroups of builds in the folders where a layerctl this process starts makes them (one
    /// with cgroup v2, one per controller's hierarchy on a v1 host), as paths.
    static func buildCgroups() -> [String] {
        let folders = Set(BuildCgroup.Controller.allCases.compactMap { try? BuildCgroup.parentFolder($0).get() })
        return folders.sorted().flatMap { folder in
            ((try? FileManager.default.contentsOfDirectory(atPath: folder)) ?? []).filter { $0.hasPrefix(BuildCgroup.prefix) }
                .map { folder + "/" + $0 }
        }
    }

    /// The build cgroups whose owner (the pid in the name) has exited: left behind. Those of
    /// builds that other tests run at the same time are not.
    static func leftBuildCgroups() -> [String] {
        buildCgroups().filter { BuildCgroup.isLeft(($0 as NSString).lastPathComponent) }
    }

    /// Every overlay mount of this (the host's) mount namespace whose target is under `path`.
    static func leakedMounts(under path: String) throws -> [String] {
        try MountTable().entries.filter { $0.target.hasPrefix(path) || $0.source.contains(path) }.map(\.target)
    }

    /// Puts a copy of layer `key`'s directory in its place, by rename(2), as a build does that makes
    /// the layer again and gets another tree: the same bytes, a new directory.
    static func replaceLayerDirectory(_ key: String, in store: Store, sourceLocation: Testing.SourceLocation = #_sourceLocation) {
        let directory = store.layerDirectory(key)
        let (status, output) =
            (try? KernelMount.run(
                "/bin/sh", ["-c", "mv '\(directory)' '\(directory).old' && cp -a '\(directory).old' '\(directory)' && rm -rf '\(directory).old'"]))
            ?? (-1, "could not run sh")
        #expect(status == 0, "\(output)", sourceLocation: sourceLocation)
    }

    /// Checks what a store must always be: every layer complete, every ref pointing at one, and
    /// (with no build running) nothing left in tmp.
    static func expectValidStore(_ root: String, sourceLocation: Testing.SourceLocation = #_sourceLocation) throws {
        let store = try Store(root: root)
        for name in try FileManager.default.contentsOfDirectory(atPath: store.layersDirectory) {
            #expect(store.contains(name), "layers/\(name) has no layer.json", sourceLocation: sourceLocation)
            #expect(FileManager.default.fileExists(atPath: store.tree(name)), sourceLocation: sourceLocation)
        }
        for ref in try store.refs() {
            #expect(store.contains(ref.key), "ref \(ref.name) points at a missing layer", sourceLocation: sourceLocation)
        }
        #expect(try leakedMounts(under: root).isEmpty, sourceLocation: sourceLocation)
    }
}
