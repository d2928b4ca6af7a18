import Alpm
import Foundation
import LayerSupport

/// What pins one layer's inputs: `NAME.lock` beside `NAME.yaml`. It names the repositories (their
/// Arch Linux Archive day, or their servers), the architecture, what the layer asks libalpm for,
/// the parent it was resolved on, and each package file the layer installs with its sha256.
///
/// The text is plain lines, one fact each, packages sorted by name, so that `git diff` of a lock
/// reads as a changelog:
///
///     format 1
///     arch x86_64
///     spec sha256:…          (digest of the lines up to here from `repo`, `install` and `remove`)
///     parent KEY             (or `scratch`, or `image REF@sha256:…`)
///     repo demo server ../repo/$repo
///     repo demo mirrorlist /etc/pacman.d/mirrorlist   (the file, not its servers)
///     repo demo siglevel Optional TrustAll
///     install game
///     remove nano
///     upgrade                (`upgrade: true`; absent otherwise)
///     ignore linux*          (one line per item of `ignore:`, sorted)
///     package demo game 1.0-1 game-1.0-1-any.pkg.tar.zst SHA256
public struct LockFile: Sendable, Equatable {
    public static let formatVersion = 1

    public var arch: String
    /// What decides the layer's packages, as the lock writes it.
    public var inputs: Inputs
    /// `scratch`, the parent layer's key, or `image REF@sha256:…`.
    public var parent: String
    /// Sorted by name.
    public var packages: [Package]

    public struct Inputs: Sendable, Equatable {
        public var repositories: [Repository]
        /// `packages:` and `remove:`, sorted.
        public var install: [String]
        public var remove: [String]
        /// `upgrade: true`, written as the line `upgrade`.
        public var upgrade: Bool
        /// `ignore:`, sorted.
        public var ignore: [String]

        public init(
            repositories: [Repository], install: [String], remove: [String], upgrade: Bool = false, ignore: [String] = []
        ) {
            self.repositories = repositories
            self.install = install.sorted()
            self.remove = remove.sorted()
            self.upgrade = upgrade
            self.ignore = ignore.sorted()
        }
    }

    public struct Repository: Sendable, Equatable {
        public var name: String
        /// An Arch Linux Archive day (`YYYY-MM-DD`), which stands for the servers.
        public var snapshot: String?
        /// As the layer file wrote them: a path stays relative to the layer file's folder.
        public var servers: [String]
        /// The mirrorlist's path, as a server's is written, and not its servers: a host's
        /// mirrors move without changing what a lock pins.
        public var mirrorlist: String?
        public var siglevel: String?

        public init(name: String, snapshot: String?, servers: [String], mirrorlist: String? = nil, siglevel: String?) {
            self.name = name
            self.snapshot = snapshot
            self.servers = snapshot == nil ? servers : []
            self.mirrorlist = snapshot == nil ? mirrorlist : nil
            self.siglevel = siglevel
        }
    }

    public struct Package: Sendable, Equatable {
        public var repository: String
        public var name: String
        public var version: String
        public var filename: String
        public var sha256: String

        public init(repository: String, name: String, version: String, filename: String, sha256: String) {
            self.repository = repository
            self.name = name
            self.version = version
            self.filename = filename
            self.sha256 = sha256
        }
    }

    public init(arch: String, inputs: Inputs, parent: String, packages: [Package]) {
        self.arch = arch
        self.inputs = inputs
        self.parent = parent
        self.packages = packages.sorted { $0.name < $1.name }
    }

    /// The lock of the layer file at `layerFile`: `NAME.lock` beside it.
    public static func path(for layerFile: String) -> String {
        let url = URL(fileURLWithPath: layerFile)
        let ext = url.pathExtension
        let base = ext == "yaml" || ext == "yml" ? url.deletingPathExtension().path : layerFile
        return base + ".lock"
    }

    /// The digest of what decides the layer's packages: the architecture and the input lines.
    public var specDigest: String {
        "sha256:" + Digest.sha256(Data((["arch \(arch)"] + inputs.lines).joined(separator: "\n").utf8))
    }

    public var text: String {
        var lines = [
            "# The exact packages of this layer: `layerctl lock` writes it, `layerctl build` follows it.",
            "format \(Self.formatVersion)", "arch \(arch)", "spec \(specDigest)", "parent \(parent)",
        ]
        lines += inputs.lines
        lines += packages.map { "package \($0.repository) \($0.name) \($0.version) \($0.filename) \($0.sha256)" }
        return lines.joined(separator: "\n") + "\n"
    }

