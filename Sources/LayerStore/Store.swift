import Foundation
import Glibc
import LayerEntries
import LayerSupport

/// The content-addressed layer store (default `/var/lib/layerctl`).
///
/// ```
/// layers/<key>/tree/        a layer's overlay upper directory
/// layers/<key>/layer.json   its LayerRecord
/// layers/<key>/manifest     every entry of the tree with its metadata and content digest
/// refs/<name>               the key last built for layer file <name>
/// tmp/                      work in progress; swept when no build holds the store lock
/// locks/<key>               held while a layer with that key is being built
/// cache/                    packages, sync databases and the pacman log: never inside a tree
/// lock                      shared by builds, exclusive for gc
/// ```
/// A layer appears only by one rename(2) of a finished directory that is already on disk, so a
/// crash at any moment leaves the store as it was or with the whole layer.
///
/// `layers/` and `tmp/` are their owner's alone (0700). The trees in them hold the setuid
/// programs and device nodes of whoever made the packages or pushed the image, with the modes
/// they were given: a local user who could reach them could run a stranger's setuid-root program,
/// or an old one with a known hole, as root on the host (Docker's CVE-2021-41091).
public struct Store: Sendable {
    public let root: String
    /// Told what a wait is for, when another layerctl holds a lock of the store this one needs.
    public var waiting: (@Sendable (String) -> Void)?

    public static let defaultRoot = "/var/lib/layerctl"

    public var layersDirectory: String { root + "/layers" }
    public var refsDirectory: String { root + "/refs" }
    public var tmpDirectory: String { root + "/tmp" }
    public var locksDirectory: String { root + "/locks" }
    public var cacheDirectory: String { root + "/cache" }
    public var packageCache: String { cacheDirectory + "/pkg" }
    /// The sync databases, a folder for each repository declaration builds refreshed (SyncCache).
    public var syncCache: String { cacheDirectory + "/sync" }
    /// How a package on its way into `packageCache` is named until its rename: `.incoming-PID-NAME`.
    public static let incomingPackagePrefix = ".incoming-"
    public var pacmanLog: String { cacheDirectory + "/pacman.log" }

    /// How long the store's own path may be: a layer's files are reached by their path below it,
    /// and that and a path of the layer (`PathLimit`) must fit Linux's 4,096 bytes.
    public static let longestRoot = 4096 - PathLimit.bytes - 256

    /// Opens the store at `root`, creating its folders.
    public init(root: String) throws {
        self.root = try Self.checked(root)
        for directory in [layersDirectory, refsDirectory, tmpDirectory, locksDirectory, packageCache] {
            do { try FileSystem.makeDirectories(directory) } catch let error as SystemError where error.errno == EACCES {
                // A user who forgot sudo, before root made the store (or a folder of it).
                throw StoreError.othersStore(self.root)
            }
        }
        for directory in [layersDirectory, tmpDirectory] { try Self.keepPrivate(directory) }
    }

    /// Opens the store at `root` for a command that reads it (`ls`, `inspect`, `diff`, `gc`, ...),
    /// which makes nothing where there is nothing: a mistyped `--store` is said to be one, not
    /// made a store and listed as empty. A folder that is there (an empty one made for a store)
    /// is opened as `init(root:)` opens it.
    public init(existing root: String) throws {
        let path = try Self.checked(root)
        var st = stat()
        if stat(path, &st) != 0 && errno == ENOENT { throw StoreError.noStore(path) }
        try self.init(root: root)
    }

    /// `root` made absolute, if it can be a store's path.
    private static func checked(_ root: String) throws -> String {
        let path = URL(fileURLWithPath: root).standardizedFileURL.path
        guard path.utf8.count <= longestRoot else { throw StoreError.rootTooLong(path) }
        // The store's path goes to layerctl's children in lines, and to the terminal in messages.
        guard !path.utf8.contains(where: { $0 < 0x20 || $0 == 0x7F }) else { throw StoreError.controlInRoot(path) }
        return path
    }

    /// Takes the group's and others' access to `directory` away, when this process owns it: also
    /// for a store made before the trees were kept private. A store on read-only media stays as it is.
    private static func keepPrivate(_ directory: String) throws {
        var st = stat()
        guard stat(directory, &st) == 0, st.st_uid == geteuid(), st.st_mode & 0o077 != 0 else { return }
        if chmod(directory, st.st_mode & 0o700) != 0 && errno != EROFS {
            throw SystemError("make private", directory)
        }
    }

