import CLayerSupport
import Foundation
import Glibc

// Every process layerctl starts goes through `spawn` (posix_spawn). A build's commands are started
// the same way, from inside the build's confinement, whose root is the layer.

/// Starts a program with posix_spawn, safe from a multi-threaded process: stdin from /dev/null,
/// stdout (or `stdoutFD`) and stderr (or `stderrFD`) inherited, and `handOver.fd` (if any) handed
/// over as descriptor `handOver.as`. stdin is the caller's only with `keepStdin`. No other
/// descriptor is inherited: every descriptor layerctl opens is close-on-exec.
package func spawn(
    _ executable: String, _ arguments: [String], environment: [String], handOver: (fd: Int32, as: Int32)? = nil,
    keepStdin: Bool = false, stdoutFD: Int32? = nil, stderrFD: Int32? = nil
) throws -> pid_t {
    var actions = posix_spawn_file_actions_t()
    posix_spawn_file_actions_init(&actions)
    defer { posix_spawn_file_actions_destroy(&actions) }
    if !keepStdin { posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0) }
    if let handOver { posix_spawn_file_actions_adddup2(&actions, handOver.fd, handOver.as) }
    if let stdoutFD { posix_spawn_file_actions_adddup2(&actions, stdoutFD, 1) }
    if let stderrFD { posix_spawn_file_actions_adddup2(&actions, stderrFD, 2) }
    // Then every other descriptor closes, those the caller left without close-on-exec too.
    let closeFrom = handOver.map { max(3, $0.as + 1) } ?? 3
    let closing = lc_spawn_actions_close_from(&actions, closeFrom)
    if closing != 0 { throw SystemError("start", executable, errno: closing) }
    var pid: pid_t = 0
    let result = withCStrings([executable] + arguments) { argv in
        withCStrings(environment) { envp in
            posix_spawn(&pid, executable, &actions, nil, UnsafeMutablePointer(mutating: argv),
                        UnsafeMutablePointer(mutating: envp))
        }
    }
    if result != 0 { throw SystemError("start", executable, errno: result) }
    return pid
}

/// Runs `executable` to its end and returns its exit status and standard output; its stderr goes
/// to ours, or nowhere when `quiet`.
package func capture(
    _ executable: String, _ arguments: [String], environment: [String] = ["PATH=/usr/bin:/bin:/usr/sbin:/sbin", "LC_ALL=C"],
    quiet: Bool = false
) throws -> (status: Int32, output: Data) {
    let (readEnd, writeEnd) = try makePipe(executable)
    let devNull = quiet ? open("/dev/null", O_WRONLY | O_CLOEXEC) : -1
    defer { if devNull >= 0 { close(devNull) } }
    let pid: pid_t
    do {
        pid = try spawn(
            executable, arguments, environment: environment, stdoutFD: writeEnd, stderrFD: devNull >= 0 ? devNull : nil)
    } catch {
        close(readEnd)
        close(writeEnd)
        throw error
    }
    close(writeEnd)
    let output = FileHandle(fileDescriptor: readEnd, closeOnDealloc: true).readDataToEndOfFile()
    return (waitForExit(pid), output)
}

/// Waits for `pid` and turns its status into an exit code (128 + signal when killed). With
/// `counting`, the CPU time the process and what it waited for took is added to `CPUTime`'s count
/// under that name.
package func waitForExit(_ pid: pid_t, counting work: String? = nil) -> Int32 {
    var status: Int32 = 0
    var usage = rusage()
    while wait4(pid, &status, 0, &usage) < 0 {
        if errno != EINTR { return 127 }
    }
    if let work { CPUTime.add(usage, to: work) }
    if status & 0x7f == 0 { return (status >> 8) & 0xff }
    return 128 + (status & 0x7f)
}

/// How a process ended, in words, from `waitForExit`'s code: "ended with status 1", or "was
/// killed by signal 11 (Segmentation fault)" (for a child that runs libalpm or libarchive on a
/// stranger's bytes, a crash on them).
package func exitWords(_ code: Int32) -> String {
    guard code > 128 else { return "ended with status \(code)" }
    let name = strsignal(code - 128).map { String(cString: $0) } ?? "?"
    return "was killed by signal \(code - 128) (\(name))"
}

/// The path of the running executable, for re-executing it for namespaced work.
package func currentExecutable() -> String {
    var buffer = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
    let n = readlink("/proc/self/exe", &buffer, buffer.count - 1)
    return n > 0 ? String(decoding: buffer[0..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self) : CommandLine.arguments[0]
}

/// Hands C a NULL-terminated array of C strings that lives for the call.
package func withCStrings<R>(_ strings: [String], _ body: (UnsafePointer<UnsafeMutablePointer<CChar>?>) -> R) -> R {
    let pointers = strings.map { strdup($0) } + [nil]
    defer { pointers.forEach { free($0) } }
    return pointers.withUnsafeBufferPointer { body($0.baseAddress!) }
}
