import Alpm
import Foundation
import LayerEntries
import LayerStore
import LayerSupport
import RegistryClient
import Yams

/// Reads one layer file: YAML into `LayerFile`, with every mistake reported at its line and column.
struct LayerFileParser {
    let path: String
    let text: String
    private var folder: String { FileSystem.parent(of: path) }

    static let topLevelKeys = [
        "from", "description", "arch", "repos", "packages", "remove", "noextract", "files", "run", "env", "boot", "network",
        "upgrade", "ignore",
    ]
    static let repoKeys = ["name", "servers", "mirrorlist", "siglevel", "snapshot"]
    static let fileKeys = ["path", "content", "source", "link", "mode", "owner"]
    /// Folders whose content the kernel or the booted system makes: `files:` may not write there.
    static let apiFolders = ["/proc", "/sys", "/dev", "/run", "/tmp"]

    static func parse(path: String) throws -> LayerFile {
        let top = FileLocation(file: path, line: 1, column: 1)
        let data: Data
        do {
            data = try FileSystem.readRegularFile(path, atMost: ReadLimit.layerFile).droppingByteOrderMark
        } catch let large as FileTooLarge {
            throw LayerFileError(
                "the layer file is \(formatBytes(large.size)); a layer file may be at most \(formatBytes(large.limit))", at: top)
        } catch {
            throw LayerFileError("cannot read the layer file: \(unreadable(path))", at: top)
        }
        guard let text = String(validating: data, as: UTF8.self) else {
            throw LayerFileError(
                "the layer file is not UTF-8 text", at: Self.location(ofByte: Self.firstInvalidUTF8(data), in: data, file: path))
        }
        let name = ((path as NSString).lastPathComponent as NSString).deletingPathExtension
        guard Store.isLayerName(name) else {
            throw LayerFileError(
                "the layer name \(quote(name)) (the file name without .yaml) may hold letters, digits and . _ + -, must start with a letter or digit, and be at most 100 bytes",
                at: top)
        }
        return try LayerFileParser(path: path, text: text).parse()
    }

    /// The byte offset of the first byte of `data` that is not part of valid UTF-8.
    static func firstInvalidUTF8(_ data: Data) -> Int {
        var decoder = UTF8()
        var iterator = data.makeIterator()
        var offset = 0
        while true {
            switch decoder.decode(&iterator) {
            case .scalarValue(let scalar): offset += UTF8.width(scalar)
            case .emptyInput: return offset
            case .error: return offset
            }
        }
    }

    /// Why the layer file at `path` could not be read, in a few words.
    static func unreadable(_ path: String) -> String {
        var st = stat()
        guard stat(path, &st) == 0 else { return String(cString: strerror(errno)) }
        if st.st_mode & S_IFMT == S_IFDIR { return "it is a folder; give a layer file in it (NAME.yaml)" }
        if let special = FileSystem.special(st.st_mode) { return "it is \(special), not a file" }
        if access(path, R_OK) != 0 { return String(cString: strerror(errno)) }
        return "it could not be read"
    }

    /// Line and column (in characters, as YAML counts them) of byte `offset` of `data`.
    static func location(ofByte offset: Int, in data: Data, file: String) -> FileLocation {
        let before = data.prefix(offset)
        let line = before.reduce(1) { $0 + ($1 == 0x0A ? 1 : 0) }
        let lineStart = before.lastIndex(of: 0x0A).map { $0 + 1 } ?? before.startIndex
        // Characters: every byte that does not continue a UTF-8 sequence starts one.
        let column = before[lineStart...].reduce(1) { $0 + ($1 & 0xC0 == 0x80 ? 0 : 1) }
        return FileLocation(file: file, line: line, column: column)
    }

