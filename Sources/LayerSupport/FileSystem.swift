import CLayerSupport
import Foundation
import Glibc

/// Small file operations the store and the builder share, on paths, without following symlinks.
package enum FileSystem {
    package static func exists(_ path: String) -> Bool {
        var st = stat()
        return lstat(path, &st) == 0
    }

    package static func isDirectory(_ path: String) -> Bool {
        var st = stat()
        return lstat(path, &st) == 0 && (st.st_mode & S_IFMT) == S_IFDIR
    }

    /// Creates `path` and missing parents with `mode` (0755 unless told).
    package static func makeDirectories(_ path: String, mode: mode_t = 0o755) throws {
        if isDirectory(path) { return }
        let parent = parent(of: path)
        if !parent.isEmpty && parent != path { try makeDirectories(parent, mode: mode) }
        if mkdir(path, mode) != 0 && errno != EEXIST { throw SystemError("create directory", path) }
        _ = chmod(path, mode)
    }

    /// The folder that holds `path`, as NSString's `deletingLastPathComponent` gives it: "" for a
    /// name without a slash, "/" for a name just below the root, and slashes at the end or
    /// doubled ignored. Foundation's own traps on a one-character name ("b", ".", "é"), which
    /// made `stage --boot-dir b` crash, so layerctl never calls it.
    package static func parent(of path: String) -> String {
        var bytes = Array(path.utf8)
        while bytes.count > 1 && bytes.last == UInt8(ascii: "/") { bytes.removeLast() }
        guard let slash = bytes.lastIndex(of: UInt8(ascii: "/")) else { return "" }
        var end = slash
        while end > 0 && bytes[end - 1] == UInt8(ascii: "/") { end -= 1 }
        if end == 0 { return bytes.first == UInt8(ascii: "/") ? "/" : "" }
        return String(decoding: bytes[..<end], as: UTF8.self)
    }

    /// The directory part and the last name of `path` ("." when it has no slash).
    package static func split(_ path: String) -> (directory: String, name: String) {
        guard let slash = path.lastIndex(of: "/") else { return (".", path) }
        let directory = slash == path.startIndex ? "/" : String(path[..<slash])
        return (directory, String(path[path.index(after: slash)...]))
    }

    /// The longest part of `path` that is there (a link counts, dangling or not), and the names
    /// after it that are not, as `/a/b` (empty when the whole path is there): for a path that a
    /// command will make, or that a message must place, resolved as far as it can be.
    package static func existingPart(of path: String) -> (existing: String, missing: String) {
        var existing = path
        var missing = ""
        while !exists(existing) {
            let (directory, name) = split(existing)
            guard directory != existing else { break }
            missing = "/" + name + missing
            existing = directory
        }
        return (existing, missing)
    }

    /// Where an output the user named (`-o PATH`) goes. A file is replaced by a rename, which
    /// replaces a symlink itself: `-o /dev/stdout` put a regular file in place of the host's
    /// /dev/stdout, and a device's name (`-o /dev/sdb`) became a file in /dev. So a symlink is
    /// followed to the file it names, and `special` says what the path leads to when that is no
    /// regular file or folder ("a block device"): the caller writes into it, or refuses it.
    package static func outputTarget(_ path: String) -> (path: String, special: String?) {
        var target = path
        var st = stat()
        if lstat(path, &st) == 0 && st.st_mode & S_IFMT == S_IFLNK, let resolved = realpath(path, nil) {
            target = String(cString: resolved)
            free(resolved)
        }
        guard stat(target, &st) == 0 else { return (target, nil) }
        return (target, special(st.st_mode))
    }

    /// What a file of `mode` is when it is no regular file or folder ("a block device"), else nil.
    package static func special(_ mode: mode_t) -> String? {
        switch mode & S_IFMT {
        case S_IFREG, S_IFDIR: return nil
        case S_IFBLK: return "a block device"
        case S_IFCHR: return "a character device"
        case S_IFIFO: return "a pipe"
        case S_IFSOCK: return "a socket"
        default: return "no regular file"
        }
    }

    /// Writes `data` to the output the user named: into it when it is a pipe or a terminal
    /// (`-o /dev/stdout`), else as `writeAtomically` does, through a symlink.
    package static func writeOutput(_ data: Data, to path: String) throws {
        let (target, special) = outputTarget(path)
        guard special != nil else { return try writeAtomically([(data, target)], owner: userOwner(ofOutput: target)) }
        let fd = try sys("open", path) { open(path, O_WRONLY | O_CLOEXEC | O_NOCTTY) }
        defer { close(fd) }
        try data.withUnsafeBytes { try writeAll(fd, $0, to: path) }
    }

    /// Removes what a layerctl killed while it wrote `path` left beside it: `.NAME.layerctl-PID`
    /// (`stagingPath`). A dir export stopped by Ctrl-C left its whole tree there, hidden, and the
    /// next export, of another pid, never looked.
    package static func removeAbandonedStaging(beside path: String) {
        let (directory, name) = split(path)
        removeAbandoned(in: directory, prefix: "." + name + ".layerctl-")
    }

    /// Where a folder output `path` (a dir export, an OCI layout) is made before its rename into
    /// place, once `path` is shown fit for one: no device, pipe or socket (`what` names the output
    /// in that refusal), and no folder with anything in it (`operation` names the work in that
    /// one). What killed writers left beside it is removed first.
    package static func folderStaging(for path: String, what: String, operation: String) throws -> String {
        if let special = outputTarget(path).special { throw RefusedOutput(path, is: special, what: what) }
        if exists(path), !((try? listDirectory(path))?.isEmpty ?? false) { throw SystemError(operation, path, errno: EEXIST) }
        removeAbandonedStaging(beside: path)
        let staging = stagingPath(beside: path)
        try? removeTree(staging)
        return staging
    }

    /// Removes the entries of `directory` named `PREFIX` and a pid (then the end, or `-` and
    /// anything) whose process is gone, and that are this user's folders or files: what layerctl
    /// processes killed before they removed them left. A name of a process still running, or of
    /// another user's, is left alone.
    package static func removeAbandoned(in directory: String, prefix: String) {
        guard let names = try? listDirectory(directory) else { return }
        for entry in names where entry.hasPrefix(prefix) {
            let digits = entry.dropFirst(prefix.count).prefix { $0 != "-" }
            guard let pid = pid_t(digits), pid > 0, pid != getpid() else { continue }
            guard kill(pid, 0) != 0 && errno == ESRCH else { continue }
            let abandoned = directory + "/" + entry
            var st = stat()
            guard lstat(abandoned, &st) == 0, st.st_uid == geteuid(),
                st.st_mode & S_IFMT == S_IFDIR || st.st_mode & S_IFMT == S_IFREG
            else { continue }
            try? removeTree(abandoned)
        }
    }

    /// `path` without the slashes it ends in ("out/" is "out"), but "/" itself.
    package static func trimmingTrailingSlashes(_ path: String) -> String {
        var trimmed = Substring(path)
        while trimmed.count > 1 && trimmed.hasSuffix("/") { trimmed = trimmed.dropLast() }
        return String(trimmed)
    }

    /// A hidden name beside `path` for work in progress, `DIR/.NAME.layerctl-PID`, so it is on the
    /// same file system and a rename(2) can move it into place.
    package static func stagingPath(beside path: String) -> String {
        let (directory, name) = split(path)
        return directory + "/." + name + ".layerctl-\(getpid())"
    }

    /// The bytes of the file at `path`, or nil when it cannot be read.
    package static func contents(_ path: String) -> [UInt8]? {
        FileManager.default.contents(atPath: path).map { Array($0) }
    }

    /// The bytes of the regular file at `path`. Anything else (a FIFO, a device, a folder) is
    /// refused as soon as it is opened, without blocking on it or reading from it; so is a file of
    /// more than `limit` bytes (`FileTooLarge`), before anything of it is read.
    package static func readRegularFile(_ path: String, atMost limit: Int64? = nil) throws -> Data {
        let fd = try sys("open", path) { open(path, O_RDONLY | O_NONBLOCK | O_NOCTTY | O_CLOEXEC) }
        return try readRegularFile(opened: fd, path: path, atMost: limit)
    }

    /// The bytes of the file open at `fd` (opened with O_NONBLOCK, so a FIFO did not block the
    /// open), which is closed; anything but a regular file is refused without being read, and so
    /// is a file of more than `limit` bytes, or one that grows past it while it is read.
    package static func readRegularFile(opened fd: Int32, path: String, atMost limit: Int64? = nil) throws -> Data {
        let handle = FileHandle(fileDescriptor: fd, closeOnDealloc: true)
        var st = stat()
        try sys("read", path) { fstat(fd, &st) }
        guard (st.st_mode & S_IFMT) == S_IFREG else { throw SystemError("read", path, errno: EINVAL) }
        guard let limit else { return try handle.readToEnd() ?? Data() }
        try FileTooLarge.check(path, size: st.st_size, limit: limit)
        let data = try handle.read(upToCount: Int(limit) + 1) ?? Data()
        try FileTooLarge.check(path, size: data.count, limit: limit)  // it grew
        return data
    }

    /// The program `tool` in $PATH, or in the system folders when $PATH lacks them (sudo, cron).
    package static func executable(_ tool: String) -> String? {
        let path = ProcessInfo.processInfo.environment["PATH"] ?? ""
        let folders =
            path.split(separator: ":").map(String.init) + ["/usr/local/bin", "/usr/bin", "/bin", "/usr/sbin", "/sbin"]
        return folders.map { $0 + "/" + tool }.first { access($0, X_OK) == 0 }
    }

    /// The target of the symlink at `path`, as raw bytes.
    package static func readLink(_ path: [UInt8]) throws -> [UInt8] {
        var buffer = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
        let count = RawPath.with(path) { readlink($0, &buffer, buffer.count) }
        if count < 0 { throw SystemError("read symlink", RawPath.string(path)) }
        return buffer[0..<count].map { UInt8(bitPattern: $0) }
    }

    /// `readLink(path)` for the entry `name` of the open folder `directory`.
    package static func readLink(at directory: Int32, _ name: [UInt8], path: [UInt8]) throws -> [UInt8] {
        var buffer = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
        let count = RawPath.with(name) { readlinkat(directory, $0, &buffer, buffer.count) }
        if count < 0 { throw SystemError("read symlink", RawPath.string(path)) }
        return buffer[0..<count].map { UInt8(bitPattern: $0) }
    }

    /// Writes all of `buffer` to `fd` (the file `path`), however many write(2) calls that takes.
    package static func writeAll(_ fd: Int32, _ buffer: UnsafeRawBufferPointer, to path: String) throws {
        var offset = 0
        while offset < buffer.count, let base = buffer.baseAddress {
            let n = write(fd, base + offset, buffer.count - offset)
            if n < 0 {
                if errno == EINTR { continue }
                throw SystemError("write", path)
            }
            offset += n
        }
    }

    /// Writes all of `buffer` at `offset` of `fd` (pwrite), which is the file at `path`.
    package static func writeAll(_ fd: Int32, _ buffer: UnsafeRawBufferPointer, at offset: UInt64, to path: String) throws {
        var done = 0
        while done < buffer.count, let base = buffer.baseAddress {
            let n = pwrite(fd, base + done, buffer.count - done, off_t(offset) + off_t(done))
            if n < 0 {
                if errno == EINTR { continue }
                throw SystemError("write", path)
            }
            done += n
        }
    }

    /// A new file beside `path`, `PATH.tmp-PID-RANDOM`, open for writing, for a write that renames
    /// it over `path` once it is whole. It is made with O_EXCL under a name no one can guess, so
    /// nothing already there is followed or truncated. The folder may be anyone's (`sbom -o
    /// /tmp/…`), or a layer's tree, where a run: step could leave a symlink at any name it can
    /// guess: with a name of the pid alone, the normaliser's rewrite of the tree's machine-id
    /// wrote through such a symlink into whatever host file it named.
    package static func createTemporary(beside path: String, mode: mode_t) throws -> (fd: Int32, path: String) {
        while true {
            // 32 random bits: a guess would take billions of symlinks. Short, so a name near
            // NAME_MAX still has room for it.
            let temporary = path + ".tmp-\(getpid())-" + String(UInt32.random(in: 0...UInt32.max), radix: 16)
            let fd = open(temporary, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode)
            if fd >= 0 { return (fd, temporary) }
            if errno != EEXIST { throw SystemError("create", temporary) }
        }
    }

    /// Writes each of `files` to a temporary file beside it and puts them in place with
    /// `renameSynced`. On a failure before the renames none is renamed and no temporary file is left. With
    /// `owner`, each file gets that owner and exactly `mode`, whatever the umask.
    package static func writeAtomically(
        _ files: [(data: Data, path: String)], mode: mode_t = 0o644, owner: (uid: uid_t, gid: gid_t)? = nil
    ) throws {
        var written: [(fd: Int32, temporary: String, path: String)] = []
        var failure: (any Error)?
        for file in files {
            let fd: Int32
            let temporary: String
            do { (fd, temporary) = try createTemporary(beside: file.path, mode: mode) } catch {
                failure = error
                break
            }
            written.append((fd, temporary, file.path))
            // Where it may not be given away (not root), the file stays this process's.
            if let owner, fchown(fd, owner.uid, owner.gid) == 0 { fchmod(fd, mode) }
            do { try file.data.withUnsafeBytes { try writeAll(fd, $0, to: temporary) } } catch {
                failure = error
                break
            }
        }
        defer { for file in written { close(file.fd) } }
        if let failure {
            for file in written { unlink(file.temporary) }
            throw failure
        }
        try renameSynced(written.map { ($0.fd, $0.temporary, $0.path) })
    }

    /// Renames each open file `from` to `to`, in order, once every one is synced (their fsyncs
    /// waited for together), and returns once the renames are on disk too: each file is synced
    /// again, then its folder. FAT (most ESPs: loader.conf, grubenv, the boot entries, a staged
    /// kernel) keeps a file's size and first cluster in its folder's entry alone, and a rename over
    /// a file writes them into the entry it takes over only when the file is written back: with the
    /// folder synced alone, a power cut left loader.conf naming the clusters of the file it
    /// replaced, which the rename had freed, and the kernel then set the ESP read-only
    /// (StagingTests.fatBootPartition). Elsewhere the second sync commits what the folder's would.
    /// On a failure before every file is renamed, those not renamed are removed.
    package static func renameSynced(_ files: [(fd: Int32, from: String, to: String)]) throws {
        var renamed = 0
        do {
            try syncTogether(files.map { ($0.fd, $0.from) })
            for file in files {
                try sys("rename", file.to) { rename(file.from, file.to) }
                renamed += 1
            }
        } catch {
            for file in files.dropFirst(renamed) { unlink(file.from) }
            throw error
        }
        try syncTogether(files.map { ($0.fd, $0.to) })
        for directory in Set(files.map { split($0.to).directory }).sorted() { try syncDirectory(directory) }
    }

    /// Returns once everything written to the filesystem that holds `path` is on disk: the data
    /// and metadata of a whole tree in one call (syncfs(2)), where an fsync per file would cost the
    /// disk a flush per file.
    package static func syncFileSystem(of path: String) throws {
        let fd = try sys("open", path) { open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC) }
        defer { close(fd) }
        try sys("sync the filesystem of", path) { lc_syncfs(fd) }
    }

    /// Has the disk start writing the file at `path`, waiting for nothing (sync_file_range), so a
    /// later sync finds it written; nothing where it cannot be opened.
    package static func startWriteback(of path: String) {
        let fd = open(path, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC)
        guard fd >= 0 else { return }
        lc_start_writeback(fd, 0, 0)
        close(fd)
    }

    /// Returns once the entries of the directory at `path` are on disk: a rename(2) into it is
    /// then durable.
    package static func syncDirectory(_ path: String) throws {
        let fd = try sys("open", path) { open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC) }
        defer { close(fd) }
        try sys("sync", path) { fsync(fd) }
    }

    /// fsyncs `files` at once, the last on this thread and the others on threads of their own, so
    /// the disk can flush them together; throws the first failure once all are done.
    private static func syncTogether(_ files: [(fd: Int32, name: String)]) throws {
        guard let last = files.last else { return }
        let others = files.dropLast().map { file in
            Background { if fsync(file.fd) != 0 { throw SystemError("sync", file.name) } }
        }
        var failure: (any Error)?
        if fsync(last.fd) != 0 { failure = SystemError("sync", last.name) }
        for other in others {
            do { try other.value() } catch { failure = failure ?? error }
        }
        if let failure { throw failure }
    }

    /// Writes `data` to `path` in place, without fsync: for scratch files, and for trees that are
    /// not layers until their commit (a crash before it discards them whole). Foundation's
    /// `Data.write(to:)` fsyncs every file, which costs a disk flush per package in a build. A
    /// symlink at `path` is refused, not followed.
    package static func writeFile(_ data: Data, to path: String, mode: mode_t = 0o644) throws {
        let fd = try sys("create", path) { open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, mode) }
        defer { close(fd) }
        try data.withUnsafeBytes { try writeAll(fd, $0, to: path) }
    }

    /// Writes `data` to `path` through a temporary file, fsync and rename(2), so readers see old or
    /// new, and after a power cut the new.
    package static func writeAtomically(_ data: Data, to path: String, mode: mode_t = 0o644) throws {
        try writeAtomically([(data, path)], mode: mode)
    }

    /// `writeAtomically`, the file taking the owner and permission bits of the regular file
    /// `reference` (which may be `path` itself): what layerctl, run with sudo, writes into a user's
    /// folder beside the user's file (a lock beside its layer file, a layer file rewritten) stays
    /// the user's, as the file it comes from is.
    package static func writeAtomically(_ data: Data, to path: String, ownedLike reference: String) throws {
        var st = stat()
        guard stat(reference, &st) == 0, st.st_mode & S_IFMT == S_IFREG else { return try writeAtomically(data, to: path) }
        try writeAtomically([(data, path)], mode: st.st_mode & 0o777, owner: (st.st_uid, st.st_gid))
    }

    /// The owner of what layerctl writes at `path`, an output a user named (`-o`): the owner of its
    /// folder, when layerctl runs as root and a user owns the folder (`sudo layerctl build
    /// gaming.yaml -o ~/gaming.squashfs`), so the user may replace it without root, as a lock
    /// beside its layer file is the layer file's owner's; nil (root's, then) otherwise.
    package static func userOwner(ofOutput path: String) -> (uid: uid_t, gid: gid_t)? {
        var folder = stat()
        guard geteuid() == 0, stat(split(path).directory, &folder) == 0, folder.st_uid != 0 else { return nil }
        return (folder.st_uid, folder.st_gid)
    }

    /// Gives every entry of the tree at `path`, which layerctl made and holds no link, to `owner`.
    package static func changeOwner(ofTree path: String, to owner: (uid: uid_t, gid: gid_t)) throws {
        try sys("give to its folder's owner", path) { lchown(path, owner.uid, owner.gid) }
        guard isDirectory(path) else { return }
        for name in try listDirectory(path) { try changeOwner(ofTree: path + "/" + name, to: owner) }
    }

    /// Puts the regular file `source` at `target` as a hard link, or as a copy where the two are on
    /// different filesystems; the copy appears whole or not at all.
    package static func linkOrCopy(_ source: String, to target: String) throws {
        if link(source, target) == 0 { return }
        guard errno == EXDEV else { throw SystemError("link \(source) to", target) }
        try copyFile(source, to: target)
    }

    /// Copies the regular file `source` to `target` with its modification time (a download's
    /// If-Modified-Since reads it), which appears whole or not at all.
    package static func copyFile(_ source: String, to target: String) throws {
        let input = try sys("read", source) { open(source, O_RDONLY | O_NOFOLLOW | O_CLOEXEC) }
        defer { close(input) }
        let (output, temporary) = try createTemporary(beside: target, mode: 0o644)
        do {
            defer { close(output) }
            let st = try copyData(from: input, source, to: output, temporary)
            var times = [st.st_atim, st.st_mtim]
            try sys("set the time of", temporary) { futimens(output, &times) }
            try sys("rename", target) { rename(temporary, target) }
        } catch {
            unlink(temporary)
            throw error
        }
    }

    /// Copies every byte of the open file `input` (named `source` in errors) to the open, empty
    /// file `output` (`target`): in the kernel where it can (copy_file_range), through a buffer
    /// where it cannot (another filesystem). Returns the input's stat.
    @discardableResult
    package static func copyData(from input: Int32, _ source: String, to output: Int32, _ target: String) throws -> stat {
        var st = stat()
        try sys("read", source) { fstat(input, &st) }
        try sys("copy \(source) to", target) { lc_copy_range(input, 0, output, 0, Int(st.st_size)) }
        return st
    }

    /// Removes a tree, whatever it holds (device nodes, whiteouts, read-only directories, names
    /// that are not UTF-8, folders nested deeper than any path can name). A symlink is removed,
    /// never followed; a tree that is not there is no error.
    package static func removeTree(_ path: String) throws { try removeTree(Array(path.utf8)) }

    package static func removeTree(_ path: [UInt8]) throws {
        var st = stat()
        guard RawPath.with(path, { lstat($0, &st) }) == 0 else { return }
        guard (st.st_mode & S_IFMT) == S_IFDIR else {
            _ = try RawPath.with(path) { p in try sys("remove", RawPath.string(path)) { unlink(p) } }
            return
        }
        try walkBelow(path, makeReadable: true) { folder, name, st, shown in
            let flags = (st.st_mode & S_IFMT) == S_IFDIR ? AT_REMOVEDIR : 0
            // The path is spelled only for a message: it is as long as the tree is deep.
            guard RawPath.with(name, { unlinkat(folder, $0, flags) }) == 0 else {
                let error = errno
                throw SystemError("remove", shown(), errno: error)
            }
        }
        _ = try RawPath.with(path) { p in try sys("remove directory", RawPath.string(path)) { rmdir(p) } }
    }

    /// Calls `leave` for every entry below the folder `path`, a folder after its entries, with the
    /// open folder that holds it, its name, its stat, and its path for messages. The walk holds
    /// one folder open at a time, goes back up by `..` (`OpenFolder.parent`, which checks it is
    /// the folder it came from), and makes no call with a whole path, so no depth is too deep.
    /// Nothing else may change the tree meanwhile; `makeReadable` gives each folder owner rwx
    /// first (a build may leave one unreadable).
    private static func walkBelow(
        _ path: [UInt8], makeReadable: Bool,
        leave: (_ folder: Int32, _ name: [UInt8], _ st: stat, _ shown: () -> String) throws -> Void
    ) throws {
        struct Level {
            var name: [UInt8]
            var device: dev_t
            var inode: ino_t
            var names: [[UInt8]]
            var next = 0
        }
        var levels: [Level] = []
        /// The path of the folder the walk is in, for messages only: it is as long as the tree is deep.
        var here: [UInt8] { levels.dropFirst().reduce(path) { RawPath.join($0, $1.name) } }
        if makeReadable { _ = RawPath.with(path) { chmod($0, 0o700) } }
        var folder = try OpenFolder(at: AT_FDCWD, path, path: path)
        var st = stat()
        guard fstat(folder.descriptor, &st) == 0 else { throw SystemError("read directory", RawPath.string(path)) }
        levels.append(Level(name: [], device: st.st_dev, inode: st.st_ino, names: folder.names))
        while let level = levels.last {
            if level.next < level.names.count {
                let name = level.names[level.next]
                levels[levels.count - 1].next += 1
                guard RawPath.with(name, { fstatat(folder.descriptor, $0, &st, AT_SYMLINK_NOFOLLOW) }) == 0 else {
                    throw SystemError.keepingErrno("read") { RawPath.join(here, name) }
                }
                guard (st.st_mode & S_IFMT) == S_IFDIR else {
                    try leave(folder.descriptor, name, st) { RawPath.string(RawPath.join(here, name)) }
                    continue
                }
                if makeReadable { _ = RawPath.with(name) { fchmodat(folder.descriptor, $0, 0o700, 0) } }
                folder = try OpenFolder(at: folder.descriptor, name, path: RawPath.join(here, name))
                levels.append(Level(name: name, device: st.st_dev, inode: st.st_ino, names: folder.names))
                continue
            }
            guard levels.count > 1 else { return }
            let done = levels.removeLast()
            let parent = levels[levels.count - 1]
            folder = try folder.parent(expecting: parent.device, parent.inode, names: parent.names, path: here)
            guard RawPath.with(done.name, { fstatat(folder.descriptor, $0, &st, AT_SYMLINK_NOFOLLOW) }) == 0 else {
                throw SystemError.keepingErrno("read") { RawPath.join(here, done.name) }
            }
            try leave(folder.descriptor, done.name, st) { RawPath.string(RawPath.join(here, done.name)) }
        }
    }

    /// The names in a directory as raw bytes, without "." and "..", in byte order.
    package static func listDirectory(_ path: [UInt8]) throws -> [[UInt8]] {
        guard let dir = RawPath.with(path, { opendir($0) }) else {
            throw SystemError("read directory", RawPath.string(path))
        }
        defer { closedir(dir) }
        return names(of: dir)
    }

    /// The names in the folder open at `fd` (which stays open), without "." and "..", in byte order.
    package static func listDirectory(opened fd: Int32, path: String) throws -> [[UInt8]] {
        let copy = try sys("read directory", path) { dup(fd) }
        guard let dir = fdopendir(copy) else {
            close(copy)
            throw SystemError("read directory", path)
        }
        defer { closedir(dir) }
        return names(of: dir)
    }

    /// The names a directory stream holds as raw bytes, without "." and "..", in byte order.
    static func names(of dir: OpaquePointer) -> [[UInt8]] { entries(of: dir).map(\.name) }

    /// The names a directory stream holds as raw bytes, without "." and "..", in byte order, each
    /// with the type readdir(3) gives it (`DT_…`; DT_UNKNOWN where the filesystem does not say).
    static func entries(of dir: OpaquePointer) -> [(name: [UInt8], type: UInt8)] {
        var entries: [(name: [UInt8], type: UInt8)] = []
        while let entry = readdir(dir) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { Array($0.prefix { $0 != 0 }) }
            if name != [0x2E] && name != [0x2E, 0x2E] { entries.append((name, entry.pointee.d_type)) }
        }
        return entries.sorted { $0.name.lexicographicallyPrecedes($1.name) }
    }

    /// The names in a directory, without "." and "..", in byte order.
    package static func listDirectory(_ path: String) throws -> [String] {
        guard let dir = opendir(path) else { throw SystemError("read directory", path) }
        defer { closedir(dir) }
        var names: [String] = []
        while let entry = readdir(dir) {
            let name = withUnsafePointer(to: entry.pointee.d_name) {
                $0.withMemoryRebound(to: CChar.self, capacity: 256) { String(cString: $0) }
            }
            if name != "." && name != ".." { names.append(name) }
        }
        return names.sorted { $0.utf8.lexicographicallyPrecedes($1.utf8) }
    }

    /// The size in bytes of everything under `path` (file sizes, not blocks); 0 for what cannot
    /// be read.
    package static func treeSize(_ path: String) -> Int64 { treeSize(Array(path.utf8)) }

    package static func treeSize(_ path: [UInt8]) -> Int64 {
        var st = stat()
        guard RawPath.with(path, { lstat($0, &st) }) == 0 else { return 0 }
        guard (st.st_mode & S_IFMT) == S_IFDIR else { return Int64(st.st_size) }
        var total: Int64 = 0
        try? walkBelow(path, makeReadable: false) { _, _, st, _ in
            if (st.st_mode & S_IFMT) != S_IFDIR { total += Int64(st.st_size) }
        }
        return total
    }
}

