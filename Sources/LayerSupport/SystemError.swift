import CLayerSupport
import Glibc

/// A failed system call: what was attempted, on which path, and `strerror(errno)`.
public struct SystemError: Error, CustomStringConvertible, Sendable {
    public let operation: String
    public let path: String
    public let errno: Int32

    public init(_ operation: String, _ path: String, errno: Int32 = Glibc.errno) {
        self.operation = operation
        self.path = path
        self.errno = errno
    }

    public var description: String { "\(operation) \(path): \(String(cString: strerror(errno)))" }
}

/// Runs a call that returns -1 and sets errno on failure; throws with errno read straight away.
@discardableResult
package func sys(_ operation: String, _ path: String, _ call: () -> Int32) throws -> Int32 {
    let result = call()
    if result < 0 { throw SystemError(operation, path) }
    return result
}

/// A pipe whose both ends close on exec; children get only the end they are handed explicitly.
package func makePipe(_ purpose: String) throws -> (read: Int32, write: Int32) {
    var fds: [Int32] = [0, 0]
    _ = try sys("create pipe for", purpose) { lc_pipe_cloexec(&fds) }
    return (fds[0], fds[1])
}
