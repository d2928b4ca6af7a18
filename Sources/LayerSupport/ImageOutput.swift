import CLayerSupport
import Glibc

/// A file that appears at `path` only once it is complete.
///
/// The data goes to an unnamed file (O_TMPFILE) in the destination's directory, so a crash or
/// `kill -9` leaves nothing behind at all. `commit` fsyncs it, gives it a temporary name and
/// renames that over `path` in one step, so `path` holds either the previous file or the new one.
/// Where the file system has no O_TMPFILE, a hidden `.NAME.layerctl-PID` file stands in and is
/// removed on failure.
package final class ImageOutput {
    package let path: String
    package let fd: Int32
    /// A name of the file while it is written: the unnamed file through /proc, or the stand-in.
    package let writePath: String
    private var fallbackPath: String?
    private var committed = false
    private var digest: Background<String>?

    package init(path named: String) throws {
        // Through a symlink to the file it names; never over a device, a pipe or a socket, whose
        // name the rename would replace with a file (`-o /dev/sdb` made one in /dev).
        let (path, special) = FileSystem.outputTarget(named)
        if let special { throw RefusedOutput(named, is: special, what: "an image") }
        self.path = path
        let (directory, name) = FileSystem.split(path)
        guard !name.isEmpty else { throw SystemError("write image to", path, errno: EISDIR) }
        if FileSystem.isDirectory(path) { throw SystemError("write image to", path, errno: EISDIR) }
        FileSystem.removeAbandonedStaging(beside: path)
        var fd = open(directory, Self.temporaryFileFlag | O_RDWR | O_CLOEXEC, 0o644)
        if fd >= 0 {
            writePath = "/proc/self/fd/\(fd)"
        } else if errno == EOPNOTSUPP || errno == EISDIR || errno == EINVAL {
            let fallback = FileSystem.stagingPath(beside: path)
            fd = open(fallback, O_CREAT | O_EXCL | O_RDWR | O_CLOEXEC, 0o644)
            if fd < 0 { throw SystemError("create", fallback) }
            fallbackPath = fallback
            writePath = fallback
        } else {
            throw SystemError("create an image in", directory)
        }
        self.fd = fd
        // The umask must not decide the image's mode.
        fchmod(fd, 0o644)
    }

    /// O_TMPFILE, which Glibc's Swift module hides behind _GNU_SOURCE.
    private static let temporaryFileFlag: Int32 = 0o20_000_000 | O_DIRECTORY

    deinit {
        if !committed, let fallbackPath { unlink(fallbackPath) }
        close(fd)
    }

    /// Starts reading the finished file's sha256 on a thread of its own, so that it overlaps what
    /// comes before `commit` (the block cache's sync) and the fsync in it.
    package func startDigest() {
        if digest == nil { digest = Background { [writePath] in try Digest.sha256(file: writePath) } }
    }

    /// Run with sudo, layerctl writes its image into a user's folder (`-o ~/gaming.squashfs`): the
    /// image is the user's then (`FileSystem.userOwner`). In a folder of root's (`/var/lib`,
    /// `/boot`, `/tmp`), root's.
    private func giveToFolderOwner() throws {
        guard let owner = FileSystem.userOwner(ofOutput: path) else { return }
        try sys("give the image to the owner of its folder,", path) { fchown(fd, owner.uid, owner.gid) }
    }

    /// Makes the finished file durable and puts it at `path`, replacing what was there. With
    /// `digesting` (or after `startDigest`), returns the file's sha256, read while the fsync waits
    /// for the disk.
    @discardableResult
    package func commit(digesting: Bool = false) throws -> String? {
        if digesting { startDigest() }
        try giveToFolderOwner()
        try sys("write", path) { fsync(fd) }
        let sha256 = try digest?.value()
        var temporary = fallbackPath
        if temporary == nil {
            let linked = FileSystem.stagingPath(beside: path)
            unlink(linked)
            try sys("name the image", linked) { linkat(AT_FDCWD, writePath, AT_FDCWD, linked, AT_SYMLINK_FOLLOW) }
            temporary = linked
        }
        guard let temporary else { return sha256 }
        if rename(temporary, path) != 0 {
            let error = SystemError("move the image to", path)
            unlink(temporary)
            throw error
        }
        committed = true
        fallbackPath = nil
        // The name on disk too: after a power cut, what was exported is there.
        try FileSystem.syncDirectory(FileSystem.split(path).directory)
        return sha256
    }
}