    /// Reads a lock, refusing anything it would not write, at the line and column of the fault.
    public static func parse(_ text: String, path: String) throws -> LockFile {
        var format: Int?
        var arch: String?
        var spec: String?
        var parent: String?
        var repositories: [Repository] = []
        var install: [String] = []
        var remove: [String] = []
        var upgrade = false
        var ignore: [String] = []
        var packages: [Package] = []
        for (index, line) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            func fail(_ message: String, column: Int = 1) -> LayerFileError {
                LayerFileError(message, at: FileLocation(file: path, line: index + 1, column: column))
            }
            if line.isEmpty || line.hasPrefix("#") { continue }
            let words = line.split(separator: " ", omittingEmptySubsequences: false).map(String.init)
            if words.contains(where: \.isEmpty) || line.unicodeScalars.contains(where: { $0.value < 0x20 || $0.value == 0x7F }) {
                throw fail("a lock line is words separated by single spaces")
            }
            switch (words[0], words.count) {
            case ("format", 2):
                guard let number = Int(words[1]), number == formatVersion else {
                    throw fail("this lock has format \(words[1].prefix(20)); this layerctl reads format \(formatVersion): write it again with `layerctl lock`", column: 8)
                }
                format = number
            case ("arch", 2): arch = words[1]
            case ("spec", 2): spec = words[1]
            case ("parent", 2...3): parent = words[1...].joined(separator: " ")
            case ("repo", 4...):
                let value = words[3...].joined(separator: " ")
                if repositories.last?.name != words[1] {
                    repositories.append(Repository(name: words[1], snapshot: nil, servers: [], siglevel: nil))
                }
                let at = repositories.count - 1
                switch words[2] {
                case "server": repositories[at].servers.append(value)
                case "mirrorlist" where repositories[at].mirrorlist == nil: repositories[at].mirrorlist = value
                case "snapshot" where words.count == 4: repositories[at].snapshot = value
                case "siglevel": repositories[at].siglevel = value
                default:
                    throw fail(
                        "a repo line is `repo NAME server URL`, `repo NAME mirrorlist PATH` (once), `repo NAME snapshot DAY` or `repo NAME siglevel WORDS`")
                }
            case ("install", 2): install.append(words[1])
            case ("remove", 2): remove.append(words[1])
            case ("upgrade", 1): upgrade = true
            case ("ignore", 2): ignore.append(words[1])
            case ("package", 6):
                // Each is part of a file's name (REPO.db, NAME-VERSION-ARCH.pkg.tar.zst), which
                // Linux holds to 255 bytes; a longer one would be echoed back in every message.
                if let long = words[1...4].firstIndex(where: { $0.utf8.count > 255 }) {
                    throw fail(
                        "a package's repository, name, version and file are at most 255 bytes each, as a file's name is",
                        column: words[..<long].reduce(1) { $0 + $1.count + 1 })
                }
                guard words[5].count == 64, words[5].allSatisfy(\.isHexDigit) else {
                    throw fail("a package's sha256 is 64 hex digits", column: line.count - words[5].count + 1)
                }
                // A name in the repository's folder, as its database gives it: never a path.
                guard PackageFile.isFileName(words[4]) else {
                    throw fail(
                        "a package's file is a name in its repository, not a path",
                        column: line.count - words[5].count - words[4].count)
                }
                packages.append(Package(repository: words[1], name: words[2], version: words[3], filename: words[4], sha256: words[5]))
            default:
                throw fail("`\(words[0].prefix(40))` with \(words.count - 1) words is no lock line (format, arch, spec, parent, repo, install, remove, upgrade, ignore, package)")
            }
        }
        let top = FileLocation(file: path, line: 1, column: 1)
        guard format != nil else { throw LayerFileError("the lock has no `format` line", at: top) }
        guard let arch, let spec, let parent else {
            throw LayerFileError("the lock lacks one of its `arch`, `spec` and `parent` lines", at: top)
        }
        let lock = LockFile(
            arch: arch, inputs: Inputs(repositories: repositories, install: install, remove: remove, upgrade: upgrade, ignore: ignore),
            parent: parent,
            packages: packages)
        guard lock.specDigest == spec else {
            throw LayerFileError("the lock's `spec` is not the digest of its lines: it was edited by hand; write it again with `layerctl lock`", at: top)
        }
        return lock
    }

    /// Reads the lock at `path`; nil when there is none.
    public static func read(_ path: String) throws -> LockFile? {
        guard FileManager.default.fileExists(atPath: path) else { return nil }
        let data: Data
        do {
            data = try FileSystem.readRegularFile(path, atMost: ReadLimit.layerFile).droppingByteOrderMark
        } catch let large as FileTooLarge {
            throw LayerFileError(
                "the lock is \(formatBytes(large.size)); a lock may be at most \(formatBytes(large.limit))",
                at: FileLocation(file: path, line: 1, column: 1))
        } catch {
            throw LayerFileError("reading the lock failed: \(error)", at: FileLocation(file: path, line: 1, column: 1))
        }
        guard let text = String(data: data, encoding: .utf8) else {
            throw LayerFileError("the lock is not UTF-8 text", at: FileLocation(file: path, line: 1, column: 1))
        }
        return try parse(text, path: path)
    }

    /// Writes the lock at `path` in one rename, owned as `layerFile`, which it sits beside, is.
    public func write(to path: String, beside layerFile: String) throws {
        try FileSystem.writeAtomically(Data(text.utf8), to: path, ownedLike: layerFile)
    }

    /// What differs between the inputs this lock was made from and `other`'s, in words; empty
    /// when they are the same.
    public func inputDifferences(from other: LockFile) -> [String] {
        var differences: [String] = []
        if arch != other.arch { differences.append("arch was \(arch), is \(other.arch)") }
        if parent != other.parent { differences.append("the parent was \(parent.prefix(19)), is \(other.parent.prefix(19))") }
        let added = other.inputs.install.filter { !inputs.install.contains($0) }
        let dropped = inputs.install.filter { !other.inputs.install.contains($0) }
        if !added.isEmpty { differences.append("packages: gained " + added.joined(separator: ", ")) }
        if !dropped.isEmpty { differences.append("packages: lost " + dropped.joined(separator: ", ")) }
        if inputs.remove != other.inputs.remove { differences.append("remove: changed") }
        if inputs.upgrade != other.inputs.upgrade { differences.append("upgrade: changed") }
        if inputs.ignore != other.inputs.ignore { differences.append("ignore: changed") }
        for repository in other.inputs.repositories where !inputs.repositories.contains(repository) {
            if let old = inputs.repositories.first(where: { $0.name == repository.name }) {
                if old.snapshot != repository.snapshot {
                    differences.append("repository \(repository.name) moved from \(old.snapshot ?? "its servers") to \(repository.snapshot ?? "its servers")")
                } else {
                    differences.append("repository \(repository.name) changed")
                }
            } else {
                differences.append("repository \(repository.name) is new")
            }
        }
        for repository in inputs.repositories where !other.inputs.repositories.contains(where: { $0.name == repository.name }) {
            differences.append("repository \(repository.name) is gone")
        }
        if differences.isEmpty && inputs != other.inputs { differences.append("the repositories' order changed") }
        return differences
    }
}

