import CArchive
import CLayerSupport
import Crypto
import Foundation
import Glibc
import LayerEntries
import LayerExport
import LayerSupport

/// A layer blob that cannot be taken: its digest is not what the manifest says, or an entry would
/// reach out of the layer. Names the entry, and why.
public struct LayerBlobError: LayerError {
    public let message: String
    public var code: ErrorCode { .input }
    public var cause: (any Error)? { nil }
}

/// Unpacks an OCI layer blob, untrusted input, into a new layer tree: `.wh.NAME` becomes an
/// overlayfs whiteout (a 0:0 character device) and `.wh..wh..opq` marks its folder opaque.
/// Refused, naming the entry: an absolute name, a `..`, a name through a symlink or below a file,
/// a hard link to anything but an earlier non-folder entry of the same layer, a whiteout of `.` or
/// `..`, an entry twice, a special tar type, and data shorter or longer than its header says.
/// `trusted.overlay.*` attributes, overlayfs's own bookkeeping, are dropped, and so is aufs's
/// (`.wh..wh.*` at the root but the opaque marker, `Whiteout.isAufsMetadata`). A whiteout hides
/// only what is below (the OCI spec): of a name the blob also holds, before or after it, it makes
/// that name the blob's own, and a folder opaque and new.
public struct OCILayerReader {
    /// The blob's file, or its name in messages when it is read from `stream`.
    let blob: String
    let stream: Int32?

    public init(blob: String) {
        self.blob = blob
        stream = nil
    }

    /// A blob read once from the descriptor `stream` (a socket the download writes into), called
    /// `name` in messages; only `unpack` reads it.
    public init(stream: Int32, name: String) {
        blob = name
        self.stream = stream
    }

    /// Makes the folder a layer is unpacked into: 0755, as the layer's root is when its tar does
    /// not say (`./`), whatever the umask of whoever runs layerctl.
    static func makeRoot(_ tree: String) throws {
        try sys("create", tree) { mkdir(tree, 0o755) }
        try sys("change the mode of", tree) { chmod(tree, 0o755) }
    }

    /// `sha256:…` of the blob as stored.
    public func digest() throws -> String { "sha256:" + (try Digest.contentHash(file: Array(blob.utf8))).hex }

    /// `sha256:…` of the uncompressed tar, whatever the compression.
    public func diffID() throws -> String { try decompressed { _ in } }

    /// Decompresses the blob into the socket `output` (the unpack's end, `unpackPlainTar`) and
    /// returns its diff_id, `sha256:…` of the tar, taken here: the process that parses the tar
    /// is not trusted with it. Throws `OutputClosed` when the other end stopped reading.
    package func decompress(into output: Int32) throws -> String {
        try decompressed { bytes in
            var offset = 0
            while offset < bytes.count {
                let sent = Glibc.send(output, bytes.baseAddress! + offset, bytes.count - offset, Int32(MSG_NOSIGNAL))
                if sent < 0 && errno == EINTR { continue }
                if sent <= 0 { throw OutputClosed() }
                offset += sent
            }
        }
    }

    /// The diff_id, with each chunk of the uncompressed tar passed to `take` on the way.
    private func decompressed(_ take: (UnsafeRawBufferPointer) throws -> Void) throws -> String {
        let archive = try open(raw: true)
        defer { archive_read_free(archive) }
        var header: OpaquePointer?
        guard archive_read_next_header(archive, &header) == ARCHIVE_OK else { throw failure("reading it", archive) }
        var hasher = SHA256()
        let size = 1 << 20
        let buffer = UnsafeMutableRawPointer.allocate(byteCount: size, alignment: 16)
        defer { buffer.deallocate() }
        while true {
            let count = archive_read_data(archive, buffer, size)
            if count < 0 {
                let message = archive_error_string(archive).map { String(cString: $0) } ?? "unknown error"
                throw LayerBlobError(message: "decompressing the layer blob failed: \(message)")
            }
            if count == 0 { break }
            let bytes = UnsafeRawBufferPointer(start: buffer, count: count)
            hasher.update(bufferPointer: bytes)
            try take(bytes)
        }
        return "sha256:" + Hash256(hasher.finalize()).hex
    }

    /// What reads the decompressed tar stopped before its end.
    package struct OutputClosed: Error {}

    /// Unpacks into `tree`, which must not exist; on any refusal nothing of it is left. A folder the
    /// tar only implies (the root, or a folder above an entry) keeps what the layers below say of
    /// it, as the OCI spec has it: its mode, owner, time and attributes (but `trusted.*`) from the
    /// topmost of `lower` (the trees below, topmost first) that shows it, never through a symlink;
    /// without one, 0755 root:root at the epoch. A whiteout that hides nothing the trees below
    /// show is left out. Returns the diff_id, `sha256:…` of the uncompressed tar, taken in the same
    /// pass (the blob is decompressed once).
    ///
    /// In this process, which reads the lower trees' opaque markers: a pull parses a stranger's
    /// tar in a confined one (`unpackPlainTar`).
    @discardableResult
    public func unpack(into tree: String, lower: [String] = []) throws -> String {
        try Self.makeRoot(tree)
        return try unpack(into: tree, lower: lower.map { LowerTree(path: $0) }, plainTar: false).diffID
    }

    /// The most a blob may hold after the tar's end: GNU tar's largest record size (`-b 2048`,
    /// 1 MiB), and then some.
    static let paddingLimit = 8 << 20

