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
            pid = try spawn(
                "/bin/sh", ["-c", command], environment: environment, stdoutFD: writeEnd, stderrFD: writeEnd)
        } catch let error as SystemError {
            throw Self.unstartable(error)
        }
        return try stream(from: readEnd, until: pid)
    }

    /// Why the layer's `/bin/sh` did not start, as a failure the caller places at its command. The
    /// layer's own files decide (a `files:` entry or a step that made /bin a file, or took the
    /// shell's execute bits), so it is the layer file's to mend, but for a full pids cgroup.
    static func unstartable(_ error: SystemError) -> BuildFailure {
        switch error.errno {
        case ENOENT:
            return BuildFailure("the layer has no /bin/sh to run commands with; install a shell first", code: .input)
        case EAGAIN:
            return BuildFailure(
                "the layer's /bin/sh could not be started: the build has as many processes as it may (--max-processes)")
        case E2BIG:
            // Each layer file's command and env: are held to the kernel's limits, but the env: of
            // the layers of a stack add up: past 2 MiB, a quarter of the build's stack limit.
            return BuildFailure(
                "the command and the environment (the env: of this layer and the layers below) are more than the kernel "
                    + "passes a program (Argument list too long); make them shorter", code: .input)
        default:
            return BuildFailure(
                "the layer's /bin/sh could not be started to run commands: \(String(cString: strerror(error.errno))); "
                    + "its files or steps broke /bin/sh or the path to it", code: .input)
        }
    }

    /// The longest line passed on whole. A longer one (binary output, a progress bar redrawn with
    /// `\r`) goes on in pieces of this size, so that neither memory nor the search for its end
    /// grows with it: 16 MB without a newline once held a build for more than five minutes.
    static let longestLine = 4096
    /// The most of a command's output passed on from its start: each line costs an event, so a
    /// command that prints gigabytes would otherwise hold the build for as long as the time limit
    /// (BuildKit clips a step's log at 2 MiB too). What follows is read and dropped, but for its
    /// last `keptTail` bytes, where an error is likely to be, which go on at the end.
    static let mostOutput = 2 << 20
    static let keptTail = 64 << 10

    /// The line that goes before the kept tail, when `dropped` bytes were left out.
    static func clipNote(dropped: Int) -> String {
        "(output clipped: \(dropped) bytes after the first \(mostOutput >> 20) MiB are not shown; the last lines follow)"
    }

    /// Reads output until the command exits. A daemon the command started may keep the pipe open,
    /// so the end is the command's exit, not the pipe's end of file.
    private func stream(from fd: Int32, until pid: pid_t) throws -> Int32 {
        var pending = Data()
        // How much of `pending` is known to hold no newline: a search starts past it.
        var searched = 0
        var passed = 0
        // Once `mostOutput` is passed on: the output since, and how much of it was dropped.
        var tail: Data?
        var dropped = 0
        var buffer = [UInt8](repeating: 0, count: 65536)
        var status: Int32 = 0
        var exited = false
        func pass(_ count: Int, dropping: Int) {
            let start = pending.startIndex
            output(String(decoding: pending[start..<start + count], as: UTF8.self))
            passed += count + dropping
            pending.removeSubrange(start..<start + count + dropping)
            searched = 0
        }
        func flushLines(final: Bool) {
            while true {
                let start = pending.startIndex
                if let newline = pending[(start + searched)...].firstIndex(of: 0x0A),
                    newline - start <= Self.longestLine
                {
                    pass(newline - start, dropping: 1)
                } else if pending.count >= Self.longestLine {
                    pass(Self.longestLine, dropping: 0)
                } else {
                    searched = pending.count
                    break
                }
            }
            if final && !pending.isEmpty { pass(pending.count, dropping: 0) }
        }
        func take(_ bytes: ArraySlice<UInt8>) {
            guard var kept = tail else {
                pending.append(contentsOf: bytes)
                flushLines(final: false)
                if passed >= Self.mostOutput { tail = pending }
                return
            }
            kept.append(contentsOf: bytes)
            if kept.count > Self.keptTail {
                dropped += kept.count - Self.keptTail
                kept.removeFirst(kept.count - Self.keptTail)
            }
            tail = kept
        }
        while true {
            var poller = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            let ready = poll(&poller, 1, exited ? 0 : 100)
            if ready > 0 {
                let n = read(fd, &buffer, buffer.count)
                if n > 0 {
                    take(buffer[0..<n])
                    continue
                }
                if n == 0 || (n < 0 && errno != EINTR) {
                    if !exited {
                        waitpid(pid, &status, 0)
                        exited = true
                    }
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
        if var kept = tail {
            // The tail from its first whole line, after a line that says what was left out.
            if dropped > 0, let newline = kept.firstIndex(of: 0x0A) {
                dropped += newline + 1 - kept.startIndex
                kept.removeSubrange(kept.startIndex...newline)
            }
            if dropped > 0 {
                output(Self.clipNote(dropped: dropped))
            }
            pending = kept
            searched = 0
        }
        flushLines(final: true)
        if status & 0x7f == 0 { return (status >> 8) & 0xff }
        return 128 + (status & 0x7f)
    }
}
