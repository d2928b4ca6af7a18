import Foundation
import Glibc
import LayerSupport

/// Runs a `run:` command as `/bin/sh -c` in the build's confined root, and streams its output line
/// by line. Returns the exit status (128 + signal when killed).
struct CommandRunner {
    let environment: [String]
    let output: (String) -> Void

    func run(_ command: String) throws -> Int32 {
        let (readEnd, writeEnd) = try makePipe(command)
        defer { close(readEnd) }
        let pid: pid_t
        do {
            defer { close(writeEnd) }
            pid = try spawn("/bin/sh", ["-c", command], environment: environment, stdoutFD: writeEnd, stderrFD: writeEnd)
        } catch let error as SystemError where error.errno == ENOENT {
            throw BuildFailure("the layer has no /bin/sh to run commands with; install a shell first", code: .input)
        }
        return try stream(from: readEnd, until: pid)
    }

    /// Reads output until the command exits. A daemon the command started may keep the pipe open,
    /// so the end is the command's exit, not the pipe's end of file.
    private func stream(from fd: Int32, until pid: pid_t) throws -> Int32 {
        var pending = Data()
        var buffer = [UInt8](repeating: 0, count: 65536)
        var status: Int32 = 0
        var exited = false
        func flushLines(final: Bool) {
            while let newline = pending.firstIndex(of: 0x0A) {
                output(String(decoding: pending[pending.startIndex..<newline], as: UTF8.self))
                pending.removeSubrange(pending.startIndex...newline)
            }
            if final && !pending.isEmpty {
                output(String(decoding: pending, as: UTF8.self))
                pending.removeAll()
            }
        }
        while true {
            var poller = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            let ready = poll(&poller, 1, exited ? 0 : 100)
            if ready > 0 {
                let n = read(fd, &buffer, buffer.count)
                if n > 0 {
                    pending.append(contentsOf: buffer[0..<n])
                    flushLines(final: false)
                    continue
                }
                if n == 0 || (n < 0 && errno != EINTR) {
                    if !exited { waitpid(pid, &status, 0); exited = true }
                    break
                }
            } else if exited {
                break
            }
            if !exited {
                let reaped = waitpid(pid, &status, WNOHANG)
                if reaped == pid { exited = true }
            }
        }
        flushLines(final: true)
        if status & 0x7f == 0 { return (status >> 8) & 0xff }
        return 128 + (status & 0x7f)
    }
}
