import Crypto
import Foundation
import Glibc
import LayerEntries
import LayerShare
import LayerStore
import LayerSupport
import RegistryClient
import Testing

/// Layer blobs of every kind of entry, in the orders tar writers put them (a folder after what it
/// holds, or only implied; a hard link whose name sorts before or after its file), with GNU tar as
/// the oracle: what it extracts is what the blob says, and layerctl's tree must say the same, its
/// opaque folders read back as the blob's `.wh.` markers (its whiteouts hide nothing in a blob
/// alone, and are left out).
extension OCILayerTests {
    static let randomBlobs = ProcessInfo.processInfo.environment["LAYERCTL_OCI_BLOBS"].flatMap { Int($0) } ?? 30
    static let randomSeed = ProcessInfo.processInfo.environment["LAYERCTL_OCI_SEED"].flatMap { UInt64($0) } ?? 11

    @Test("random blobs of every kind and order: unpacked and pulled, the tree GNU tar extracts")
    func randomBlobs() throws {
        let registry = try RegistryServer()
        defer { registry.stop() }
        let work = try Harness.temporaryDirectory("oci-random")
        var random = MutationTests.Random(state: Self.randomSeed)
        var kinds: [String: Int] = [:]
        for number in 0..<Self.randomBlobs {
            let (entries, implied) = Self.randomLayer(&random)
            for entry in entries { kinds[Self.kindName(entry), default: 0] += 1 }
            let blob = "\(work)/\(number).tar\(number % 2 == 0 ? ".zst" : "")"
            try Self.craft(entries, at: blob, zstd: number % 2 == 0)
            let ours = "\(work)/ours-\(number)"
            let theirs = "\(work)/tar-\(number)"
            try FileManager.default.createDirectory(atPath: theirs, withIntermediateDirectories: false)
            let extracted = try KernelMount.run(
                "/usr/bin/tar",
                [
                    "-xpf", blob, "-C", theirs, "--xattrs", "--xattrs-include=user.*", "--numeric-owner",
                    "--delay-directory-restore",
                ])
            #expect(extracted.status == 0, "blob \(number): \(extracted.output)")
            try OCILayerReader(blob: blob).unpack(into: ours)
            // Alone, a blob has nothing below for its whiteouts to hide: they are left out.
            let expected = try Self.listing(theirs, implied: implied).filter { line in
                guard line.hasSuffix(" marker") else { return true }
                let name = line.dropLast(" marker".count).split(separator: "/").last ?? ""
                return !name.hasPrefix(".wh.") || name == ".wh..wh..opq"
            }
            let found = try Self.listing(ours, implied: implied)
            let difference = Self.difference(found, expected)
            #expect(difference == nil, "blob \(number) (kept in \(work)): \(difference ?? "")")
            guard difference == nil else { break }
            // Every third through a registry: the confined child's tree, to the folders' times.
            if number % 3 == 0 {
                let reference = try ImageReference(parsing: "\(registry.host)/steve/random:\(number)")
                try ShareTests.pushImage(layers: [blob], to: reference)
                let storeRoot = try Harness.temporaryDirectory("oci-random-store")
                let pulled = try Harness.run(["pull", reference.description, "--name", "random", "--store", storeRoot])
                #expect(pulled.status == 0, "blob \(number): \(pulled.stderr)")
                let store = try Store(root: storeRoot)
                let key = try #require(try store.ref("random"))
                #expect(try store.record(key).treeDigest == TreeScan.scan(ours).digest, "blob \(number)")
                try FileSystem.removeTree(storeRoot)
            }
            try FileSystem.removeTree(ours)
            try FileSystem.removeTree(theirs)
        }
        print(
            "random OCI blobs: \(Self.randomBlobs) (seed \(Self.randomSeed)), entries \(kinds.sorted { $0.key < $1.key })"
        )
        // Each kind came often enough to mean something.
        for kind in ["file", "folder", "symlink", "hard link", "fifo", "device", "whiteout", "opaque", "aufs"] {
            #expect(kinds[kind, default: 0] >= Self.randomBlobs / 10, "\(kind): \(kinds[kind, default: 0])")
        }
    }