    /// Unpacks a plain tar, decompressed already, into the empty folder `tree`, as `unpack` does,
    /// but for the attributes only CAP_SYS_ADMIN may set (`trusted.*`, the opaque markers among
    /// them): those are returned, for a process that has it to set (`DeferredAttribute.apply`).
    /// What unpacks an untrusted tar need not keep that capability. No digest is taken.
    /// `reserve` is the one to keep on the tree's filesystem, when the caller knows it better
    /// than the tree's path tells (`DiskReserve.seen(at:)`).
    package func unpackPlainTar(into tree: String, lower: [LowerTree] = [], reserve: DiskReserve? = nil) throws -> [DeferredAttribute] {
        try unpack(into: tree, lower: lower, plainTar: true, reserve: reserve).deferred
    }

    private func unpack(
        into tree: String, lower: [LowerTree], plainTar: Bool, reserve: DiskReserve? = nil
    ) throws -> (diffID: String, deferred: [DeferredAttribute]) {
        do {
            var unpacking = Unpacking(tree: tree, blob: blob)
            unpacking.lower = lower
            unpacking.lowerOpaque = try lower.map(Unpacking.OpaqueLookup.init)
            unpacking.deferring = plainTar
            unpacking.reserve = try reserve ?? DiskReserve(for: tree)
            try unpacking.reserve?.check("unpacking the layer blob \(blob)")
            // The tar reader reads the raw reader's output, which is hashed on the way (a plain
            // tar's diff_id is the caller's to take).
            let raw = try open(raw: true, decompressing: !plainTar)
            defer { archive_read_free(raw) }
            var header: OpaquePointer?
            guard archive_read_next_header(raw, &header) == ARCHIVE_OK else { throw failure("reading it", raw) }
            let stream = HashedStream(raw: raw, source: self.stream, hashing: !plainTar)
            defer { stream.stop() }
            guard let archive = archive_read_new() else { throw LayerBlobError(message: "cannot read \(blob)") }
            defer { archive_read_free(archive) }
            archive_read_support_format_tar(archive)
            let context = Unmanaged.passUnretained(stream).toOpaque()
            guard archive_read_open(archive, context, nil, HashedStream.read, nil) == ARCHIVE_OK else {
                // The blob could be read (and decompressed, if it was gzip or zstd): it is no tar.
                let why = archive_error_string(archive).map { String(cString: $0) } ?? "libarchive failed"
                throw stream.failure ?? LayerBlobError(message: "the layer blob \(blob) is no tar, plain, gzip or zstd (\(why))")
            }
            while true {
                let status = archive_read_next_header(archive, &header)
                if status == ARCHIVE_EOF { break }
                // ARCHIVE_RETRY is a header that does not check out ("Damaged tar archive"): no
                // entry, though libarchive would skip to the next one that does.
                guard status == ARCHIVE_OK || status == ARCHIVE_WARN, let header else {
                    throw stream.failure ?? failure("reading its next entry", archive)
                }
                do { try unpacking.take(header, from: archive) } catch { throw stream.failure ?? error }
            }
            try unpacking.finish()
            // What follows the tar's end (its padding) counts in the diff_id too. A writer pads
            // to its record size (GNU tar's is 10,240 bytes); more is a few megabytes of zstd
            // asking to be decompressed for nothing.
            var padding = 0
            while true {
                let count = try stream.next().1
                if count == 0 { break }
                padding += count
                if padding > Self.paddingLimit {
                    throw LayerBlobError(
                        message: "the layer blob \(blob) holds more than \(Self.paddingLimit) bytes after the tar's end, where a tar writer pads to a record")
                }
            }
            return (plainTar ? "" : "sha256:" + Hash256(stream.hasher.finalize()).hex, unpacking.deferred)
        } catch {
            try? FileSystem.removeTree(tree)
            throw error
        }
    }

    /// The uncompressed bytes of a blob, from a raw libarchive reader, hashed as they are read.
    /// A thread of its own decompresses and hashes a few chunks ahead of the tar reader, so that
    /// the two share the machine's cores: the tar reader writes files and hashes them meanwhile.
    private final class HashedStream: @unchecked Sendable {
        // @unchecked: a chunk slot is the producer's from `emptied` to `filled` and the tar
        // reader's from `filled` to `emptied`; `hasher` is read only after the end was taken;
        // `stopping` is set before `emptied` is signalled and read after it is waited for.
        let raw: OpaquePointer
        private(set) var hasher = SHA256()
        private let hashing: Bool
        var failure: (any Error)?
        private static let slots = 3
        private static let size = 1 << 20
        private let buffers = (0..<slots).map { _ in UnsafeMutableRawPointer.allocate(byteCount: size, alignment: 16) }
        private var counts = [Int](repeating: 0, count: slots)
        private var errors = [(any Error)?](repeating: nil, count: slots)
        private let filled = DispatchSemaphore(value: 0)
        private let emptied = DispatchSemaphore(value: slots)
        private let finished = DispatchSemaphore(value: 0)
        private var stopping = false
        private var taken = 0
        private var holding = false
        private var ended = false
        private var stopped = false
        /// The descriptor the blob streams in on, shut down to wake a producer blocked on it.
        private let source: Int32?

        init(raw: OpaquePointer, source: Int32?, hashing: Bool = true) {
            self.raw = raw
            self.source = source
            self.hashing = hashing
            let thread = Thread { [self] in produce() }
            thread.stackSize = 1 << 20
            thread.start()
        }

        deinit { for buffer in buffers { buffer.deallocate() } }