    func parse() throws -> LayerFile {
        let top = FileLocation(file: path, line: 1, column: 1)
        if let alias = firstAlias() {
            throw LayerFileError(
                "YAML aliases (`*name`) are not allowed in a layer file; write the value out", at: alias)
        }
        let root: Node?
        do {
            // Every value is read as the text it is written as (`network: true` by its word): the
            // basic resolver takes every scalar for a string, where the default one compiles seven
            // regular expressions (and loads ICU's data for them) in each command that reads a
            // layer file.
            root = try Yams.compose(yaml: text, .basic)
        } catch let error as YamlError {
            throw translate(error)
        }
        guard let root else { throw LayerFileError("the layer file is empty", at: top) }
        guard case .mapping(let mapping) = root else {
            throw LayerFileError("a layer file is a mapping of keys such as `from:` and `packages:`", at: at(root))
        }
        if mapping.count == 0 { throw LayerFileError("the layer file is empty", at: at(root)) }

        let name = ((path as NSString).lastPathComponent as NSString).deletingPathExtension
        var layer = LayerFile(
            name: name, path: path, parent: .scratch, description: nil, arch: nil, repos: [], packages: [],
            remove: [], files: [], run: [], env: [], boot: nil, fromLocation: top)
        var sawFrom = false
        for (keyNode, value) in mapping {
            let key = try scalar(keyNode, what: "a key")
            switch key {
            case "from":
                sawFrom = true
                layer.fromLocation = at(value)
                layer.parent = try parent(value)
            case "description": layer.description = try scalar(value, what: "`description`")
            case "arch": layer.arch = Located(try scalar(value, what: "`arch`"), at: at(value))
            case "repos": layer.repos = try list(value, what: "`repos`").map(repo)
            case "packages": layer.packages = try names(value, key: "packages")
            case "remove": layer.remove = try names(value, key: "remove")
            case "ignore": layer.ignore = try list(value, what: "`ignore`").map(ignorePattern)
            case "noextract": layer.noExtract = try list(value, what: "`noextract`").map(noExtract)
            case "files": layer.files = try list(value, what: "`files`").map(file)
            case "run":
                layer.run = try list(value, what: "`run`").map { Located(try command($0), at: at($0)) }
            case "env": layer.env = try env(value)
            case "boot":
                let word = try scalar(value, what: "`boot`")
                guard let flavour = BootFlavour(rawValue: word) else {
                    throw LayerFileError(
                        "`boot` names the image's initramfs generator: mkinitcpio or dracut, not \(quote(word))",
                        at: at(value))
                }
                layer.boot = Located(flavour, at: at(value))
            case "network", "upgrade":
                let word = try scalar(value, what: "`\(key)`")
                guard word == "true" || word == "false" else {
                    throw LayerFileError("`\(key)` is true or false, not \(quote(word))", at: at(value))
                }
                if key == "network" { layer.network = Located(word == "true", at: at(value)) } else {
                    layer.upgrade = Located(word == "true", at: at(value))
                }
            default: throw unknownKey(key, at: keyNode, known: Self.topLevelKeys)
            }
        }
        if !sawFrom {
            throw LayerFileError("the layer file has no `from:`; write `from: scratch` for a root layer", at: top)
        }
        if layer.isRoot && layer.repos.isEmpty {
            throw LayerFileError(
                "a root layer (`from: scratch`) must declare its `repos`, which its children inherit",
                at: layer.fromLocation)
        }
        try checkConsistency(layer)
        return layer
    }

    // MARK: Fields

    private func parent(_ node: Node) throws -> LayerFile.Parent {
        let value = try scalar(node, what: "`from`")
        if value == "scratch" { return .scratch }
        if ImageReference.looksLikeReference(value) {
            do { _ = try ImageReference(parsing: value) } catch let error as ReferenceError {
                throw LayerFileError(error.message, at: at(node))
            }
            return .image(value)
        }
        if value.isEmpty || value.contains("/") {
            throw LayerFileError(
                "`from` names a layer file in the same folder, such as `base`, an image such as `ghcr.io/steve/base:v1`, or `scratch`",
                at: at(node))
        }
        let file = value.hasSuffix(".yaml") || value.hasSuffix(".yml") ? value : value + ".yaml"
        let resolved = ((folder as NSString).appendingPathComponent(file) as NSString).standardizingPath
        return .file(resolved)
    }

