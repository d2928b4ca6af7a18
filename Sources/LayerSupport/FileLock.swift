import Glibc

/// An flock(2) on a file, held until `unlock()` or until the process dies — so a killed holder
/// never leaves a lock behind.
public final class FileLock: @unchecked Sendable {
    // @unchecked: one thread at a time uses a lock; the thread that took it may hand it to work
    // that finishes on another, and then no longer touches it.
    private var fd: Int32
    public let path: String

    public enum Mode { case shared, exclusive }

    /// Opens (creating) `path` and waits for the lock; `whenBusy` runs first if another holds it,
    /// to say what the wait is for.
    public convenience init(path: String, mode: Mode, whenBusy: (() -> Void)? = nil) throws {
        var fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o644)
        // A reader without write access to the store (an unprivileged export) still takes a shared
        // lock: flock(2) works on a descriptor opened read-only.
        if fd < 0 && mode == .shared && (errno == EACCES || errno == EROFS) { fd = open(path, O_RDONLY | O_CLOEXEC) }
        if fd < 0 { throw SystemError("open lock", path) }
        try self.init(waitingOn: fd, path: path, mode: mode, whenBusy: whenBusy)
    }

    /// Locks the folder `path` itself, which leaves no lock file in it; as `init(path:…)` otherwise.
    public convenience init(folder path: String, mode: Mode, whenBusy: (() -> Void)? = nil) throws {
        let fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        if fd < 0 { throw SystemError("open lock", path) }
        try self.init(waitingOn: fd, path: path, mode: mode, whenBusy: whenBusy)
    }

    private init(waitingOn fd: Int32, path: String, mode: Mode, whenBusy: (() -> Void)?) throws {
        self.fd = fd
        self.path = path
        let operation = mode == .shared ? LOCK_SH : LOCK_EX
        if let whenBusy, flock(fd, operation | LOCK_NB) != 0, errno == EWOULDBLOCK { whenBusy() }
        while flock(fd, operation) != 0 {
            if errno == EINTR { continue }
            let error = SystemError("lock", path)
            close(fd)
            self.fd = -1
            throw error
        }
    }

    /// Takes the lock only if nobody holds it; nil when it is held.
    public static func tryExclusive(path: String) -> FileLock? {
        let fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o644)
        guard fd >= 0 else { return nil }
        guard flock(fd, LOCK_EX | LOCK_NB) == 0 else {
            close(fd)
            return nil
        }
        return FileLock(fd: fd, path: path)
    }

    private init(fd: Int32, path: String) {
        self.fd = fd
        self.path = path
    }

    public func unlock() {
        if fd >= 0 { close(fd) }
        fd = -1
    }

    deinit { unlock() }
}