        private func produce() {
            var index = 0
            while true {
                emptied.wait()
                if stopping { break }
                let slot = index % Self.slots
                let count = archive_read_data(raw, buffers[slot], Self.size)
                if count < 0 {
                    let message = archive_error_string(raw).map { String(cString: $0) } ?? "unknown error"
                    errors[slot] = LayerBlobError(message: "decompressing the layer blob failed: \(message)")
                    counts[slot] = -1
                    filled.signal()
                    break
                }
                if hashing { hasher.update(bufferPointer: UnsafeRawBufferPointer(start: buffers[slot], count: count)) }
                counts[slot] = count
                filled.signal()
                if count == 0 { break }
                index += 1
            }
            finished.signal()
        }

        /// The next chunk, valid until the next call; a count of 0 at the end (and after it).
        func next() throws -> (UnsafeMutableRawPointer, Int) {
            if ended { return (buffers[0], 0) }
            if holding {
                holding = false
                emptied.signal()
            }
            filled.wait()
            let slot = taken % Self.slots
            taken += 1
            if counts[slot] < 0 {
                ended = true
                throw errors[slot] ?? LayerBlobError(message: "decompressing the layer blob failed")
            }
            if counts[slot] == 0 { ended = true } else { holding = true }
            return (buffers[slot], counts[slot])
        }

        /// Ends the producer and waits for it; before `raw` is freed. A producer blocked reading
        /// the stream is woken by shutting the stream down: the unpacking is over either way.
        func stop() {
            guard !stopped else { return }
            stopped = true
            stopping = true
            if !ended, let source { shutdown(source, Int32(SHUT_RDWR)) }
            // One more than the slots: the producer may be all of them ahead and take one more
            // wait to see `stopping`, and libdispatch kills the process that frees a semaphore
            // whose value is under the one it was made with.
            for _ in 0...Self.slots { emptied.signal() }
            finished.wait()
        }

        /// libarchive's read callback for the tar reader.
        static let read: @convention(c) (OpaquePointer?, UnsafeMutableRawPointer?, UnsafeMutablePointer<UnsafeRawPointer?>?) -> la_ssize_t = {
            _, context, output in
            guard let context, let output else { return -1 }
            let stream = Unmanaged<HashedStream>.fromOpaque(context).takeUnretainedValue()
            do {
                let (buffer, count) = try stream.next()
                output.pointee = UnsafeRawPointer(buffer)
                return la_ssize_t(count)
            } catch {
                stream.failure = error
                return -1
            }
        }
    }

    private func open(raw: Bool, decompressing: Bool = true) throws -> OpaquePointer {
        guard let archive = archive_read_new() else { throw LayerBlobError(message: "cannot read \(blob)") }
        // The compressions OCI layers have: gzip and zstd (a plain tar needs none). libarchive's
        // other filters are no layer's, and some of them (lrzip, grzip, lzop) run a program of the
        // host's on what a registry sent.
        if decompressing {
            archive_read_support_filter_gzip(archive)
            archive_read_support_filter_zstd(archive)
        }
        if raw { archive_read_support_format_raw(archive) } else { archive_read_support_format_tar(archive) }
        let opened = stream.map { archive_read_open_fd(archive, $0, 1 << 20) } ?? archive_read_open_filename(archive, blob, 1 << 20)
        if opened != ARCHIVE_OK {
            defer { archive_read_free(archive) }
            throw failure("opening it", archive)
        }
        return archive
    }

    private func failure(_ operation: String, _ archive: OpaquePointer) -> LayerBlobError {
        let why = archive_error_string(archive).map { String(cString: $0) } ?? "libarchive failed"
        return LayerBlobError(message: "the layer blob \(blob) does not unpack: \(why) (\(operation))")
    }
}

/// A tree below the one a blob unpacks into: a layer's, as overlayfs will merge them.
package struct LowerTree: Codable, Sendable {
    package var path: String
    /// Its folders that hide what the trees below hold (`trusted.overlay.opaque=y`), as an
    /// `OpaqueFolderIndex` file: what a pull hands its confined unpacks, from the layer's record.
    /// Without one, they are read from the folders' attributes, which only a process with
    /// CAP_SYS_ADMIN sees.
    package var opaqueIndex: String?

    package init(path: String, opaqueIndex: String? = nil) {
        self.path = path
        self.opaqueIndex = opaqueIndex
    }
}

/// The state of one unpack: what each name of the layer is, so far.
private struct Unpacking {
    enum Kind { case directory, symlink, whiteout, other }

    let tree: String
    let blob: String
    var kinds: [[UInt8]: Kind] = [[]: .directory]
    /// The folders the blob makes opaque: with a marker, or with a whiteout of the folder's own name.
    var opaque: Set<[UInt8]> = []
    /// Folders the blob both whites out and holds. The OCI spec's whiteout hides only what is
    /// below, so such a folder is the blob's, new: opaque, and it takes nothing from the one below.
    var replaced: Set<[UInt8]> = []
    /// The names at the root that are aufs's bookkeeping (`Whiteout.isAufsMetadata`), removed last.
    var aufsMetadata: Set<[UInt8]> = []
    /// A file of aufs's bookkeeping, and the first name of the layer linked to it: the name its
    /// deferred attributes go to.
    var aufsLinks: [[UInt8]: [UInt8]] = [:]
    /// Leave `trusted.*` attributes to another process (`deferred`), as `unpackPlainTar` does.
    var deferring = false
    var deferred: [DeferredAttribute] = []
    /// Folders and their times, set last: entries below change a folder's mtime. A folder the tar
    /// leaves out (the root among them) gets the epoch, not the time of the unpack.
    var folderTimes: [[UInt8]: Int64] = [[]: 0]
    /// Folders made because entries are below them, and not (yet) named themselves.
    var implied: Set<[UInt8]> = [[]]
    var lower: [LowerTree] = []
    /// How each lower tree's opaque folders are looked up.
    var lowerOpaque: [OpaqueLookup] = []
    enum OpaqueLookup {
        case attributes
        case indexed(OpaqueFolderIndex)