extension LockFile.Inputs {
    var lines: [String] {
        var lines: [String] = []
        for repository in repositories {
            if let snapshot = repository.snapshot { lines.append("repo \(repository.name) snapshot \(snapshot)") }
            lines += repository.servers.map { "repo \(repository.name) server \($0)" }
            if let mirrorlist = repository.mirrorlist { lines.append("repo \(repository.name) mirrorlist \(mirrorlist)") }
            if let siglevel = repository.siglevel { lines.append("repo \(repository.name) siglevel \(siglevel)") }
        }
        lines += install.map { "install \($0)" }
        lines += remove.map { "remove \($0)" }
        if upgrade { lines.append("upgrade") }
        lines += ignore.map { "ignore \($0)" }
        return lines
    }
}

extension Recipe {
    /// What decides the packages of layer `index`, as its lock writes it: servers that are paths
    /// stay relative to the layer file's folder, so a lock means the same in every checkout.
    public func lockInputs(for index: Int) -> LockFile.Inputs {
        let layer = layers[index]
        let folder = FileSystem.parent(of: layer.path)
        let repositories = repositories(for: index).map { spec in
            LockFile.Repository(
                name: spec.name, snapshot: spec.snapshot,
                servers: spec.servers.map { LockFile.relativeServer($0, from: folder) },
                mirrorlist: spec.mirrorlist.map { LockFile.relativeMirrorlist($0.path, from: folder) }, siglevel: spec.siglevel)
        }
        return LockFile.Inputs(
            repositories: repositories, install: layer.packages.map(\.value), remove: layer.remove.map(\.value),
            upgrade: layer.upgrade?.value ?? false, ignore: layer.ignore.map(\.value))
    }
}