    private func repo(_ node: Node) throws -> RepoSpec {
        guard case .mapping(let mapping) = node else {
            throw LayerFileError("each repository is a mapping with `name` and `servers`", at: at(node))
        }
        var spec = RepoSpec(name: "", servers: [], siglevel: nil, snapshot: nil, location: at(node))
        for (keyNode, value) in mapping {
            switch try scalar(keyNode, what: "a key") {
            case "name": spec.name = try scalar(value, what: "a repository `name`")
            case "servers":
                spec.servers = try list(value, what: "`servers`").map {
                    try server(try scalar($0, what: "a server"), at: $0)
                }
            case "mirrorlist": spec.mirrorlist = try mirrorlist(try scalar(value, what: "`mirrorlist`"), at: value)
            case "siglevel":
                let words = try scalar(value, what: "`siglevel`")
                if case .failure(let error) = SignatureLevel.parse(words) {
                    throw LayerFileError(
                        "`siglevel` has an unknown word \(quote(error.word)); pacman knows Never, Optional, Required, TrustedOnly and TrustAll, each optionally prefixed Package or Database",
                        at: at(value))
                }
                spec.siglevel = words
            case "snapshot":
                let date = try scalar(value, what: "`snapshot`")
                guard NameShape.isDay(date, slashes: true) else {
                    throw LayerFileError("`snapshot` is an Arch Linux Archive date such as 2024-06-01", at: at(value))
                }
                spec.snapshot = date.replacingOccurrences(of: "/", with: "-")
                spec.snapshotLocation = at(value)
            case let key: throw unknownKey(key, at: keyNode, known: Self.repoKeys)
            }
        }
        if spec.name.isEmpty { throw LayerFileError("the repository has no `name`", at: at(node)) }
        if spec.name.contains("/") || spec.name.contains(" ") {
            throw LayerFileError("repository name \(quote(spec.name)) may not contain `/` or spaces", at: at(node))
        }
        // libalpm keeps NAME.db.sig: a name longer than this makes no file, and would be quoted
        // whole by every message that names the repository.
        if spec.name.utf8.count > 248 {
            throw LayerFileError("repository name \(quote(spec.name)) is longer than 248 bytes", at: at(node))
        }
        // A name alone places an inherited repository; `Recipe` checks that a layer below has it.
        spec.inherits = spec.servers.isEmpty && spec.mirrorlist == nil && spec.snapshot == nil
        return spec
    }

    /// A server is a URL, or a path relative to this file's folder that becomes a `file://` URL.
    /// In a `file://` URL, curl ends the path at `?` or `#`: `file:///dev/zero#` would make the
    /// database `/dev/zero`, a download without end. Such a URL is refused; a path is escaped
    /// as a URL's path is (`%`, `?`, `#`, spaces), so all of it stays the folder's name.
    private func server(_ value: String, at node: Node) throws -> String {
        if value.contains("://") {
            if value.hasPrefix("file://") && value.contains(where: { $0 == "?" || $0 == "#" }) {
                throw LayerFileError(
                    "a file:// server is a folder, and curl would end its path at `?` or `#`; write them %3F and %23",
                    at: at(node))
            }
            return value
        }
        if value.isEmpty { throw LayerFileError("a server is a URL or a path", at: at(node)) }
        let absolute = value.hasPrefix("/") ? value : (folder as NSString).appendingPathComponent(value)
        let path = (absolute as NSString).standardizingPath
        guard let escaped = path.addingPercentEncoding(withAllowedCharacters: .urlPathAllowed) else {
            throw LayerFileError("a server path must be text", at: at(node))
        }
        return "file://" + escaped
    }