        init(_ tree: LowerTree) throws {
            self = try tree.opaqueIndex.map { .indexed(try OpaqueFolderIndex(path: $0)) } ?? .attributes
        }
    }
    /// What the lower trees' merge holds, by folder, as far as it was looked at (`lowerCopies`,
    /// `lowerNames`, `lowerPosition`).
    var lowerFolders: [[UInt8]: LowerFolder] = [:]
    struct LowerFolder {
        var copies: [(tree: Int, path: [UInt8])]
        /// The copies' sizes (`st_size`) added up: about what listing them all reads.
        var bytes = 0
        /// The names looked up so far with an lstat in each copy.
        var probed = 0
        var names: [[UInt8]: Int]?
    }
    /// What the unpack leaves free on the tree's filesystem: a few megabytes of zstd can unpack
    /// to terabytes, or to millions of empty files.
    var reserve: DiskReserve?
    /// Bytes written and entries made since the reserve was last checked.
    var unchecked: (bytes: Int64, entries: Int) = (0, 0)
    /// Zeros left as holes so far. They take no disk, but count against the reserve as if
    /// written: a blob of a few kilobytes of zstd can hold terabytes of them, to hash and to read.
    var holes: UInt64 = 0

    init(tree: String, blob: String) {
        self.tree = tree
        self.blob = blob
    }

    func refuse(_ name: [UInt8], _ why: String) -> LayerBlobError {
        LayerBlobError(message: "the layer blob \(blob) holds a hostile entry \(PathLimit.shortened(name)): \(why)")
    }

    /// The name's components: a leading `./` dropped, empty components too; the root is [].
    func components(_ raw: [UInt8]) throws -> [[UInt8]] {
        if raw.first == 0x2F { throw refuse(raw, "an absolute name") }
        let parts = raw.split(separator: 0x2F, omittingEmptySubsequences: true).map(Array.init)
        var result = parts
        while result.first == [0x2E] { result.removeFirst() }
        if result.contains([0x2E]) || result.contains([0x2E, 0x2E]) { throw refuse(raw, "a name with . or ..") }
        return result
    }

    /// A C string's bytes as they are: names need not be UTF-8.
    static func bytes(_ string: UnsafePointer<CChar>) -> [UInt8] {
        UnsafeBufferPointer(start: string, count: strlen(string)).map { UInt8(bitPattern: $0) }
    }

    func path(_ parts: [[UInt8]]) -> [UInt8] { Array(parts.joined(separator: [0x2F])) }
    /// Runs `call` with the path of `name` in the tree (the tree itself for []), as raw bytes: a
    /// name need not be UTF-8, and a String would change it.
    @discardableResult
    func at<T>(_ name: [UInt8], _ call: (UnsafePointer<CChar>) throws -> T) rethrows -> T {
        try RawPath.with(Array(tree.utf8) + (name.isEmpty ? [] : [0x2F] + name), call)
    }

    /// `name` for messages.
    func shown(_ name: [UInt8]) -> String { "/" + RawPath.display(name) }

    /// Makes sure every folder above `parts` is a folder of this layer, making missing ones.
    mutating func checkParents(_ parts: [[UInt8]], raw: [UInt8]) throws {
        for depth in 0..<max(0, parts.count - 1) {
            let prefix = path(Array(parts[0...depth]))
            switch kinds[prefix] {
            case .directory: continue
            case .symlink: throw refuse(raw, "a name through a symlink, /\(RawPath.display(prefix))")
            case .other: throw refuse(raw, "a name below a file, /\(RawPath.display(prefix))")
            case .whiteout:
                // The blob whites the folder out, then puts entries in it: a new folder.
                try dropWhiteout(prefix, forFolder: true)
                fallthrough
            case nil:
                // 0755 and root's, whatever the umask and the folder above: in a setgid folder,
                // mkdir gives that folder's group and setgid bit, and the tree would depend on
                // whether the tar named the folder above before or after this one's entries.
                try at(prefix) { p in
                    try sys("create", shown(prefix)) { mkdir(p, 0o755) }
                    try sys("change the owner of", shown(prefix)) { lchown(p, 0, 0) }
                    try sys("change the mode of", shown(prefix)) { chmod(p, 0o755) }
                }
                kinds[prefix] = .directory
                folderTimes[prefix] = 0
                implied.insert(prefix)
            }
        }
    }

    /// Removes the blob's whiteout of `name`, which the blob then holds; a folder there is new.
    mutating func dropWhiteout(_ name: [UInt8], forFolder: Bool) throws {
        try at(name) { p in try sys("remove", shown(name)) { unlink(p) } }
        kinds[name] = nil
        if forFolder {
            replaced.insert(name)
            opaque.insert(name)
        }
    }

    /// Checks the reserve as often as it asks (every 8 MiB written and 1,024 entries, or more
    /// often on a small disk).
    mutating func spent(bytes: Int64 = 0, entries: Int = 0) throws {
        guard let reserve else { return }
        unchecked.bytes += bytes
        unchecked.entries += entries
        let every = reserve.checkEvery
        guard unchecked.bytes >= every.bytes || unchecked.entries >= every.entries else { return }
        unchecked = (0, 0)
        try reserve.check("unpacking the layer blob \(blob)", holes: holes)
    }