    /// Takes the package files and sync databases that `other` holds and this store lacks: a
    /// build here then downloads only what is new, and `--offline` finds what `other` had. Package
    /// files, which nothing rewrites, come as hard links where the two share a filesystem; the
    /// databases, which a refresh rewrites, as copies. Both are checked as ever when a build uses
    /// them (each package against its database's sha256 or signature).
    public func borrowCaches(from other: Store) throws {
        func borrow(_ source: String, _ target: String, link: Bool) throws {
            guard FileSystem.isDirectory(source) else { return }
            try FileSystem.makeDirectories(target)
            for name in try FileSystem.listDirectory(source) {
                // Locks and unfinished downloads belong to the other store's builds.
                if name.hasPrefix(".") || name.hasSuffix(".lck") || name.hasSuffix(".lock") || name.hasSuffix(".part")
                    || name.contains(".tmp-")
                {
                    continue
                }
                var st = stat()
                guard lstat(source + "/" + name, &st) == 0 else { continue }
                if st.st_mode & S_IFMT == S_IFDIR {
                    try borrow(source + "/" + name, target + "/" + name, link: link)
                } else if st.st_mode & S_IFMT == S_IFREG && !FileSystem.exists(target + "/" + name) {
                    if link {
                        try FileSystem.linkOrCopy(source + "/" + name, to: target + "/" + name)
                    } else {
                        try FileSystem.copyFile(source + "/" + name, to: target + "/" + name)
                    }
                }
            }
        }
        try borrow(other.packageCache, packageCache, link: true)
        try borrow(other.syncCache, syncCache, link: false)
    }

    /// The store a command uses: `--store`, else `LAYERCTL_STORE`, else `/var/lib/layerctl`.
    public static func locate(_ option: String?) -> String {
        option ?? ProcessInfo.processInfo.environment["LAYERCTL_STORE"] ?? defaultRoot
    }

    public func layerDirectory(_ key: String) -> String { layersDirectory + "/" + key }
    public func tree(_ key: String) -> String { layerDirectory(key) + "/tree" }

    /// What tells one stored directory of layer `key` from another: a layer built again under its
    /// key (`--no-cache`, other builder rules, a stricter signature policy) whose tree came out
    /// otherwise comes in a new directory, by one rename(2), while a command may be reading the
    /// old one through the same path.
    public struct DirectoryIdentity: Equatable, Sendable {
        public var key: String
        var device: UInt64
        var inode: UInt64
    }

    public func directoryIdentity(_ key: String) throws -> DirectoryIdentity {
        var st = stat()
        guard lstat(layerDirectory(key), &st) == 0 else { throw SystemError("read", layerDirectory(key)) }
        return DirectoryIdentity(key: key, device: UInt64(st.st_dev), inode: UInt64(st.st_ino))
    }

    /// Throws `replaced` when a layer of `identities` is no longer in the directory it was in: what
    /// was read of it since may mix two trees, which must go nowhere (an image, the block cache).
    public func checkUnchanged(_ identities: [DirectoryIdentity]) throws {
        for identity in identities where (try? directoryIdentity(identity.key)) != identity {
            throw StoreError.replaced(identity.key)
        }
    }

    public func contains(_ key: String) -> Bool {
        FileSystem.exists(layerDirectory(key) + "/layer.json")
    }

    /// The record of layer `key`; a record that does not decode, or names another key, is a
    /// damaged layer, which `gc` removes.
    public func record(_ key: String) throws -> LayerRecord {
        let path = layerDirectory(key) + "/layer.json"
        guard let data = FileManager.default.contents(atPath: path) else {
            throw StoreError.unknownLayer(key)
        }
        let record: LayerRecord
        do {
            record = try LayerRecord.decoder.decode(LayerRecord.self, from: data)
        } catch {
            throw StoreError.damaged(path, "not a layer record (cut short or edited)", remedy: Self.damagedLayerRemedy)
        }
        guard record.key == key else {
            throw StoreError.damaged(path, "it records layer \(record.key)", remedy: Self.damagedLayerRemedy)
        }
        return record
    }

    static let damagedLayerRemedy = "run `layerctl gc` to remove the damaged layer, then build again"

    private static let layerNameFirst = ByteSet("A-Za-z0-9"), layerNameRest = ByteSet("A-Za-z0-9._+-")

