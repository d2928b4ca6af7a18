import CLayerSupport
import Glibc

/// A failed system call: what was attempted, on which path, and `strerror(errno)`.
public struct SystemError: LayerError {
    public let operation: String
    public let path: String
    public let errno: Int32

    public init(_ operation: String, _ path: String, errno: Int32 = Glibc.errno) {
        self.operation = operation
        self.path = path
        self.errno = errno
    }

    /// Permission refused is a missing privilege; a path that is missing, there already, or of the
    /// wrong type is what the user named; everything else is the system's failure.
    public var code: ErrorCode {
        switch errno {
        case EPERM, EACCES: .privilege
        case ENOENT, EEXIST, EISDIR, ENOTDIR, ENAMETOOLONG, ELOOP: .input
        default: .system
        }
    }
    public var message: String { "\(operation) \(path) failed" }
    public var cause: (any Error)? { Reason(errno: errno) }
}

/// Runs a call that returns -1 and sets errno on failure; throws with errno read straight away.
@discardableResult
package func sys(_ operation: String, _ path: String, _ call: () -> Int32) throws -> Int32 {
    let result = call()
    if result < 0 { throw SystemError(operation, path) }
    return result
}

/// A connected pair of stream sockets, both closing on exec: unlike a pipe's, a write to one whose
/// reader is gone fails with EPIPE under MSG_NOSIGNAL, where a pipe raises SIGPIPE.
package func makeSocketPair(_ purpose: String) throws -> (Int32, Int32) {
    var fds: [Int32] = [-1, -1]
    _ = try sys("make a socket pair for", purpose) {
        socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0, &fds)
    }
    return (fds[0], fds[1])
}

/// A pipe whose both ends close on exec; children get only the end they are handed explicitly.
package func makePipe(_ purpose: String) throws -> (read: Int32, write: Int32) {
    var fds: [Int32] = [0, 0]
    _ = try sys("create pipe for", purpose) { lc_pipe_cloexec(&fds) }
    return (fds[0], fds[1])
}