    mutating func take(_ header: OpaquePointer, from archive: OpaquePointer) throws {
        try spent(entries: 1)
        guard let pathname = archive_entry_pathname(header) else { throw LayerBlobError(message: "an entry of \(blob) has no name") }
        let raw = Self.bytes(pathname)
        let parts = try components(raw)
        if parts.reduce(0, { $0 + 1 + $1.count }) > PathLimit.bytes {
            throw refuse(raw, "a name longer than a path in a layer may be (\(PathLimit.bytes) bytes)")
        }
        // Linux's filesystems name a file with at most 255 bytes; a whiteout's `.wh.` is not the
        // name's. The call that makes the entry would fail, quoting all of the name, not the blob.
        for (index, part) in parts.enumerated() {
            let named = index == parts.count - 1 ? Whiteout.hidden(by: part) ?? part : part
            if named.count > PathLimit.nameBytes {
                throw refuse(raw, "a name of \(named.count) bytes, longer than a file's name may be (\(PathLimit.nameBytes))")
            }
        }
        // Only a file's data is written. Any other entry that says it holds data (a folder, a
        // link, a whiteout) would have the unpack decompress all of it to throw it away:
        // terabytes from a few megabytes of zstd, with no disk filling up to stop it. No tar
        // writer makes one.
        let size = archive_entry_size_is_set(header) != 0 ? Int64(archive_entry_size(header)) : 0
        let aufs = Whiteout.isAufsMetadata(parts)
        if size > 0 {
            let marker = !aufs && (parts.last.map { $0 == Whiteout.opaque || Whiteout.hidden(by: $0) != nil } ?? false)
            if archive_entry_filetype(header) != UInt32(Glibc.S_IFREG) || archive_entry_hardlink(header) != nil || marker {
                throw refuse(raw, "\(size) bytes of data in an entry that is no file")
            }
        }
        if parts.isEmpty {
            // `./`: the layer's root folder, whose metadata the layer carries too.
            guard archive_entry_filetype(header) == UInt32(Glibc.S_IFDIR) else { throw refuse(raw, "a root that is no folder") }
            try applyMetadata(header, to: [], raw: raw)
            return
        }
        try checkParents(parts, raw: raw)
        let last = parts[parts.count - 1]
        let parent = Array(parts.dropLast())
        if aufs {
            aufsMetadata.insert(parts[0])
        } else if last == Whiteout.opaque {
            opaque.insert(path(parent))
            return
        } else if let hidden = Whiteout.hidden(by: last) {
            if hidden == [0x2E] || hidden == [0x2E, 0x2E] || hidden.isEmpty { throw refuse(raw, "a whiteout of . or ..") }
            let name = path(parent + [hidden])
            switch kinds[name] {
            case nil: break
            case .whiteout?: throw refuse(raw, "a name the layer holds twice")
            case .directory?:
                // The blob's own folder, and nothing of the folder below: opaque.
                replaced.insert(name)
                opaque.insert(name)
                return
            case .symlink?, .other?:
                // The blob's own file replaces whatever is below anyway.
                return
            }
            try at(name) { p in try sys("create", shown(name)) { mknod(p, Glibc.S_IFCHR | 0o000, 0) } }
            try setTime(name, Int64(archive_entry_mtime(header)))
            kinds[name] = .whiteout
            return
        }
        let name = path(parts)
        if kinds[name] == .whiteout {
            // The blob whites the name out and holds it: the name is the blob's, and a folder new.
            try dropWhiteout(name, forFolder: archive_entry_filetype(header) == UInt32(Glibc.S_IFDIR))
        }
        if let known = kinds[name] {
            // A folder may come twice (its metadata again); anything else once.
            guard known == .directory, archive_entry_filetype(header) == UInt32(Glibc.S_IFDIR) else {
                throw refuse(raw, "a name the layer holds twice")
            }
            try applyMetadata(header, to: name, raw: raw)
            return
        }
        if let link = archive_entry_hardlink(header) {
            let linkRaw = Self.bytes(link)
            let linkParts = try components(linkRaw)
            let linkName = path(linkParts)
            guard let kind = kinds[linkName], kind == .other || kind == .symlink else {
                throw refuse(raw, "a hard link to /\(RawPath.display(linkRaw)), which is no earlier file of the layer")
            }
            try at(linkName) { existing in
                try at(name) { p in
                    guard linkat(AT_FDCWD, existing, AT_FDCWD, p, 0) != 0 else { return }
                    let error = errno
                    var st = stat()
                    // ext4 holds 65,000 names of one file; a blob may give it more in a few
                    // bytes a name. That is the blob's doing, not the system's.
                    guard error == EMLINK, lstat(existing, &st) == 0 else { throw SystemError("link", shown(name), errno: error) }
                    throw LayerBlobError(
                        message: "the layer blob \(blob) gives \(shown(linkName)) more names (hard links) than the "
                            + "\(st.st_nlink) the store's filesystem holds for one file")
                }
            }
            kinds[name] = kind
            if Whiteout.isAufsMetadata(linkParts) && !aufs && aufsLinks[linkName] == nil {
                aufsLinks[linkName] = name
            }
            return
        }
        let mode = archive_entry_filetype(header)
        switch mode {
        case UInt32(Glibc.S_IFDIR):
            try at(name) { p in try sys("create", shown(name)) { mkdir(p, 0o700) } }
            kinds[name] = .directory
        case UInt32(Glibc.S_IFREG):
            // A sparse entry (GNU tar's --sparse) can say terabytes in a few bytes of blob, and
            // its holes would be written out as zeros until the disk is full. No OCI tool writes
            // one: layerctl, Docker, Buildah and umoci write a file's bytes as they are.
            if archive_entry_sparse_count(header) > 0 {
                throw refuse(raw, "a sparse file of \(archive_entry_size(header)) bytes, which a layer blob does not hold")
            }
            try writeFile(name, header: header, archive: archive, raw: raw)
            kinds[name] = .other
        case UInt32(Glibc.S_IFLNK):
            guard let destination = archive_entry_symlink(header) else { throw refuse(raw, "a symlink with no target") }
            // Linux holds a symlink's target in at most 4,095 bytes (PATH_MAX, with its NUL).
            let length = strlen(destination)
            if length >= PATH_MAX {
                throw refuse(raw, "a symlink whose target of \(length) bytes is longer than one may be (\(PATH_MAX - 1))")
            }
            try at(name) { p in try sys("create", shown(name)) { symlink(destination, p) } }
            kinds[name] = .symlink
        case UInt32(Glibc.S_IFCHR), UInt32(Glibc.S_IFBLK), UInt32(Glibc.S_IFIFO):
            let device = mode == UInt32(Glibc.S_IFIFO) ? 0 : archive_entry_rdev(header)
            if mode != UInt32(Glibc.S_IFIFO) {
                let (major, minor) = (UInt64(archive_entry_rdevmajor(header)), UInt64(archive_entry_rdevminor(header)))
                guard DeviceNumber.exists(major: major, minor: minor) else {
                    throw refuse(raw, "a device \(major):\(minor), which Linux does not have (majors end at 4095, minors at 1048575)")
                }
            }
            try at(name) { p in try sys("create", shown(name)) { mknod(p, mode_t(mode) | 0o600, device) } }
            kinds[name] = .other
        default:
            throw refuse(raw, "an entry of a type a layer cannot hold")
        }
        try applyMetadata(header, to: name, raw: raw)
    }