    /// Whether `name` may name a layer, and so `refs/NAME`: letters, digits and `.` `_` `+` `-`,
    /// starting with a letter or digit, at most 100 bytes. A layer file's name, and a pulled image's.
    public static func isLayerName(_ name: String) -> Bool {
        ByteSet.isName(name.utf8, first: layerNameFirst, rest: layerNameRest) && name.utf8.count <= 100
    }

    /// Whether `text` has the shape of a layer key: 64 lowercase hex digits.
    public static func isKey(_ text: String) -> Bool {
        text.utf8.count == 64 && text.utf8.allSatisfy { (0x30...0x39).contains($0) || (0x61...0x66).contains($0) }
    }

    /// All stored layers' keys, sorted.
    public func keys() throws -> [String] {
        try FileSystem.listDirectory(layersDirectory).filter { contains($0) }
    }

    // MARK: Refs

    /// The key `refs/NAME` holds, or nil when there is no such ref; a ref that holds no key (cut
    /// short, edited) is damaged.
    public func ref(_ name: String) throws -> String? {
        let path = refsDirectory + "/" + name
        guard let data = FileManager.default.contents(atPath: path) else { return nil }
        let key = String(decoding: data, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
        guard Self.isKey(key) else {
            throw StoreError.damaged(
                path, "it holds no layer key", remedy: "build \(name) again, or run `layerctl gc` to remove the ref")
        }
        return key
    }

    /// Points `refs/NAME` at `key`, and returns once that is on disk. A ref that holds the key
    /// already is left alone: a build of cached layers syncs nothing.
    public func setRef(_ name: String, to key: String) throws {
        if (try? ref(name)) == key { return }
        try FileSystem.writeAtomically(Data((key + "\n").utf8), to: refsDirectory + "/" + name)
    }

    public func removeRef(_ name: String) throws {
        try sys("remove ref", name) { unlink(refsDirectory + "/" + name) }
    }

    /// Removes the refs `names`, all of them or, when one is not a ref, none, and returns the key
    /// each held (nil for a damaged one, which this removes too). The layers stay until `gc` finds
    /// that no name reaches them. Waits for `gc`; the removals are on disk when it returns.
    public func removeRefs(_ names: [String]) throws -> [(name: String, key: String?)] {
        let lock = try self.lock(.shared)
        defer { lock.unlock() }
        var removing: [(name: String, key: String?)] = []
        for name in names where !removing.contains(where: { $0.name == name }) {
            var st = stat()
            guard Self.isLayerName(name), lstat(refsDirectory + "/" + name, &st) == 0 else {
                if (try? resolve(name)) != nil { throw StoreError.notAName(name) }
                throw StoreError.unknownLayer(name, hint: hint(forUnknown: name))
            }
            removing.append((name, try? ref(name)))
        }
        for (name, _) in removing { try removeRef(name) }
        try FileSystem.syncDirectory(refsDirectory)
        return removing
    }

    /// Every ref, sorted by name; a damaged one is an error.
    public func refs() throws -> [(name: String, key: String)] {
        try refNames().compactMap { name in try ref(name).map { (name, $0) } }
    }

    /// The names in `refs/`, sorted, without files a write in progress left.
    public func refNames() throws -> [String] {
        try FileSystem.listDirectory(refsDirectory).filter { !$0.contains(".tmp-") }
    }

    /// What to call layer `key`, which the user named `operand`: the operand, when it is a ref to
    /// that key, else the name the layer's record keeps. Layer files with the same content share
    /// a key, and the record keeps the name it was first built under: `stage laptop` of a layer
    /// the same as `desktop` staged it as desktop, over desktop's image.
    public func name(of key: String, asked operand: String) throws -> String {
        if Self.isLayerName(operand), (try? ref(operand)) == key { return operand }
        return try record(key).name
    }

    /// Finds a layer by ref name, full key or unique key prefix.
    public func resolve(_ nameOrKey: String) throws -> String {
        // Else a ref whose layer this user may not see would look like a damaged one.
        if access(layersDirectory, X_OK) != 0 && errno == EACCES { throw StoreError.privateLayers(layersDirectory) }
        if let key = try ref(nameOrKey) {
            guard contains(key) else {
                throw StoreError.damaged(
                    refsDirectory + "/" + nameOrKey, "it names layer \(key), which the store does not hold",
                    remedy: "build \(nameOrKey) again, or run `layerctl gc` to remove the ref")
            }
            return key
        }
        if contains(nameOrKey) { return nameOrKey }
        let matches = try keys().filter { $0.hasPrefix(nameOrKey) }
        if matches.count == 1, nameOrKey.count >= 4 { return matches[0] }
        if matches.count > 1 { throw StoreError.ambiguous(nameOrKey, matches) }
        throw StoreError.unknownLayer(nameOrKey, hint: hint(forUnknown: nameOrKey))
    }

    /// What a newcomer may have meant by an operand that names no layer: the layer of a layer file
    /// (`gaming` for `gaming.yaml`), or, for a file of the machine, that a layer is named by name
    /// or key (an image file goes to the commands that read one). A damaged ref gives no hint.
    private func hint(forUnknown operand: String) -> String? {
        let (_, file) = FileSystem.split(operand)
        for suffix in [".yaml", ".yml"] where file.hasSuffix(suffix) {
            let stem = String(file.dropLast(suffix.count))
            guard Self.isLayerName(stem), (try? ref(stem)) != nil else { break }
            return "did you mean \(quote(stem))? a layer is named by its layer file's name, without \(suffix)"
        }
        guard operand.contains("/"), FileManager.default.fileExists(atPath: operand) else { return nil }
        return "it is a file of this machine, not a layer: name a layer by its name or key; `diff`, `vm` and `stage` "
            + "also take an image file"
    }

    /// The keys from the root layer to `key`, following each record's parent.
    public func chain(_ key: String) throws -> [String] {
        var keys: [String] = []
        var current: String? = key
        while let next = current {
            keys.append(next)
            current = try record(next).parent
        }
        return keys.reversed()
    }

    /// The trees of layer `key`'s stack, bottom first, that a merge of it shows: from the topmost
    /// layer whose root folder is opaque (a pulled blob's `./.wh..wh..opq`), which hides every
    /// layer below it, up. overlayfs ignores that marker on a layer's root, so a mount of the
    /// stack is handed these alone, and shows what an export of the stack holds.
    public func shownTrees(_ key: String) throws -> [String] {
        let keys = try chain(key)
        let start = try keys.lastIndex { try opaqueFolders($0).contains([]) } ?? 0
        return keys[start...].map(tree)
    }

    // MARK: Locks and temporary work

    /// Builds share this lock; `gc` takes it alone, so it never removes a layer a build stands on.
    public func lock(_ mode: FileLock.Mode) throws -> FileLock {
        do {
            return try FileLock(path: root + "/lock", mode: mode) { [waiting, root] in
                waiting?(
                    mode == .shared
                        ? "waiting for `layerctl gc` to finish with the store (a lock on \(root)/lock)"
                        : "waiting for the builds, exports and other commands that use the store to end (a lock on \(root)/lock)")
            }
        } catch is SystemError where access(root, W_OK) != 0 && errno == EACCES {
            // `gc` by a user who forgot sudo: not "open lock …/lock failed: Permission denied"; nor,
            // for a reader where no lock was ever taken, "… No such file or directory".
            throw StoreError.othersStore(root)
        }
    }

    /// Held while the layer `key` is built, so two builds of one layer make it once. `whenBusy`
    /// says what the wait is for; by default, through `waiting`.
    public func buildLock(_ key: String, whenBusy: (() -> Void)? = nil) throws -> FileLock {
        try FileLock(path: locksDirectory + "/" + key, mode: .exclusive) { [waiting] in
            if let whenBusy { whenBusy() } else { waiting?("waiting for another layerctl that makes layer \(key.prefix(12))") }
        }
    }

    /// A fresh directory in `tmp/`; the caller holds the store lock while it uses it.
    public func makeTemporary(_ purpose: String) throws -> String {
        let path = tmpDirectory + "/\(purpose)-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        try FileSystem.makeDirectories(path, mode: 0o700)
        return path
    }

    /// Removes what killed builds left in `tmp/`. It runs only when no other process holds the
    /// store lock — then everything in `tmp/` is stale — and otherwise waits for a later run.
    @discardableResult
    public func sweepTemporary() throws -> [String] {
        guard let exclusive = FileLock.tryExclusive(path: root + "/lock") else { return [] }
        defer { exclusive.unlock() }
        let names = try FileSystem.listDirectory(tmpDirectory)
        for name in names { try FileSystem.removeTree(tmpDirectory + "/" + name) }
        return names
    }

    /// Moves a finished layer directory into place with one rename(2), once all of it is on disk,
    /// and returns once the rename is: a power cut at any moment leaves the store without the layer
    /// or with all of it, never with the empty files of a tree the disk had not yet been given.
    /// Returns false when the layer is already there (another build made it first); the caller
    /// then discards its copy. `synced`: the caller synced the folder's filesystem
    /// (`FileSystem.syncFileSystem(of:)`) after the folder was last written, while doing something else.
    public func commit(_ directory: String, as key: String, synced: Bool = false) throws -> Bool {
        if !synced { try FileSystem.syncFileSystem(of: directory) }
        guard rename(directory, layerDirectory(key)) == 0 else {
            if errno == EEXIST || errno == ENOTEMPTY { return false }
            throw SystemError("store layer", layerDirectory(key))
        }
        try FileSystem.syncDirectory(layersDirectory)
        return true
    }
}

public enum StoreError: LayerError {
    /// No layer of the store is named or keyed so; with what the user may have meant.
    case unknownLayer(String, hint: String? = nil)
    case ambiguous(String, [String])
    /// A key, or a prefix of one, where only a name will do.
    case notAName(String)
    /// A store file that cannot be what it should be: its path, what is wrong, what to do.
    case damaged(String, String, remedy: String)
    case rootTooLong(String)
    /// A store whose path holds a control character (a newline).
    case controlInRoot(String)
    /// The store's `layers/`, which this user may not read (they are their owner's alone).
    case privateLayers(String)
    /// A store this user may not change: its root.
    case othersStore(String)
    /// A store on a filesystem that cannot hold a layer's tree: the store, the filesystem's type,
    /// what it lacks, and the errno of the probe.
    case unsuitableFileSystem(String, type: String, lacks: String, errno: Int32)
    /// A layer that another layerctl built again, into a new directory, while this one read it.
    case replaced(String)
    /// Nothing at the path of a store a command would read.
    case noStore(String)