    private func file(_ node: Node) throws -> FileSpec {
        guard case .mapping(let mapping) = node else {
            throw LayerFileError(
                "each entry of `files` is a mapping with `path` and `content`, `source` or `link`", at: at(node))
        }
        var path: String?
        var content: FileSpec.Content?
        var mode: UInt32 = 0o644
        var modeNode: Node?
        var owner = "root:root"
        for (keyNode, value) in mapping {
            let key = try scalar(keyNode, what: "a key")
            switch key {
            case "path":
                let text = try scalar(value, what: "`path`")
                guard text.hasPrefix("/") else {
                    throw LayerFileError("`path` must be absolute, such as /etc/hostname", at: at(value))
                }
                guard !text.split(separator: "/").contains(where: { $0 == ".." || $0 == "." }) else {
                    throw LayerFileError("`path` may not contain `..` or `.`", at: at(value))
                }
                guard text != "/" else {
                    throw LayerFileError("`path` must name a file", at: at(value))
                }
                // What Linux and a layer hold: found here, not once the packages are installed.
                if let name = text.utf8.split(separator: 0x2F).first(where: { $0.count > PathLimit.nameBytes }) {
                    throw LayerFileError(
                        "`path` has a name of \(name.count) bytes, longer than a file's name may be (\(PathLimit.nameBytes))",
                        at: at(value))
                }
                guard text.utf8.count <= PathLimit.bytes else {
                    throw LayerFileError(
                        "`path` is \(text.utf8.count) bytes, longer than a path in a layer may be (\(PathLimit.bytes))",
                        at: at(value))
                }
                // What the kernel and the running system make there is no layer's content.
                if let top = Self.apiFolders.first(where: { text == $0 || text.hasPrefix($0 + "/") }) {
                    throw LayerFileError(
                        "`path` \(quote(text)) is under \(top), which the running system fills; a layer's files go elsewhere",
                        at: at(value))
                }
                if let state = PackageManagerState.holding(text) {
                    throw LayerFileError(
                        "`path` \(quote(text)) is \(state == text ? "" : "under \(state), ")pacman's working state, which "
                            + "no layer keeps; a layer's files go elsewhere",
                        at: at(value))
                }
                path = text
            case "content", "source", "link":
                if content != nil {
                    throw LayerFileError("a file has one of `content`, `source` and `link`", at: at(keyNode))
                }
                let text = try scalar(value, what: "`\(key)`", allowingNUL: key == "content")
                switch key {
                case "content": content = .inline(text)
                case "source": content = try source(text, at: value)
                default: content = .link(try linkTarget(text, at: value))
                }
            case "mode":
                let text = try scalar(value, what: "`mode`")
                guard NameShape.isMode(text), let bits = UInt32(text, radix: 8), bits <= 0o7777
                else {
                    throw LayerFileError("`mode` is octal permission bits such as \"0644\"", at: at(value))
                }
                mode = bits
                modeNode = keyNode
            case "owner":
                let text = try scalar(value, what: "`owner`")
                guard NameShape.isOwner(text) else {
                    throw LayerFileError("`owner` is `user:group`, as names or numbers", at: at(value))
                }
                owner = text.contains(":") ? text : "\(text):\(text)"
            default: throw unknownKey(key, at: keyNode, known: Self.fileKeys)
            }
        }
        guard let path else { throw LayerFileError("the file has no `path`", at: at(node)) }
        guard let content else {
            throw LayerFileError("the file \(quote(path)) has none of `content`, `source` and `link`", at: at(node))
        }
        if case .link = content {
            // The kernel gives a link no permission bits of its own: its target's count.
            if let modeNode { throw LayerFileError("a `link` has no `mode`: its target's counts", at: at(modeNode)) }
            mode = 0o777
        }
        if case .tree = content {
            // What a checkout gives a file's mode is its executable bit (git keeps no other), and
            // the umask decides the rest: a folder's files are 0755 or 0644 by that bit alone.
            if let modeNode {
                throw LayerFileError(
                    "a folder `source` has no `mode`: its files are 0755 or 0644 by their executable bit, its folders 0755",
                    at: at(modeNode))
            }
            mode = 0o755
        }
        return FileSpec(path: path, content: content, mode: mode, owner: owner, location: at(node))
    }

