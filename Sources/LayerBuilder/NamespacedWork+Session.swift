import Foundation
import Glibc
import LayerSupport

extension NamespacedWork {
    /// The longest event line read from the work: a resolution of thousands of packages is a few MB.
    static let longestEvent = 64 << 20

    /// The parent's end of a work's events: one JSON `BuildEvent` a line. The work may parse
    /// strangers' data, so a line longer than `longestEvent` is an error, not this process's memory.
    struct EventLines {
        let role: Role
        private let reader: FileHandle
        private var pending = Data()
        /// The bytes at the start of `pending` known to hold no newline: a long line comes in
        /// many reads, and each is searched once.
        private var searched = 0

        /// Reads from `descriptor`, which it closes when done.
        init(role: Role, descriptor: Int32) {
            self.role = role
            reader = FileHandle(fileDescriptor: descriptor, closeOnDealloc: true)
        }

        /// The next event; nil once the work closed its end. A line that is no event is skipped.
        mutating func next() throws -> BuildEvent? {
            while true {
                let found: Int? = pending.withUnsafeBytes { bytes in
                    guard let base = bytes.baseAddress, bytes.count > searched,
                        let newline = memchr(base + searched, 0x0A, bytes.count - searched)
                    else { return nil }
                    return UnsafeRawPointer(newline) - base
                }
                if let found {
                    let newline = pending.startIndex + found
                    let line = pending[pending.startIndex..<newline]
                    pending.removeSubrange(pending.startIndex...newline)
                    searched = 0
                    guard let event = try? JSONDecoder().decode(BuildEvent.self, from: line) else { continue }
                    return event
                }
                if pending.count > NamespacedWork.longestEvent {
                    // An unpack's answer is as long as its blob makes it: the blob's fault.
                    throw BuildFailure(
                        "the \(role.rawValue) work sent an event of more than \(formatBytes(Int64(NamespacedWork.longestEvent))); it was stopped",
                        code: role == .unpack ? .input : .system)
                }
                searched = pending.count
                let chunk = reader.availableData
                if chunk.isEmpty { return nil }
                pending.append(chunk)
            }
        }
    }

    /// Work that answers one job after another, for the price of one process start: it is
    /// started with its first job, reads the path of each further one as a line of its stdin, and
    /// answers each with a `finished` or a `failed` event. It ends once its stdin is closed.
    final class Session {
        let role: Role
        let pid: pid_t
        /// The work's stdin: job paths, or what else the role reads there (`TarUnpackWork`'s
        /// tar); -1 once closed.
        private(set) var input: Int32
        private var events: EventLines
        private var ended = false

        /// Starts the work on the job at `jobPath`, which it answers first.
        init(_ role: Role, jobPath: String, network: Bool) throws {
            let (readEnd, writeEnd) = try makePipe("\(role.rawValue) events")
            // A socket, not a pipe: a job handed to work that died fails with EPIPE, not SIGPIPE.
            let input: (write: Int32, read: Int32)
            do {
                input = try makeSocketPair("the \(role.rawValue) work's stdin")
            } catch {
                close(readEnd)
                close(writeEnd)
                throw error
            }
            do {
                let request = Request(role: role, parent: getpid(), jobPath: jobPath)
                pid = try NamespacedWork.start(request, events: writeEnd, network: network, interactive: false, input: input.read)
            } catch {
                for fd in [readEnd, writeEnd, input.read, input.write] { close(fd) }
                throw error
            }
            close(writeEnd)
            close(input.read)
            self.role = role
            self.input = input.write
            events = EventLines(role: role, descriptor: readEnd)
        }

        deinit { end() }

        /// Hands the job at `jobPath` over (nil: the first job, handed over at the start), passes
        /// the events before its answer to `observe`, and returns the answer. `watch` watches the
        /// work meanwhile, and what it stopped the work for is thrown.
        func answer(
            _ jobPath: String?, watch: ((pid_t) -> LimitWatch<any Error>)? = nil, observe: (BuildEvent) -> Void = { _ in }
        ) throws -> BuildEvent {
            guard !ended else { throw BuildFailure("the \(role.rawValue) work has ended", code: .system) }
            if let jobPath {
                let line = Array((jobPath + "\n").utf8)
                var offset = 0
                while offset < line.count {
                    let sent = line[offset...].withUnsafeBytes { send(input, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
                    if sent < 0 && errno == EINTR { continue }
                    if sent <= 0 {
                        let status = end()
                        throw BuildFailure("the \(role.rawValue) work \(exitWords(status)) before it was given its job", code: .system)
                    }
                    offset += sent
                }
            }
            let watching = watch?(pid)
            var answer: BuildEvent?
            var failure: (any Error)?
            do {
                while answer == nil, let event = try events.next() {
                    if event.kind == .finished || event.kind == .failed { answer = event } else { observe(event) }
                }
            } catch {
                Glibc.kill(pid, SIGKILL)
                failure = error
            }
            if let watched = watching?.stop() {
                end()
                throw watched
            }
            if let failure {
                end()
                throw failure
            }
            guard let answer else {
                let status = end()
                throw BuildFailure("the \(role.rawValue) work \(exitWords(status)) before it answered", code: .system)
            }
            return answer
        }

        /// Closes the work's stdin: it has no further job (or the rest of what it reads there).
        func endInput() {
            guard input >= 0 else { return }
            close(input)
            input = -1
        }

        /// Kills the work, unless it has been waited for (its pid may be another process's then);
        /// `end` reaps it.
        func kill() {
            if !ended { Glibc.kill(pid, SIGKILL) }
        }

        /// Closes the work's stdin, which ends it, and returns its exit status.
        @discardableResult
        func end() -> Int32 {
            guard !ended else { return 0 }
            ended = true
            endInput()
            while (try? events.next()) != nil {}
            return waitForExit(pid, counting: role.rawValue)
        }
    }
}

extension BuildEvent {
    /// The `BuildFailure` a `failed` event reports.
    var failure: BuildFailure {
        BuildFailure(message ?? "", at: location, code: code ?? .build, packages: packages ?? [])
    }
}
