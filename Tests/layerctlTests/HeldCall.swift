import Foundation
import Glibc

/// A command run under strace, which holds a system call for a while as it starts: what a slow
/// disk or a Ctrl-C at the wrong moment would do, at one chosen moment, every time.
struct HeldCall {
    let strace: Process
    /// The process that made the call.
    let pid: pid_t

    /// Runs `command` with each `call` that names `path` (any call, without one) held `seconds`
    /// as it starts; returns once one is held, nil when the command ended without making it. The
    /// command's output goes to `output`, and strace's record of the calls to `trace`.
    static func start(
        _ call: String, naming path: String? = nil, seconds: Int = 10, _ command: [String], trace: String,
        output: String? = nil
    ) throws -> HeldCall? {
        let strace = Process()
        strace.executableURL = URL(fileURLWithPath: "/usr/bin/strace")
        strace.arguments =
            ["-f", "-qq", "-o", trace, "-e", "trace=\(call)", "-e", "inject=\(call):delay_enter=\(seconds)s"]
            + (path.map { ["-P", $0] } ?? []) + command
        if let output {
            _ = FileManager.default.createFile(atPath: output, contents: nil)
            let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: output))
            strace.standardOutput = handle
            strace.standardError = handle
        } else {
            strace.standardOutput = FileHandle.nullDevice
            strace.standardError = FileHandle.nullDevice
        }
        try strace.run()
        // strace writes "PID CALL(ARGUMENTS" as the call starts.
        for _ in 0..<300 where strace.isRunning {
            Thread.sleep(forTimeInterval: 0.1)
            let lines = ((try? String(contentsOfFile: trace, encoding: .utf8)) ?? "").split(separator: "\n")
            if let pid = lines.first(where: { $0.contains(" \(call)(") }).flatMap({ pid_t($0.prefix { $0 != " " }) }) {
                return HeldCall(strace: strace, pid: pid)
            }
        }
        if strace.isRunning { strace.terminate() }
        strace.waitUntilExit()
        return nil
    }

    /// Waits for the command to end; its exit status (strace ends with it).
    func wait() -> Int32 {
        strace.waitUntilExit()
        return strace.terminationStatus
    }

    /// Kills the process that made the call (SIGKILL: strace would hold another signal until the
    /// call it delays had run), and waits for the command to end.
    func kill() {
        Glibc.kill(pid, SIGKILL)
        strace.waitUntilExit()
    }
}