    public var code: ErrorCode {
        switch self {
        case .unknownLayer, .ambiguous, .notAName, .rootTooLong, .controlInRoot, .unsuitableFileSystem, .noStore: .input
        case .damaged: .damaged
        case .replaced: .system
        case .privateLayers, .othersStore: .privilege
        }
    }

    public var message: String {
        switch self {
        case .damaged(let path, let problem, let remedy): "\(path) is damaged: \(problem); \(remedy)"
        case .unknownLayer(let name, let hint): "no layer named or keyed \(name) in the store" + (hint.map { " (\($0))" } ?? "")
        case .rootTooLong(let root):
            "the store's path is \(root.utf8.count) bytes long, longer than a store's may be (\(Store.longestRoot)): "
                + "choose a shorter --store or LAYERCTL_STORE"
        case .controlInRoot(let root):
            "the store's path \(RawPath.printable(root)) holds a control character; a store's path may not (layerctl tells its "
                + "children the path in lines): choose another --store or LAYERCTL_STORE"
        case .privateLayers(let path):
            "cannot read \(path): the store's layers are its owner's alone (their trees hold setuid programs); "
                + "run layerctl as that user (sudo)"
        case .othersStore(let root):
            "the store \(root) is its owner's alone, and this user may not use it; run layerctl as that user (sudo)"
        case .unsuitableFileSystem(let root, let type, let lacks, let errno):
            "the store \(root) is on \(type), which cannot hold a layer's tree: overlayfs keeps \(lacks) there, and "
                + "\(type) refuses it (\(String(cString: strerror(errno)))); put the store on ext4, xfs, btrfs or tmpfs "
                + "(--store or LAYERCTL_STORE)"
        case .notAName(let key):
            "\(key) is a layer's key, not a name: `layerctl rm` removes names, and `layerctl gc` then removes the layers "
                + "no name reaches (`layerctl ls` lists the names)"
        case .replaced(let key):
            "layer \(key.prefix(12)) was built again by another layerctl while this one read it (its tree came out "
                + "otherwise, and took its place): nothing was written; run the command again"
        case .noStore(let root):
            "no store at \(RawPath.printable(root)): nothing was built or pulled there (`layerctl build` or `layerctl pull` "
                + "makes one; --store or LAYERCTL_STORE names another)"
        case .ambiguous(let prefix, let keys):
            "key prefix \(prefix) is ambiguous: it matches " + keys.prefix(5).joined(separator: ", ")
        }
    }
}