extension LockFile {
    /// A mirrorlist's path as the lock beside a layer file in `folder` writes it: pacman's stays
    /// absolute, one of the layer files' folders is relative, each escaped as a server is (a lock's
    /// words hold no space).
    static func relativeMirrorlist(_ path: String, from folder: String) -> String {
        let escaped = path.addingPercentEncoding(withAllowedCharacters: .urlPathAllowed) ?? path
        if path.hasPrefix(Mirrorlist.hostFolder + "/") { return escaped }
        let written = relativeServer("file://" + escaped, from: folder)
        return written.hasPrefix("file://") ? escaped : written
    }

    /// `file:///a/b/repo` seen from `/a/c` is `../b/repo`; any other URL stays as it is.
    static func relativeServer(_ server: String, from folder: String) -> String {
        guard server.hasPrefix("file:///") else { return server }
        let target = String(server.dropFirst("file://".count)).split(separator: "/").map(String.init)
        let base = folder.split(separator: "/").map(String.init)
        var common = 0
        while common < target.count && common < base.count && target[common] == base[common] { common += 1 }
        // Nothing in common but the root: a path of its own, not one beside the layer files.
        guard common > 0 else { return server }
        let parts = Array(repeating: "..", count: base.count - common) + target[common...]
        return parts.isEmpty ? "." : parts.joined(separator: "/")
    }
}

extension Recipe {
    /// Sets every `snapshot:` date the chain's layer files write to `day` (`YYYY-MM-DD`), in place:
    /// the rest of each file stays as it is. Returns the files changed; throws when no layer file of
    /// the chain has a `snapshot:` repository.
    public func moveSnapshots(to day: String) throws -> [String] {
        try checkSnapshotMove(to: day)
        var changed: [String] = []
        for layer in layers {
            let places = layer.repos.compactMap(\.snapshotLocation)
            guard !places.isEmpty else { continue }
            let data = try FileSystem.readRegularFile(layer.path, atMost: ReadLimit.layerFile)
            var lines = String(decoding: data, as: UTF8.self).split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
            for place in places where place.line <= lines.count {
                let line = lines[place.line - 1]
                let start = line.unicodeScalars.index(line.unicodeScalars.startIndex, offsetBy: min(place.column - 1, line.unicodeScalars.count))
                let rest = String(line.unicodeScalars[start...])
                guard let match = rest.firstMatch(of: /\d{4}[-\/]\d{2}[-\/]\d{2}/) else { continue }
                lines[place.line - 1] = String(line.unicodeScalars[..<start]) + rest.replacingCharacters(in: match.range, with: day)
            }
            let text = lines.joined(separator: "\n")
            if Data(text.utf8) != data {
                // Through a symlink to the file it names, as an editor writes (a checkout of
                // dotfiles links its files), not over the link.
                let file = URL(fileURLWithPath: layer.path).resolvingSymlinksInPath().path
                try FileSystem.writeAtomically(Data(text.utf8), to: file, ownedLike: file)
                changed.append(layer.path)
            }
        }
        return changed
    }

    /// The same chain with every `snapshot:` repository read at `day`: what `lock --update
    /// --snapshot` builds and locks before it writes the day into the layer files.
    public func withSnapshots(at day: String) throws -> Recipe {
        try checkSnapshotMove(to: day)
        return Recipe(
            layers: layers.map { layer in
                var moved = layer
                for index in moved.repos.indices where moved.repos[index].snapshot != nil { moved.repos[index].snapshot = day }
                return moved
            })
    }

    /// Throws unless `day` is an Archive day and some layer file of the chain has a `snapshot:`.
    public func checkSnapshotMove(to day: String) throws {
        guard NameShape.isDay(day) else {
            throw LayerFileError("`--snapshot` is an Arch Linux Archive day such as 2024-06-01", at: FileLocation(file: target.path, line: 1, column: 1))
        }
        guard layers.contains(where: { $0.repos.contains { $0.snapshot != nil } }) else {
            throw LayerFileError(
                "no layer file of this chain has a repository with `snapshot:`; add one (snapshot: \(day)) to move the chain by day",
                at: FileLocation(file: target.path, line: 1, column: 1))
        }
    }
}