    /// A `noextract:` pattern, as pacman.conf's `NoExtract` has it: matched against a package's
    /// paths, which have no leading `/` (one written is dropped), `!` first to extract again what
    /// an earlier pattern left out.
    private func noExtract(_ node: Node) throws -> Located<String> {
        let text = try scalar(node, what: "a `noextract` pattern")
        let negated = text.hasPrefix("!")
        var pattern = Substring(negated ? text.dropFirst() : Substring(text))
        while pattern.hasPrefix("/") { pattern = pattern.dropFirst() }
        guard !pattern.isEmpty, !pattern.contains(where: \.isNewline) else {
            throw LayerFileError(
                "a `noextract` pattern is a path in the packages, such as usr/share/doc/*, with `!` first to extract it after all",
                at: at(node))
        }
        guard pattern.utf8.count <= 4096 else {
            throw LayerFileError("a `noextract` pattern is at most 4096 bytes, as a path is", at: at(node))
        }
        return Located((negated ? "!" : "") + pattern, at: at(node))
    }

    /// A `link:` target, as `ln -s` takes one: any path, absolute or relative to the link's folder,
    /// which only the running system follows; at most 4095 bytes, as Linux holds a link to.
    private func linkTarget(_ value: String, at node: Node) throws -> String {
        guard !value.isEmpty else {
            throw LayerFileError("`link` is the path the link points to, such as /usr/share/zoneinfo/UTC", at: at(node))
        }
        guard value.utf8.count < Int(PATH_MAX) else {
            throw LayerFileError("`link` is at most \(Int(PATH_MAX) - 1) bytes, as Linux holds a link's target", at: at(node))
        }
        return value
    }

    /// A `source:` is relative to the layer file and may not leave its folder tree, even through a
    /// symlink: a file, or a folder below the layer file's whose tree is copied.
    private func source(_ value: String, at node: Node) throws -> FileSpec.Content {
        if value.hasPrefix("/") { throw LayerFileError("`source` is a path relative to the layer file", at: at(node)) }
        if let folder = try folderInFolder(value, at: node) { return .tree(folder) }
        let (real, size) = try fileInFolder(value, key: "source", at: node)
        // It is hashed for the key and read whole into the build's job.
        guard size <= ReadLimit.fileSource else {
            throw LayerFileError(
                "`source` \(quote(value)) is \(formatBytes(size)); a `files:` source may be at most "
                    + "\(formatBytes(ReadLimit.fileSource)) (a larger file belongs in a package)",
                at: at(node))
        }
        return .source(real)
    }