extension SystemError {
    /// The failure of the call just made, on the path `path` spells, which is spelled only now:
    /// errno is read first, since spelling it allocates.
    static func keepingErrno(_ operation: String, _ path: () -> [UInt8]) -> SystemError {
        let error = Glibc.errno
        return SystemError(operation, RawPath.string(path()), errno: error)
    }
}

/// A folder opened without following a symlink, with its names (no "." and "..") in byte order;
/// its descriptor reaches them (`fstatat`, `openat`) without the kernel walking the whole path
/// again for each. Closed when it goes.
package final class OpenFolder {
    package let descriptor: Int32
    package let names: [[UInt8]]
    /// Each name's type as readdir(3) gives it (`DT_…`, DT_UNKNOWN where the filesystem does not
    /// say); empty for a folder opened again (`parent`).
    package let types: [UInt8]
    private let stream: OpaquePointer

    /// Opens the entry `name` of the folder `directory` (AT_FDCWD and a path for the first one);
    /// `path` names it in messages, and is spelled only for one.
    package init(at directory: Int32, _ name: [UInt8], path: @autoclosure () -> [UInt8]) throws {
        let fd = RawPath.with(name) { openat(directory, $0, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC) }
        // errno first: spelling the path allocates.
        guard fd >= 0 else { throw SystemError.keepingErrno("read directory", path) }
        guard let stream = fdopendir(fd) else {
            let failure = SystemError.keepingErrno("read directory", path)
            close(fd)
            throw failure
        }
        self.stream = stream
        self.descriptor = fd
        let entries = FileSystem.entries(of: stream)
        self.names = entries.map(\.name)
        self.types = entries.map(\.type)
    }

    private init(descriptor: Int32, stream: OpaquePointer, names: [[UInt8]]) {
        self.descriptor = descriptor
        self.stream = stream
        self.names = names
        self.types = []
    }

    /// This folder's parent, opened through `..` and checked to be the folder `device` and `inode`
    /// (the one a walk came down from), with the `names` the walk read before.
    package func parent(
        expecting device: dev_t, _ inode: ino_t, names: [[UInt8]], path: @autoclosure () -> [UInt8]
    ) throws -> OpenFolder {
        let fd = openat(descriptor, "..", O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard fd >= 0 else { throw SystemError.keepingErrno("read directory", path) }
        var st = stat()
        guard fstat(fd, &st) == 0, let stream = fdopendir(fd) else {
            let failure = SystemError.keepingErrno("read directory", path)
            close(fd)
            throw failure
        }
        guard st.st_dev == device, st.st_ino == inode else {
            closedir(stream)
            throw SystemError("walk back up to", RawPath.string(path()), errno: ESTALE)
        }
        return OpenFolder(descriptor: fd, stream: stream, names: names)
    }

    deinit { closedir(stream) }
}