    /// How much of a file is written before its writeback is started.
    static let writebackStep: Int64 = 1 << 20

    mutating func writeFile(_ name: [UInt8], header: OpaquePointer, archive: OpaquePointer, raw: [UInt8]) throws {
        let fd = try at(name) { p in
            try sys("create", shown(name)) { open(p, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0o600) }
        }
        defer { close(fd) }
        let expected = archive_entry_size_is_set(header) != 0 ? Int64(archive_entry_size(header)) : -1
        let buffer = UnsafeMutableRawPointer.allocate(byteCount: 1 << 20, alignment: 16)
        defer { buffer.deallocate() }
        var written: Int64 = 0
        var writebackStarted: Int64 = 0
        var skipped: Int64 = 0
        while true {
            let count = archive_read_data(archive, buffer, 1 << 20)
            if count < 0 {
                let why = archive_error_string(archive).map { String(cString: $0) } ?? "libarchive failed"
                throw refuse(raw, "its data cannot be read (\(why))")
            }
            if count == 0 { break }
            let holes = try Self.write(
                UnsafeRawBufferPointer(start: buffer, count: count), to: fd, at: written, shown(name))
            skipped += holes
            written += Int64(count)
            self.holes += UInt64(holes)
            try spent(bytes: Int64(count))
            // The disk takes a big file as it arrives, so the commit's sync finds little left.
            if written - writebackStarted >= Self.writebackStep {
                lc_start_writeback(fd, UInt64(writebackStarted), UInt64(written - writebackStarted))
                writebackStarted = written
            }
        }
        // (A smaller file is left to the syncfs that starts when the blob has been unpacked: one
        // call per file would cost a layer of many small files a system call each.)
        if writebackStarted > 0 && written > writebackStarted { lc_start_writeback(fd, UInt64(writebackStarted), 0) }
        if expected >= 0 && written != expected {
            throw refuse(raw, "its header says \(expected) bytes, and it holds \(written)")
        }
        // A file that ends in a hole is as long as its tar says.
        if skipped > 0 { try sys("write", shown(name)) { ftruncate(fd, off_t(written)) } }
    }

    /// Writes `bytes` at `offset` of `fd`, but a whole page of zeros as a hole: the file reads the
    /// same, and a sparse file (a disk image made with `truncate`, which a tar carries as zeros)
    /// takes on this disk what it took where it was made. Returns the bytes left as holes.
    static func write(_ bytes: UnsafeRawBufferPointer, to fd: Int32, at offset: Int64, _ shown: @autoclosure () -> String)
        throws -> Int64
    {
        let page = 4096
        var holes: Int64 = 0
        var run = 0  // where the bytes not yet written start
        var at = 0
        while at < bytes.count {
            let end = min(bytes.count, at + page - Int((offset + Int64(at)) % Int64(page)))
            if end - at == page && Zeros.all(UnsafeRawBufferPointer(rebasing: bytes[at..<end])) {
                if run < at {
                    try FileSystem.writeAll(
                        fd, UnsafeRawBufferPointer(rebasing: bytes[run..<at]), at: UInt64(offset) + UInt64(run), to: shown())
                }
                holes += Int64(page)
                run = end
            }
            at = end
        }
        if run < bytes.count {
            try FileSystem.writeAll(
                fd, UnsafeRawBufferPointer(rebasing: bytes[run...]), at: UInt64(offset) + UInt64(run), to: shown())
        }
        return holes
    }