    /// A `mirrorlist:` is pacman's, in /etc/pacman.d, or one of the layer file's folder tree, as a
    /// `source:` is: a stranger's layer file reads no other file of the host's.
    private func mirrorlist(_ value: String, at node: Node) throws -> Mirrorlist {
        let path: String
        let real: String
        if value.hasPrefix("/") {
            path = (value as NSString).standardizingPath
            real = Self.resolvingLinks(path)
            guard real.hasPrefix(Mirrorlist.hostFolder + "/") else {
                throw LayerFileError(
                    "`mirrorlist` \(quote(value)) is not in \(Mirrorlist.hostFolder), where pacman keeps its mirrorlists, "
                        + "and a layer file reads no other file of the host's; put your own beside the layer file and name it from there",
                    at: at(node))
            }
            _ = try regularFileSize(
                real, key: "mirrorlist", value: value, found: "on Arch, the pacman-mirrorlist package installs /etc/pacman.d/mirrorlist",
                at: node)
        } else {
            path = ((folder as NSString).appendingPathComponent(value) as NSString).standardizingPath
            real = try fileInFolder(value, key: "mirrorlist", at: node).real
        }
        let data: Data
        do { data = try FileSystem.readRegularFile(real, atMost: ReadLimit.mirrorlist) } catch let large as FileTooLarge {
            throw LayerFileError(
                "`mirrorlist` \(quote(value)) is \(formatBytes(large.size)); a mirrorlist may be at most \(formatBytes(large.limit))",
                at: at(node))
        } catch {
            throw LayerFileError("`mirrorlist` \(quote(value)) cannot be read: \(error)", at: at(node))
        }
        guard let text = String(validating: data, as: UTF8.self) else {
            throw LayerFileError("`mirrorlist` \(quote(value)) is not UTF-8 text", at: at(node))
        }
        let servers: [String]
        do { servers = try Mirrorlist.servers(in: text) } catch {
            throw LayerFileError("`mirrorlist` \(quote(value)), line \(error.line): \(error.message)", at: at(node))
        }
        guard !servers.isEmpty else {
            throw LayerFileError(
                "`mirrorlist` \(quote(value)) has no `Server =` line that is not a comment; uncomment the mirrors to use, as pacman needs",
                at: at(node))
        }
        return Mirrorlist(path: path, servers: servers)
    }

    /// The real path and size of `value`, a regular file found from the layer file's folder that
    /// does not leave its folder tree, even through a symlink.
    private func fileInFolder(_ value: String, key: String, at node: Node) throws -> (real: String, size: Int64) {
        let (base, real) = try pathInFolder(value, key: key, at: node)
        let size = try regularFileSize(real, key: key, value: value, found: "it is found from the layer file's folder \(base)", at: node)
        return (real, size)
    }

    /// The layer file's folder, and `value` resolved from it, which may not leave it.
    private func pathInFolder(_ value: String, key: String, at node: Node) throws -> (base: String, real: String) {
        let base = URL(fileURLWithPath: folder).resolvingSymlinksInPath().path
        let joined = URL(fileURLWithPath: (folder as NSString).appendingPathComponent(value)).standardizedFileURL
        let real = Self.resolvingLinks(joined.path)
        guard real == base || real.hasPrefix(base + "/") else {
            throw LayerFileError("`\(key)` \(quote(value)) leaves the layer file's folder \(base)", at: at(node))
        }
        return (base, real)
    }

    /// The real path of the `source:` folder `value`, or nil when it names no folder. The layer
    /// file's own folder is no source: it holds the layer files themselves.
    private func folderInFolder(_ value: String, at node: Node) throws -> String? {
        let (base, real) = try pathInFolder(value, key: "source", at: node)
        var st = stat()
        guard stat(real, &st) == 0, st.st_mode & S_IFMT == S_IFDIR else { return nil }
        guard real != base else {
            throw LayerFileError(
                "`source` \(quote(value)) is the layer file's own folder; a folder source is one below it, such as files/skel",
                at: at(node))
        }
        return real
    }

    /// The size of the regular file at `real`, which the layer file names `value` under `key`; a
    /// FIFO or a device would be read forever, or read what is not the layer author's. `found`
    /// says where a missing one was looked for.
    private func regularFileSize(_ real: String, key: String, value: String, found: String, at node: Node) throws -> Int64 {
        var st = stat()
        guard stat(real, &st) == 0 else {
            let why = errno == ENOENT ? "does not exist" : "cannot be read (\(String(cString: strerror(errno))))"
            throw LayerFileError("`\(key)` \(quote(value)) \(why); \(found)", at: at(node))
        }
        guard st.st_mode & S_IFMT == S_IFREG else {
            let kind = st.st_mode & S_IFMT == S_IFDIR ? "a folder" : FileSystem.special(st.st_mode) ?? "no regular file"
            throw LayerFileError("`\(key)` \(quote(value)) is \(kind), not a file", at: at(node))
        }
        return Int64(st.st_size)
    }