    /// Images of two or three random blobs, pushed as another tool would push them: what a pull
    /// and `export --format dir` make of them is what umoci unpacks (the OCI spec's rules for
    /// whiteouts, opaque folders and entries over entries of another kind, against overlayfs's).
    @Test("random images of two or three blobs: pulled and exported, the tree umoci unpacks")
    func randomImages() throws {
        let registry = try RegistryServer()
        defer { registry.stop() }
        let work = try Harness.temporaryDirectory("oci-random-images")
        var random = MutationTests.Random(state: Self.randomSeed &+ 1)
        let images = max(1, Self.randomBlobs / 3)
        var unanswered = 0
        var ownWhiteouts = 0
        defer {
            print(
                "random OCI images: \(images), \(unanswered) of them not unpacked by umoci (the kernel's merge their one oracle); \(ownWhiteouts) whiteouts of a blob's own names"
            )
        }
        for number in 0..<images {
            var blobs: [String] = []
            var implied: Set<String> = []
            let count = 2 + random.below(2)
            for index in 0..<count {
                var (entries, folders) = Self.randomLayer(&random)
                // Symlinks in the top blob only: where a blob above names a folder through a
                // lower symlink, umoci follows the link (as containerd does), and layerctl's folder
                // replaces it (as Docker's overlay2 does, each blob unpacked on its own).
                // And no setgid folders: umoci makes a folder a blob only implies with mkdir, which
                // in a setgid folder gives its group and bit (layerctl's is 0755 and root's).
                entries = entries.map { entry in
                    var entry = entry
                    if entry.type == Glibc.S_IFDIR { entry.mode &= ~mode_t(Glibc.S_ISGID) }
                    guard entry.type == Glibc.S_IFLNK && index < count - 1 else { return entry }
                    var file = Crafted(name: entry.name, data: entry.symlink ?? "")
                    file.owner = entry.owner
                    file.mtime = entry.mtime
                    return file
                }
                // Opaque markers first: umoci keeps what a blob made, or only reached, before its
                // marker (a folder below that the blob implies keeps its metadata then), where the
                // OCI spec and layerctl hide everything below the folder, wherever the marker is.
                let isMarker = { (entry: Crafted) in entry.name.hasSuffix(".wh..wh..opq") }
                entries = entries.filter(isMarker) + entries.filter { !isMarker($0) }
                // Now and then whiteouts of names the blob holds, first: the OCI spec's whiteout
                // hides only what is below, so the name is the blob's own, a folder new (umoci
                // applies entries in order, and agrees when the whiteout comes first).
                let held = Set(entries.map(\.name)).union(folders).filter { name in
                    !name.hasPrefix(".wh..wh.") && !(name.split(separator: "/").last ?? "").hasPrefix(".wh.")
                }.sorted()
                for _ in 0..<(held.isEmpty || random.below(2) == 0 ? 0 : 1 + random.below(3)) {
                    let name = random.pick(held)
                    let slash = name.lastIndex(of: "/")
                    let whiteout =
                        slash.map { String(name[...$0]) + ".wh." + String(name[name.index(after: $0)...]) } ?? ".wh." + name
                    guard !entries.contains(where: { $0.name == whiteout }) else { continue }
                    entries.insert(Crafted(name: whiteout, data: ""), at: 0)
                    ownWhiteouts += 1
                }
                implied.formUnion(folders)
                let blob = "\(work)/\(number)-\(index).tar"
                try Self.craft(entries, at: blob)
                blobs.append(blob)
            }
            let reference = try ImageReference(parsing: "\(registry.host)/steve/stack:\(number)")
            // Made after every time of the blobs: the pull's epoch, which exports clamp times to.
            try ShareTests.pushImage(layers: blobs, to: reference, created: "2100-01-01T00:00:00Z")
            let copy = try KernelMount.run(
                "/usr/bin/skopeo",
                ["copy", "--src-tls-verify=false", "docker://\(reference)", "oci:\(work)/layout-\(number):stack"])
            #expect(copy.status == 0, "\(copy.output)")
            let unpack = try KernelMount.run(
                "/usr/bin/umoci", ["unpack", "--image", "\(work)/layout-\(number):stack", "\(work)/bundle-\(number)"])
            // umoci does not make a folder an upper blob only implies over a lower file (layerctl's
            // is that folder, as over nothing): the kernel's merge alone is the oracle then.
            let answered =
                unpack.status == 0 || !(unpack.output.contains("mkdir parent") && unpack.output.contains("not a directory"))
            if !answered { unanswered += 1 }
            #expect(!answered || unpack.status == 0, "\(unpack.output)")
            let store = try Harness.temporaryDirectory("oci-random-images-store")
            let pulled = try Harness.run(["pull", reference.description, "--name", "stack", "--store", store])
            #expect(pulled.status == 0, "image \(number): \(pulled.stderr)")
            let exported = try Harness.run([
                "export", "stack", "--store", store, "-o", "\(work)/dir-\(number)", "--format", "dir",
            ])
            #expect(exported.status == 0, "image \(number): \(exported.stderr)")
            guard copy.status == 0, !answered || unpack.status == 0, pulled.status == 0, exported.status == 0 else { break }
            let found = try Self.listing("\(work)/dir-\(number)", implied: implied, folderTimes: false)
            if answered {
                // umoci leaves a folder the time its last entry gave it, not the blob's.
                let expected = try Self.listing("\(work)/bundle-\(number)/rootfs", implied: implied, folderTimes: false)
                let difference = Self.difference(found, expected)
                #expect(difference == nil, "image \(number) (kept in \(work)): \(difference ?? "")")
                guard difference == nil else { break }
            }
            // The kernel's merge of the pulled layers, as a build mounts them, shows the same:
            // every name it lists can be looked at (a whiteout that hides nothing would not), and
            // a blob's opaque root hides the layers below (overlayfs ignores a layer root's marker).
            let pulledStore = try Store(root: store)
            let shown = try pulledStore.shownTrees(try #require(try pulledStore.ref("stack")))
            // An empty folder at the bottom: a mount without an upper folder takes two trees at least.
            let empty = "\(work)/empty-\(number)"
            try FileManager.default.createDirectory(atPath: empty, withIntermediateDirectories: false)
            let merged = try KernelMount.overlay(lowerdir: (shown.reversed() + [empty]).joined(separator: ":"))
            defer { KernelMount.unmount(merged) }
            let seen = Result { try Self.listing(merged, implied: implied, folderTimes: false) }
            let mergeDifference = (try? seen.get()).map { Self.difference($0, found) } ?? "\(seen)"
            #expect(mergeDifference == nil, "image \(number), the kernel's merge (kept in \(work)): \(mergeDifference ?? "")")
            guard mergeDifference == nil else { break }
            try FileSystem.removeTree(store)
        }
        #expect(unanswered <= images / 2, "\(unanswered) of \(images)")
    }

    static func kindName(_ entry: Crafted) -> String {
        let base = entry.name.split(separator: "/").last.map(String.init) ?? entry.name
        if base == ".wh..wh..opq" { return "opaque" }
        if entry.name.hasPrefix(".wh..wh.") { return "aufs" }
        if base.hasPrefix(".wh.") { return "whiteout" }
        if entry.hardlink != nil { return "hard link" }
        switch entry.type {
        case Glibc.S_IFDIR: return "folder"
        case Glibc.S_IFLNK: return "symlink"
        case Glibc.S_IFIFO: return "fifo"
        case Glibc.S_IFCHR, Glibc.S_IFBLK: return "device"
        default: return "file"
        }
    }

    /// A layer of 5 to 60 entries below a few folders, and the folders it only implies.
    static func randomLayer(_ random: inout MutationTests.Random) -> (entries: [Crafted], implied: Set<String>) {
        let names = [
            "a", "b", "etc", "usr", "lib", "zz", "Ä", "sp ace", "x=y", "-dash", "a.b", "~tilde", "#hash", "日本",
            String(repeating: "long", count: 40),
        ]
        var folders = [""]  // "" is the root
        var taken: [String: Set<String>] = ["": []]  // the names used in each folder
        var files: [String] = []  // what a hard link may name
        var entries: [Crafted] = []
        var opaque: Set<String> = []
        func attributes() -> [(name: String, value: String)] {
            random.below(4) == 0 ? [("user.note", "v\(random.below(100))")] : []
        }
        func fresh(in folder: String) -> String? {
            let free = names.filter {
                !(taken[folder]?.contains($0) ?? false) && !(taken[folder]?.contains(".wh." + $0) ?? false)
            }
            guard !free.isEmpty else { return nil }
            let name = random.pick(free)
            taken[folder, default: []].insert(name)
            return name
        }
        func join(_ folder: String, _ name: String) -> String { folder.isEmpty ? name : folder + "/" + name }
        // Now and then aufs's bookkeeping, which a pull drops: a file in `.wh..wh.plnk/` that
        // names of the layer are hard links to.
        if random.below(4) == 0 {
            entries.append(Crafted(name: ".wh..wh.aufs", data: ""))
            entries.append(Crafted(name: ".wh..wh.plnk", type: Glibc.S_IFDIR, mode: 0o700))
            entries.append(
                Crafted(name: ".wh..wh.plnk/1.\(random.below(1000))", data: "linked across layers", mode: 0o755))
            files.append(entries[entries.count - 1].name)
        }
        let modes: [mode_t] = [0o644, 0o600, 0o755, 0o4755, 0o2750, 0o1777, 0o000, 0o444]
        let owners: [(uid_t, gid_t)] = [(0, 0), (1000, 100), (65534, 65534), (0, 5)]
        for _ in 0..<(5 + random.below(56)) {
            let folder = random.pick(folders)
            guard let name = fresh(in: folder) else { continue }
            let path = join(folder, name)
            var entry = Crafted(name: path)
            entry.mode = random.pick(modes)
            entry.owner = random.pick(owners)
            entry.mtime = random.below(4) == 0 ? 0 : 1_000_000_000 + random.below(1_000_000_000)
            switch random.below(20) {
            case 0..<5:
                entry.type = Glibc.S_IFDIR
                entry.mode = random.pick([0o755, 0o700, 0o1777, 0o2755, 0o555])
                entry.attributes = attributes()
                folders.append(path)
                taken[path] = []
            case 5..<11:
                let size = random.pick([0, 1, 100, 4096, 5000, 70_000])
                let zeros = random.below(3) == 0
                entry.bytes = (0..<size).map {
                    zeros && $0 % 9000 < 8000 ? 0 : UInt8(truncatingIfNeeded: random.next())
                }
                entry.attributes = attributes()
                files.append(path)
            case 11..<13:
                entry.type = Glibc.S_IFLNK
                entry.symlink = random.pick([
                    "/etc/passwd", "../" + name, "a/b/c", "missing", ".", String(repeating: "x/", count: 60),
                ])
                entry.mode = 0o777
                files.append(path)
            case 13..<15:
                guard let target = files.isEmpty ? nil : random.pick(files) else { continue }
                entry = Crafted(name: path, hardlink: target)
            case 15:
                entry.type = Glibc.S_IFIFO
            case 16:
                entry.type = random.below(2) == 0 ? Glibc.S_IFCHR : Glibc.S_IFBLK
                entry.device = (UInt32(1 + random.below(250)), UInt32(random.below(300)))
            case 17, 18:
                // A whiteout: of a name the folder does not hold, and never will.
                taken[folder, default: []].insert(".wh." + name)
                entry = Crafted(name: join(folder, ".wh." + name), data: "")
                entry.mtime = 1_000_000_000
            default:
                guard !opaque.contains(folder) else { continue }
                opaque.insert(folder)
                entry = Crafted(name: join(folder, ".wh..wh..opq"), data: "")
            }
            entries.append(entry)
        }
        // Orders tar writers use: a folder after what it holds (its metadata again, or only then),
        // and a folder never named, only implied by what is below it.
        var implied: Set<String> = []
        for folder in folders.dropFirst() where random.below(5) == 0 {
            guard let index = entries.firstIndex(where: { $0.name == folder && $0.type == Glibc.S_IFDIR }) else {
                continue
            }
            // Implied by an entry, not by whiteouts alone: a whiteout hides and makes nothing,
            // and umoci makes no folder for it (layerctl one with the whiteout in it, as GNU tar
            // makes one for the marker).
            let below = entries[(index + 1)...].contains { entry in
                entry.name.hasPrefix(folder + "/") && !(entry.name.split(separator: "/").last ?? "").hasPrefix(".wh.")
            }
            let moved = entries.remove(at: index)
            if random.below(2) == 0 || !below {
                entries.append(moved)
            } else {
                implied.insert(folder)
            }
        }
        return (entries, implied)
    }

    /// One line per entry of `tree`, sorted: what a blob says of it. A whiteout (a 0:0 character
    /// device) is listed as its `.wh.` marker and an opaque folder with its `.wh..wh..opq`, by name
    /// alone, as tar extracts them: empty files, whose metadata no reader keeps. An implied
    /// folder's time is left out: tar gives it the time of the extraction, layerctl the epoch;
    /// without `folderTimes`, every folder's, and without `fileTimes`, every other entry's.
    static func listing(_ tree: String, implied: Set<String>, folderTimes: Bool = true, fileTimes: Bool = true) throws
        -> [String]
    {
        var lines: [String] = []
        var inodes: [String: [String]] = [:]
        var entries: [(path: String, st: stat)] = []
        func walk(_ relative: String) throws {
            for name in try FileManager.default.contentsOfDirectory(
                atPath: relative.isEmpty ? tree : tree + "/" + relative)
            {
                let path = relative.isEmpty ? name : relative + "/" + name
                var st = stat()
                guard lstat(tree + "/" + path, &st) == 0 else { throw SystemError("read", tree + "/" + path) }
                entries.append((path, st))
                if st.st_mode & S_IFMT == S_IFDIR { try walk(path) }
            }
        }
        try walk("")
        // What a pull drops, GNU tar extracts.
        entries.removeAll { entry in
            let first = entry.path.split(separator: "/", maxSplits: 1)[0]
            return first.hasPrefix(".wh..wh.") && !(first == ".wh..wh..opq" && !entry.path.contains("/"))
        }
        for (path, st) in entries where st.st_mode & S_IFMT != S_IFDIR {
            inodes["\(st.st_dev):\(st.st_ino)", default: []].append(path)
        }
        for (path, st) in entries {
            let kind = st.st_mode & S_IFMT
            let base = path.split(separator: "/").last.map(String.init) ?? path
            let folder = path.contains("/") ? String(path[..<path.lastIndex(of: "/")!]) : ""
            if kind == S_IFCHR && st.st_rdev == 0 {
                lines.append("\(folder.isEmpty ? "" : folder + "/").wh.\(base) marker")
                continue
            }
            if base.hasPrefix(".wh.") && kind == S_IFREG {
                lines.append("\(path) marker")
                continue
            }
            var line =
                "\(path) \(String(kind >> 12, radix: 8)) \(String(st.st_mode & 0o7777, radix: 8)) \(st.st_uid):\(st.st_gid)"
            let timed = kind == S_IFDIR ? folderTimes && !implied.contains(path) : fileTimes
            if timed { line += " t\(st.st_mtim.tv_sec)" }
            switch kind {
            case S_IFREG:
                let data = try Data(contentsOf: URL(fileURLWithPath: tree + "/" + path))
                line += " \(st.st_size) \(Hash256(SHA256.hash(data: data)).hex.prefix(16))"
            case S_IFLNK:
                line += " -> \(try FileManager.default.destinationOfSymbolicLink(atPath: tree + "/" + path))"
            case S_IFCHR, S_IFBLK:
                line += " \(Device.major(st.st_rdev)),\(Device.minor(st.st_rdev))"
            default: break
            }
            if kind != S_IFDIR, let names = inodes["\(st.st_dev):\(st.st_ino)"], names.count > 1 {
                line += " linked \(names.sorted().joined(separator: "|"))"
            }
            line += try attributeText(tree + "/" + path)
            if kind == S_IFDIR
                && ExtendedAttributes.value(tree + "/" + path, "trusted.overlay.opaque") == Array("y".utf8)
            {
                lines.append("\(path)/.wh..wh..opq marker")
            }
            lines.append(line)
        }
        if ExtendedAttributes.value(tree, "trusted.overlay.opaque") == Array("y".utf8) {
            lines.append(".wh..wh..opq marker")
        }
        return lines.sorted()
    }

    /// ` NAME=VALUE` for each of `path`'s attributes but `trusted.*` (overlayfs's, which a marker
    /// stands for), sorted.
    static func attributeText(_ path: String) throws -> String {
        try ExtendedAttributes.all(Array(path.utf8)).filter { !$0.name.starts(with: Array("trusted.".utf8)) }
            .map { " \(String(decoding: $0.name, as: UTF8.self))=\(String(decoding: $0.value, as: UTF8.self))" }
            .sorted().joined()
    }

    /// The first lines where two listings differ, for a failure's message.
    static func difference(_ found: [String], _ expected: [String]) -> String? {
        guard found != expected else { return nil }
        let missing = Set(expected).subtracting(found).sorted().prefix(5)
        let extra = Set(found).subtracting(expected).sorted().prefix(5)
        guard !missing.isEmpty || !extra.isEmpty else { return "the same entries, in another order or number" }
        return "layerctl lacks \(Array(missing)); layerctl has besides \(Array(extra))"
    }
}
