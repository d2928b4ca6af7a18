import Glibc
import LayerSupport
import Testing

/// The error model: a code, a message and a cause, printed as one line.
@Suite("Error model")
struct LayerErrorTests {
    struct Wrapper: LayerError {
        var code: ErrorCode { .build }
        var message: String { "build of layer gaming failed" }
        var cause: (any Error)?
    }

    @Test("a system call's error is WHAT failed: WHY, and its errno decides its code")
    func systemErrors() {
        #expect("\(SystemError("read", "/etc/x", errno: ENOENT))" == "read /etc/x failed: No such file or directory")
        #expect(SystemError("read", "/x", errno: ENOENT).code == .input)
        #expect(SystemError("create", "/x", errno: EEXIST).code == .input)
        #expect(SystemError("open", "/x", errno: EACCES).code == .privilege)
        #expect(SystemError("mount", "/x", errno: EPERM).code == .privilege)
        #expect(SystemError("write", "/x", errno: ENOSPC).code == .system)
        #expect(SystemError("read", "/x", errno: EIO).code == .system)
    }

    @Test("a cause is printed after its message; codes reach errors from outside as system")
    func chains() {
        let inner = SystemError("write", "/etc/x", errno: ENOSPC)
        let outer = Wrapper(cause: inner)
        #expect("\(outer)" == "build of layer gaming failed: write /etc/x failed: No space left on device")
        #expect("\(Wrapper(cause: nil))" == "build of layer gaming failed")
        #expect(errorCode(of: outer) == .build)
        struct Foreign: Error {}
        #expect(errorCode(of: Foreign()) == .system)
        #expect(Set(ErrorCode.allCases.map(\.rawValue)).count == ErrorCode.allCases.count)
    }

    @Test("a process's end in words, from real processes: a status, and a signal with its name")
    func exitInWords() throws {
        let exited = try capture("/bin/sh", ["-c", "exit 3"], quiet: true)
        #expect(exitWords(exited.status) == "ended with status 3")
        let crashed = try capture("/bin/sh", ["-c", "kill -SEGV $$"], quiet: true)
        #expect(exitWords(crashed.status) == "was killed by signal 11 (Segmentation fault)")
    }
}