    /// Owner, mode, xattrs (not overlayfs's own) and time, never through a symlink.
    mutating func applyMetadata(_ header: OpaquePointer, to name: [UInt8], raw: [UInt8]) throws {
        implied.remove(name)
        let isLink = archive_entry_filetype(header) == UInt32(Glibc.S_IFLNK)
        var deferredHere: [DeferredAttribute] = []
        try at(name) { p in
            try sys("change the owner of", shown(name)) {
                fchownat(AT_FDCWD, p, uid_t(archive_entry_uid(header)), gid_t(archive_entry_gid(header)), AT_SYMLINK_NOFOLLOW)
            }
            if !isLink {
                try sys("change the mode of", shown(name)) { chmod(p, archive_entry_perm(header) & 0o7777) }
            }
            archive_entry_xattr_reset(header)
            var xattrName: UnsafePointer<CChar>?
            var value: UnsafeRawPointer?
            var size = 0
            while archive_entry_xattr_next(header, &xattrName, &value, &size) == ARCHIVE_OK {
                guard let xattrName else { continue }
                let attribute = Self.bytes(xattrName)
                if attribute.starts(with: DeferredAttribute.overlayPrefix) { continue }
                if deferring && attribute.starts(with: DeferredAttribute.trustedPrefix) {
                    let bytes = value.map { Array(UnsafeRawBufferPointer(start: $0, count: size)) } ?? []
                    deferredHere.append(DeferredAttribute(path: name, name: attribute, value: bytes))
                    continue
                }
                if lsetxattr(p, xattrName, value, size, 0) != 0 {
                    let error = errno
                    throw DeferredAttribute.setFailure(attribute, size: size, of: shown(name), blob: blob, errno: error)
                }
            }
        }
        deferred += deferredHere
        let mtime = Int64(archive_entry_mtime(header))
        if archive_entry_filetype(header) == UInt32(Glibc.S_IFDIR) {
            folderTimes[name] = mtime
        } else {
            try setTime(name, mtime)
        }
    }

    func setTime(_ name: [UInt8], _ seconds: Int64) throws {
        var times = [timespec(tv_sec: Int(seconds), tv_nsec: 0), timespec(tv_sec: Int(seconds), tv_nsec: 0)]
        try at(name) { p in try sys("set the time of", shown(name)) { utimensat(AT_FDCWD, p, &times, AT_SYMLINK_NOFOLLOW) } }
    }

    /// What the lower trees show at `name`, merged as `OverlayMerge` merges them: the entry of the
    /// topmost tree that holds it, and its path; nil where none shows one. A tree hides what the
    /// trees below it hold at `name` with a whiteout there, something else than a folder on the
    /// way, or an opaque folder on the way, its root among them (overlayfs ignores a root's
    /// marker; `Store.shownTrees` leaves the trees below out of a mount). Each folder on the way
    /// is looked at: a lower tree's symlink is a stranger's, and through it the path would name
    /// a folder of the host, whose owner, mode and attributes the layer would take.
    ///
    /// A few lstats per name (`lowerPosition`): a blob of a few kilobytes of zstd can hold a
    /// million whiteouts, and an image 256 layers.
    mutating func lowerEntry(_ name: [UInt8]) -> (path: [UInt8], st: stat)? {
        var st = stat()
        guard !name.isEmpty else {
            guard let top = lowerCopies([]).first, lstat(lower[top.tree].path, &st) == 0 else { return nil }
            return (top.path, st)
        }
        let slash = name.lastIndex(of: 0x2F)
        let parent = slash.map { Array(name[..<$0]) } ?? []
        let base = slash.map { Array(name[($0 + 1)...]) } ?? name
        guard let position = lowerPosition(of: base, in: parent) else { return nil }
        let path = lowerCopies(parent)[position].path + [0x2F] + base
        guard RawPath.with(path, { lstat($0, &st) }) == 0 else { return nil }
        return st.st_mode & S_IFMT == S_IFCHR && st.st_rdev == 0 ? nil : (path, st)
    }

    /// The copies of the folder `name` that the lower trees' merge shows, top first: each tree's
    /// folder there, down to the first that is opaque, or that a tree hides (a whiteout or
    /// something else than a folder, there or on the way).
    mutating func lowerCopies(_ name: [UInt8]) -> [(tree: Int, path: [UInt8])] {
        if let known = lowerFolders[name] { return known.copies }
        var folder = LowerFolder(copies: [])
        var st = stat()
        if name.isEmpty {
            for (index, tree) in lower.enumerated() {
                guard lstat(tree.path, &st) == 0, st.st_mode & S_IFMT == S_IFDIR else { continue }
                folder.copies.append((index, Array(tree.path.utf8)))
                folder.bytes += Int(st.st_size)
                if isOpaque([], Array(tree.path.utf8), in: index) { break }
            }
        } else {
            let slash = name.lastIndex(of: 0x2F)
            let parent = slash.map { Array(name[..<$0]) } ?? []
            let base = slash.map { Array(name[($0 + 1)...]) } ?? name
            for copy in lowerCopies(parent) {
                let path = copy.path + [0x2F] + base
                guard RawPath.with(path, { lstat($0, &st) }) == 0 else { continue }
                guard st.st_mode & S_IFMT == S_IFDIR else { break }
                folder.copies.append((copy.tree, path))
                folder.bytes += Int(st.st_size)
                if isOpaque(name, path, in: copy.tree) { break }
            }
        }
        lowerFolders[name] = folder
        return folder.copies
    }