    /// `path` (absolute, with no `.` or `..`) with the links of its longest part that is there
    /// resolved, and the names after that part as they are. Foundation resolves nothing of a path
    /// that is not there: a missing source in a folder reached through a symlink (a dotfiles
    /// checkout) read as one outside the folder. A part that does not resolve (a dangling link)
    /// leaves the path as it is written.
    static func resolvingLinks(_ path: String) -> String {
        let (existing, missing) = FileSystem.existingPart(of: path)
        guard let resolved = realpath(existing, nil) else { return path }
        defer { free(resolved) }
        let real = String(cString: resolved)
        return (real == "/" && !missing.isEmpty ? "" : real) + missing
    }

    /// The longest string the kernel passes a program, as one argument or one `NAME=value` of its
    /// environment (MAX_ARG_STRLEN, 32 pages, less the string's NUL); a longer one fails the
    /// program's start with E2BIG.
    static let longestArgument = 131_071

    /// A `run:` command, which runs as `/bin/sh -c COMMAND`: one argument.
    private func command(_ node: Node) throws -> String {
        let command = try scalar(node, what: "a `run` command")
        guard command.utf8.count <= Self.longestArgument else {
            throw LayerFileError(
                "a `run` command is \(command.utf8.count) bytes; the kernel passes at most \(Self.longestArgument) "
                    + "in one argument (it runs as /bin/sh -c COMMAND): write a longer script with `files:` and run that",
                at: at(node))
        }
        return command
    }

    /// Variables of the environment of `run:` and scriptlets: each `NAME=value` one string the
    /// kernel passes whole, and all of a layer's together at most as long as one (the kernel's
    /// room for a program's arguments and environment is 2 MiB at the build's stack limit, and
    /// the layers of a stack add up).
    private func env(_ node: Node) throws -> [EnvVariable] {
        guard case .mapping(let mapping) = node else {
            throw LayerFileError("`env` is a mapping of variable names to values", at: at(node))
        }
        var variables: [EnvVariable] = []
        var total = 0
        for (keyNode, value) in mapping {
            let name = try scalar(keyNode, what: "a variable name")
            guard NameShape.isVariable(name) else {
                throw LayerFileError("\(quote(name)) is not a valid environment variable name", at: at(keyNode))
            }
            let text = try scalar(value, what: "the value of \(name)")
            let length = name.utf8.count + 1 + text.utf8.count
            guard length <= Self.longestArgument else {
                throw LayerFileError(
                    "\(name)=value is \(length) bytes; the kernel passes a program at most \(Self.longestArgument) "
                        + "of one variable", at: at(value))
            }
            total += length
            guard total <= Self.longestArgument else {
                throw LayerFileError(
                    "`env` is more than \(Self.longestArgument) bytes in all, its names, `=` and values; keep it to that",
                    at: at(node))
            }
            variables.append(EnvVariable(name: name, value: text))
        }
        return variables.sorted { $0.name < $1.name }
    }

    /// Package names, as pacman takes them: `name` or `repo/name`; for `packages:`, with a version
    /// it must satisfy too (`linux>=6.6`, as `pacman -S 'linux>=6.6'`).
    private func names(_ node: Node, key: String) throws -> [Located<String>] {
        try list(node, what: "`\(key)`").map { item in
            let name = try scalar(item, what: "a package name")
            guard NameShape.isPackageName(name, versioned: key == "packages") else {
                // `[game nano]`: flow lists take commas, as `[game, nano]`.
                let words = name.split(whereSeparator: \.isWhitespace)
                let hint = words.count > 1 ? " (names in a list are separated by commas: \(quote("[" + words.joined(separator: ", ") + "]")))" : ""
                throw LayerFileError("\(quote(name)) is not a package name" + hint, at: at(item))
            }
            return Located(name, at: at(item))
        }
    }