    /// The position in `lowerCopies(parent)` of the topmost copy that holds `base` (which may be
    /// a whiteout there). Looked up with an lstat in each copy while the lookups so far cost less
    /// than listing the copies would (about an lstat for each 64 bytes of them), then in the
    /// merged names, listed once: an image may add thousands of names to one folder in each of
    /// its layers, and white one out in each, and a blob may white out a million names in one.
    mutating func lowerPosition(of base: [UInt8], in parent: [UInt8]) -> Int? {
        let copies = lowerCopies(parent)
        if let folder = lowerFolders[parent], folder.names == nil, base != [0x2E], base != [0x2E, 0x2E],
            (folder.probed + 1) * copies.count * 64 <= folder.bytes
        {
            lowerFolders[parent]?.probed += 1
            var st = stat()
            return copies.firstIndex { copy in RawPath.with(copy.path + [0x2F] + base) { lstat($0, &st) } == 0 }
        }
        return lowerNames(parent)[base]
    }

    /// The names in the lower trees' merge of the folder `name`, each with the position in
    /// `lowerCopies(name)` of the topmost copy that holds it (which may hold a whiteout).
    mutating func lowerNames(_ name: [UInt8]) -> [[UInt8]: Int] {
        let copies = lowerCopies(name)
        if let names = lowerFolders[name]?.names { return names }
        var names: [[UInt8]: Int] = [:]
        for (position, copy) in copies.enumerated() {
            for child in (try? FileSystem.listDirectory(copy.path)) ?? [] where names[child] == nil { names[child] = position }
        }
        lowerFolders[name]?.names = names
        return names
    }

    /// Whether the folder `name`, at `path` in lower tree `index`, is opaque.
    func isOpaque(_ name: [UInt8], _ path: [UInt8], in index: Int) -> Bool {
        switch lowerOpaque[index] {
        case .indexed(let folders): return folders.contains(name)
        case .attributes: break
        }
        return RawPath.with(path) { ExtendedAttributes.value($0, DeferredAttribute.opaque) } == Array("y".utf8)
    }

    /// The folder the lower trees show at `name`, if they show one.
    mutating func lowerFolder(_ name: [UInt8]) -> (path: [UInt8], st: stat)? {
        guard let found = lowerEntry(name), found.st.st_mode & S_IFMT == S_IFDIR else { return nil }
        return found
    }

    /// Removes aufs's bookkeeping (`Whiteout.isAufsMetadata`), and forgets it: a hard link into
    /// `.wh..wh.plnk/` keeps its file, and the attributes deferred for the file go to that name.
    mutating func removeAufsMetadata() throws {
        for top in aufsMetadata {
            try FileSystem.removeTree(Array(tree.utf8) + [0x2F] + top)
            func below(_ name: [UInt8]) -> Bool { name == top || name.starts(with: top + [0x2F]) }
            kinds = kinds.filter { !below($0.key) }
            folderTimes = folderTimes.filter { !below($0.key) }
            implied = implied.filter { !below($0) }
            deferred = deferred.compactMap { attribute in
                guard below(attribute.path) else { return attribute }
                guard let kept = aufsLinks[attribute.path] else { return nil }
                var moved = attribute
                moved.path = kept
                return moved
            }
        }
    }

    /// Opaque folders marked, implied folders given what the layers below say of them, then folder
    /// times, deepest first.
    mutating func finish() throws {
        try removeAufsMetadata()
        // A folder this blob makes opaque hides what is below it: a folder implied inside it is
        // new, whatever a lower tree holds under its name.
        func belowOpaque(_ name: [UInt8]) -> Bool {
            var folder = name
            while !folder.isEmpty {
                folder = Array(folder[..<(folder.lastIndex(of: 0x2F) ?? 0)])
                if opaque.contains(folder) { return true }
            }
            return false
        }
        for name in implied where !belowOpaque(name) && !replaced.contains(name) {
            guard let (path, below) = lowerFolder(name) else { continue }
            try at(name) { p in
                try sys("change the owner of", shown(name)) { lchown(p, below.st_uid, below.st_gid) }
                try sys("change the mode of", shown(name)) { chmod(p, below.st_mode & 0o7777) }
                // Its attributes too (an ACL, a user's), but `trusted.*`, which a confined unpack
                // cannot read (overlayfs's own among them): the merge shows this folder's alone.
                let attributes = try ExtendedAttributes.all(path)
                for attribute in attributes where !attribute.name.starts(with: DeferredAttribute.trustedPrefix) {
                    try sys("set attribute \(attribute.displayName) on", shown(name)) {
                        RawPath.with(attribute.name) { lsetxattr(p, $0, attribute.value, attribute.value.count, 0) }
                    }
                }
            }
            folderTimes[name] = Int64(below.st_mtim.tv_sec)
        }
        // A whiteout hides only what the trees below show. One that hides nothing is left out: in
        // a folder no lower tree has, overlayfs would list it, and then find nothing there.
        for (name, kind) in kinds where kind == .whiteout && (belowOpaque(name) || lowerEntry(name) == nil) {
            try at(name) { p in try sys("remove", shown(name)) { unlink(p) } }
            kinds[name] = nil
        }
        for folder in opaque.sorted(by: { $0.lexicographicallyPrecedes($1) }) {
            guard kinds[folder] == .directory else { continue }
            if deferring {
                deferred.append(DeferredAttribute(path: folder, name: DeferredAttribute.opaque, value: Array("y".utf8)))
                continue
            }
            try at(folder) { p in try sys("mark opaque", shown(folder)) { lsetxattr(p, "trusted.overlay.opaque", "y", 1, 0) } }
        }
        for (name, mtime) in folderTimes.sorted(by: { $0.key.count > $1.key.count }) {
            try setTime(name, mtime)
        }
    }
}