    /// An `ignore:` item, as pacman.conf's `IgnorePkg` takes it: a package name, or a shell pattern
    /// of names (`linux*`, `nvidia-?xx`, `lib32-[ab]*`); never a repository or a version.
    private func ignorePattern(_ node: Node) throws -> Located<String> {
        let pattern = try scalar(node, what: "an `ignore` pattern")
        if pattern.contains("/") {
            throw LayerFileError(
                "`ignore` names installed packages, as pacman.conf's IgnorePkg does, without a repository: "
                    + quote(TransactionRequest.packageName(of: pattern)),
                at: at(node))
        }
        guard NameShape.isIgnorePattern(pattern), pattern.utf8.count <= 255 else {
            throw LayerFileError(
                "\(quote(pattern)) is not a package name or a pattern of names, as pacman.conf's IgnorePkg takes them "
                    + "(`linux`, `linux*`, `nvidia-?xx`)",
                at: at(node))
        }
        return Located(pattern, at: at(node))
    }

    /// Rules that span fields: a package named twice, a path written twice, `arch` outside the root.
    private func checkConsistency(_ layer: LayerFile) throws {
        var seen: [String: FileLocation] = [:]
        for package in layer.packages + layer.remove {
            let bare = TransactionRequest.packageName(of: package.value)
            if let first = seen[bare] {
                throw LayerFileError("package \(quote(bare)) is named twice; first at \(first)", at: package.location)
            }
            seen[bare] = package.location
        }
        var ignored: [String: FileLocation] = [:]
        for package in layer.ignore {
            if let first = ignored[package.value] {
                throw LayerFileError("package \(quote(package.value)) is named twice; first at \(first)", at: package.location)
            }
            ignored[package.value] = package.location
            for (key, list) in [("packages", layer.packages), ("remove", layer.remove)] {
                let asked = list.first { TransactionRequest.ignores([package.value], TransactionRequest.packageName(of: $0.value)) }
                guard let asked else { continue }
                let name = TransactionRequest.packageName(of: asked.value)
                throw LayerFileError(
                    "package \(quote(name)) is in `\(key):` (at \(asked.location)) and `ignore:` \(package.value == name ? "names it" : "matches it")"
                        + ", which keeps it as the layers below installed it; name it in one", at: package.location)
            }
        }
        if let first = layer.ignore.first, layer.upgrade?.value != true {
            throw LayerFileError(
                "`ignore` keeps packages back from `upgrade: true`, as pacman.conf's IgnorePkg does from pacman -Syu, and this "
                    + "layer has no `upgrade: true`", at: first.location)
        }
        var paths: [String: FileLocation] = [:]
        for file in layer.files {
            if let first = paths[file.path] {
                throw LayerFileError("\(quote(file.path)) is written twice; first at \(first)", at: file.location)
            }
            paths[file.path] = file.location
        }
        if let network = layer.network, network.value, layer.run.isEmpty {
            throw LayerFileError(
                "`network: true` gives this layer's `run:` commands the network, and it has none; packages are downloaded without it",
                at: network.location)
        }
        var repos: [String: FileLocation] = [:]
        for repo in layer.repos {
            if let first = repos[repo.name] {
                throw LayerFileError(
                    "repository \(quote(repo.name)) is declared twice; first at \(first)", at: repo.location)
            }
            repos[repo.name] = repo.location
        }
        if let arch = layer.arch, !layer.isBase {
            throw LayerFileError(
                "`arch` belongs in the root layer (`from: scratch` or an image); children inherit it", at: arch.location)
        }
        if layer.isRoot && layer.arch == nil {
            throw LayerFileError(
                "a root layer (`from: scratch`) must name its `arch`, such as x86_64", at: layer.fromLocation)
        }
    }
}

extension Data {
    /// The bytes after a UTF-8 byte order mark, as Windows editors begin a file with: YAML allows
    /// one at the start, and an editor does not show it, so lines and columns count without it.
    var droppingByteOrderMark: Data { starts(with: [0xEF, 0xBB, 0xBF]) ? Data(dropFirst(3)) : self }
}
