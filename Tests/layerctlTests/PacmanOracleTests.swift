import Foundation
import Glibc
import Testing

/// pacman, the peer, as the oracle of what builds install: random stacks of layers of the demo
/// repository's packages, each layer built by layerctl and the stack exported, must make the tree
/// that `pacman --root` makes of the same transactions one after another (`-S` a layer's
/// `packages:`, `-R` its `remove:`, `-Syu` its `upgrade: true`, `NoExtract` its `noextract:`, and
/// its `files:` edit of a configuration file by hand), scriptlets and hooks run. Apart by design:
/// every time (a build clamps them) and the local database's install dates; pacman's sync
/// databases, which a layer keeps none of.
@Suite("pacman as oracle")
struct PacmanOracleTests {
    static let seed = ProcessInfo.processInfo.environment["LAYERCTL_PACMAN_SEED"].flatMap { UInt64($0) } ?? 8
    static let stacks = ProcessInfo.processInfo.environment["LAYERCTL_PACMAN_STACKS"].flatMap { Int($0) } ?? 10

    /// What a layer may install: the demo repository but what breaks on purpose (failing or
    /// chatty scriptlets), makes per-machine state (which the normaliser removes by design), or
    /// clashes (conflict-a's other half, a file of another package, the boot stand-ins).
    static let installable = [
        "glibc", "libxcrypt", "zlib", "perl", "shadow", "demo-data", "demo-lib", "demo-app", "greeter", "hook-recorder",
        "hooked", "capped", "tool-a", "tool-b", "demo-tools", "nano", "nvidia-utils", "game", "confd", "driven",
        "driver-b", "oldtool-user", "newtool", "conflict-a",
    ]
    /// What `noextract:` may leave out, as pacman.conf's `NoExtract` (`!` takes back what an
    /// earlier pattern left out; a layer inherits its parent's patterns).
    static let noextract = [
        "usr/share/doc/*", "usr/share/perl5/*", "usr/bin/tool-*", "!usr/bin/tool-a", "etc/confd.conf",
        "usr/share/hooked/*", "!usr/share/doc/*",
    ]
    /// What a layer may remove: packages nothing else of the demo repository needs.
    static let removable = [
        "demo-app", "greeter", "hook-recorder", "hooked", "capped", "tool-a", "tool-b", "nano", "nvidia-utils", "game",
        "confd", "driven", "oldtool-user", "conflict-a",
    ]

    @Test("random stacks of package layers, exported, are the tree pacman --root makes of the same transactions")
    func randomStacks() throws {
        let work = try Harness.temporaryDirectory("pacman-oracle")
        let store = work + "/store"
        var random = MutationTests.Random(state: Self.seed)
        var compared: [String: Int] = [:]  // layers compared, by what they did
        var failedAlike: [String] = []
        var patterns = 0  // noextract: patterns the layers added
        defer {
            print(
                "pacman as oracle: \(Self.stacks) stacks (seed \(Self.seed)), \(compared.values.reduce(0, +)) layers compared \(compared.sorted { $0.key < $1.key }), \(patterns) noextract: patterns, \(failedAlike.count) failed in both"
            )
            for failure in failedAlike { print("  failed in both: \(failure)") }
        }
        stacks: for stack in 0..<Self.stacks {
            let root = "\(work)/pacman-\(stack)"
            // Modes given: libarchive sets this process's umask to 0 for a moment, and pacman keeps
            // the mode of a folder it finds.
            try FileManager.default.createDirectory(
                atPath: root + "/var/lib/pacman", withIntermediateDirectories: true,
                attributes: [.posixPermissions: 0o755])
            var installed: Set<String> = []
            var parent: String?
            var upgraded = false
            var noextract: [String] = []  // a layer's patterns, and those it inherits
            var edited = false
            let levels = 1 + random.below(5)
            for level in 0..<(levels + 1) where level < levels || edited {
                // After an edit, what pacman keeps the edited file through: an upgrade, or a removal.
                let step = level == 0 ? 0 : edited ? (upgraded ? 2 : 3) : random.below(5)
                var packages: [String] = []
                var removals: [String] = []
                var text = parent.map { "from: \($0)\n" } ?? ""
                let kind: String
                var arguments: [String] = []
                if step == 3 && !upgraded {
                    // Everything below to what the repositories hold an upgrade later: demo's, and
                    // `later`, first, which holds a newer confd.
                    kind = "upgrade"
                    upgraded = true
                    text += "repos:\n"
                    for (repository, folder) in [("later", "later"), ("demo", "repo-next")] {
                        text +=
                            "  - name: \(repository)\n    servers: [\(Harness.demoOut)/\(folder)/$repo]\n    siglevel: Never\n"
                    }
                    text += "upgrade: true\n"
                    arguments = ["-Syu"]
                } else if step == 4 && installed.contains("confd") {
                    // A change to a configuration file pacman keeps (confd's backup array): an
                    // upgrade then writes .pacnew, a removal .pacsave. In pacman's tree by hand.
                    kind = "edit"
                    edited = true
                    let content = "listen = 10.0.0.\(random.below(256))\n"
                    text +=
                        "files:\n  - path: /etc/confd.conf\n    content: \"\(content.replacingOccurrences(of: "\n", with: "\\n"))\"\n"
                    try content.write(toFile: root + "/etc/confd.conf", atomically: false, encoding: .utf8)
                } else if step == 2 {
                    kind = "remove"
                    let candidates = edited ? ["confd"] : Self.removable.filter { installed.contains($0) }
                    for _ in 0..<(1 + random.below(2)) where !candidates.isEmpty {
                        let name = random.pick(candidates)
                        if !removals.contains(name) { removals.append(name) }
                    }
                    if removals.isEmpty { continue }
                    text += "remove: [\(removals.joined(separator: ", "))]\n"
                    arguments = ["-R"] + removals
                } else {
                    kind = "install"
                    // A root layer holds what a system has at least: the folders and a shell.
                    packages = parent == nil ? ["filesystem", "busybox"] : step == 4 ? ["confd"] : []
                    for _ in 0..<(1 + random.below(5)) {
                        let name = random.pick(Self.installable + (upgraded ? ["game-addon"] : []))
                        if !installed.contains(name) && !packages.contains(name) { packages.append(name) }
                    }
                    if packages.isEmpty { continue }
                    text =
                        parent == nil
                        ? Harness.demoRoot(packages) : text + "packages: [\(packages.joined(separator: ", "))]\n"
                    arguments = ["-Sy"] + packages
                    if random.below(3) == 0 {
                        let pattern = random.pick(Self.noextract)
                        noextract.append(pattern)
                        patterns += 1
                        text += "noextract: [\"\(pattern)\"]\n"
                    }
                }
                let name = "s\(stack)-l\(level)"
                try text.write(toFile: "\(work)/\(name).yaml", atomically: true, encoding: .utf8)
                let built = try Harness.run(["build", "\(work)/\(name).yaml", "--store", store])
                try """
                [options]
                Architecture = x86_64
                SigLevel = Never
                NoExtract = \(noextract.joined(separator: " "))
                \(upgraded ? "[later]\nServer = file://\(Harness.demoOut)/later/$repo" : "")
                [demo]
                Server = file://\(Harness.demoOut)/\(upgraded ? "repo-next" : "repo")/$repo
                """.write(toFile: "\(work)/pacman-\(stack).conf", atomically: true, encoding: .utf8)
                let pacman =
                    arguments.isEmpty
                    ? (status: 0, output: "")
                    : try KernelMount.run(
                        "/usr/bin/pacman",
                        [
                            "--root", root, "--dbpath", root + "/var/lib/pacman", "--cachedir", "\(work)/cache",
                            "--config", "\(work)/pacman-\(stack).conf", "--logfile", "\(work)/pacman-\(stack).log",
                            "--noconfirm", "--noprogressbar",
                        ] + arguments)
                let what = "stack \(stack), \(name) (\(text.split(separator: "\n").suffix(2).joined(separator: "; ")))"
                guard built.status == 0, pacman.status == 0 else {
                    #expect(
                        built.status != 0 && pacman.status != 0,
                        "\(what): layerctl \(built.status) \(built.stderr); pacman \(pacman.status) \(pacman.output)")
                    failedAlike.append(
                        "\(what): \(built.stderr.split(separator: "\n").last { $0.hasPrefix("layerctl: ") } ?? "")")
                    continue stacks
                }
                if kind != "edit" { edited = false }
                installed.formUnion(packages)
                installed.subtract(removals)
                parent = name
                let exported = "\(work)/export-\(stack)-\(level)"
                let export = try Harness.run(["export", name, "--store", store, "--format", "dir", "-o", exported])
                #expect(export.status == 0, "\(what): \(export.stderr)")
                let found = try Self.listing(exported)
                let expected = try Self.listing(root, skipping: "var/lib/pacman/sync")
                let difference = OCILayerTests.difference(found, expected)
                #expect(difference == nil, "\(what): \(difference ?? "")")
                guard difference == nil else { break stacks }
                compared[kind, default: 0] += 1
                for kept in [".pacnew", ".pacsave"]
                where found.contains(where: { $0.hasPrefix("etc/confd.conf" + kept + " ") }) {
                    compared[kept, default: 0] += 1
                }
                try FileManager.default.removeItem(atPath: exported)
            }
        }
        #expect(compared.values.reduce(0, +) >= Self.stacks, "\(compared) layers compared")
        try FileManager.default.removeItem(atPath: work)
    }

    /// libalpm has libarchive walk each file's path for symlinks before it writes (one on the way
    /// is removed, and the folder made); layerctl makes that check in two system calls where the
    /// path has none, and leaves the walk the rest (package_extraction.c). A package whose paths
    /// meet symlinks on the disk in each place the walk meets them: on the way (to a folder,
    /// dangling), two folders down, one of another package's (`lib`, filesystem's), and a folder
    /// not yet made; pacman makes its tree the same way, by the walk. (A package that names a
    /// folder where the disk has a symlink conflicts with it, in libalpm's check before.)
    @Test("a package whose paths go through symlinks on the disk makes the tree pacman makes")
    func symlinksOnTheWay() throws {
        let work = try Harness.temporaryDirectory("pacman-oracle-links")
        let (folder, file) = (Self.folder, Self.file)
        try Self.craftRepository("links", in: work, packages: [
            ("links", "", [
                folder("usr"), folder("usr/lib"), file("usr/lib/dirlink/g"), file("usr/lib/dangling/h"), folder("usr/lib/a"),
                file("usr/lib/a/b/c/d"), file("lib/through/z"), folder("usr/lib/new"), file("usr/lib/new/x"),
                file("usr/lib/fresh/y"),
            ]),
        ])
        // What the layer below makes, and pacman's root is given by hand.
        let links = [("usr/lib/dirlink", "real"), ("usr/lib/dangling", "/nowhere"), ("usr/lib/a/b", "real")]
        let contents = [("usr/lib/real/f", "f\n"), ("usr/lib/a/real/e", "e\n")]
        try """
            from: scratch
            arch: x86_64
            \(Self.repos(with: "links", in: work))
            packages: [filesystem]
            files:
            \(contents.map { "  - {path: /\($0.0), content: \"\($0.1.replacingOccurrences(of: "\n", with: "\\n"))\"}" }.joined(separator: "\n"))
            \(links.map { "  - {path: /\($0.0), link: \($0.1)}" }.joined(separator: "\n"))

            """.write(toFile: work + "/below.yaml", atomically: true, encoding: .utf8)
        try "from: below\npackages: [links]\n".write(toFile: work + "/above.yaml", atomically: true, encoding: .utf8)
        let store = work + "/store"
        let built = try Harness.run(["build", work + "/above.yaml", "--store", store])
        #expect(built.status == 0, "\(built.stderr)")

        let root = try Self.pacmanRoot(with: "links", in: work)
        try Self.pacman(root, in: work, ["-Sy", "filesystem"])
        for (path, content) in contents {
            try FileManager.default.createDirectory(
                atPath: root + "/" + (path as NSString).deletingLastPathComponent, withIntermediateDirectories: true,
                attributes: [.posixPermissions: 0o755])
            // Its mode given: libarchive sets this process's umask to 0 for a moment, in other
            // suites' work too.
            #expect(FileManager.default.createFile(atPath: root + "/" + path, contents: Data(content.utf8), attributes: [.posixPermissions: 0o644]))
        }
        for (path, target) in links { try FileManager.default.createSymbolicLink(atPath: root + "/" + path, withDestinationPath: target) }
        try Self.pacman(root, in: work, ["-S", "links"])

        let found = try Self.compare(layer: "above", store: store, withPacman: root, in: work)
        // What the walk did, in both: the links on the way are folders now.
        #expect(found.contains { $0.hasPrefix("usr/lib/dirlink/g ") } && found.contains { $0.hasPrefix("lib/through/z ") }, "\(found)")
        try FileManager.default.removeItem(atPath: work)
    }

    /// The check of package_extraction.c keeps the folder of the file before open while a package
    /// is extracted. A scriptlet runs between two packages: here the first package's post_install
    /// makes the folder its file is in a symlink, and the second package's file goes in that
    /// folder (with no entry for the folder, whose extraction would make it anew first). The walk
    /// libalpm has libarchive make removes the symlink and makes the folder, as pacman does; the
    /// folder kept from the first package would have had the file written through the symlink.
    @Test("a scriptlet that makes a folder a symlink between two packages' files: the tree pacman makes")
    func scriptletMakesFolderSymlink() throws {
        let work = try Harness.temporaryDirectory("pacman-oracle-reshape")
        let (folder, file) = (Self.folder, Self.file)
        let scriptlet = "post_install() {\n\trm -r /usr/share/shape\n\tmkdir /usr/share/elsewhere\n\tln -s elsewhere /usr/share/shape\n}\n"
        try Self.craftRepository("reshape", in: work, packages: [
            ("reshape", "sh", [
                OCILayerTests.Crafted(name: ".INSTALL", data: scriptlet), folder("usr"), folder("usr/share"), folder("usr/share/shape"),
                file("usr/share/shape/one"),
            ]),
            // No folder entries, whose extraction would make the folder anew before the file.
            ("after", "reshape", [file("usr/share/shape/two")]),
        ])
        try """
            from: scratch
            arch: x86_64
            \(Self.repos(with: "reshape", in: work))
            packages: [filesystem, after]

            """.write(toFile: work + "/layer.yaml", atomically: true, encoding: .utf8)
        let store = work + "/store"
        let built = try Harness.run(["build", work + "/layer.yaml", "--store", store])
        #expect(built.status == 0, "\(built.stderr)")

        let root = try Self.pacmanRoot(with: "reshape", in: work)
        try Self.pacman(root, in: work, ["-Sy", "filesystem", "after"])

        let found = try Self.compare(layer: "layer", store: store, withPacman: root, in: work)
        // What the walk did, in both: the symlink the scriptlet made is a folder again.
        #expect(found.contains { $0.hasPrefix("usr/share/shape/two ") } && !found.contains { $0.hasPrefix("usr/share/elsewhere/two ") }, "\(found)")
        try FileManager.default.removeItem(atPath: work)
    }

    /// A crafted package's folder entry, and a file entry that holds its own name.
    static func folder(_ name: String) -> OCILayerTests.Crafted { .init(name: name, type: Glibc.S_IFDIR, mode: 0o755) }
    static func file(_ name: String) -> OCILayerTests.Crafted { .init(name: name, data: name + "\n") }

    /// A repository `name` at `work`/repo/`name` of crafted packages: each a name, what it
    /// depends on (or ""), and its entries but .PKGINFO.
    static func craftRepository(_ name: String, in work: String, packages: [(String, String, [OCILayerTests.Crafted])]) throws {
        let repo = work + "/repo/" + name
        try FileManager.default.createDirectory(atPath: repo, withIntermediateDirectories: true)
        for (package, depends, entries) in packages {
            let fields = [
                ("pkgname", package), ("pkgbase", package), ("pkgver", "1.0-1"), ("pkgdesc", "crafted for the oracle"),
                ("builddate", "1700000000"), ("packager", "layerctl tests"), ("size", "64"), ("arch", "any"),
            ] + (depends.isEmpty ? [] : [("depend", depends)])
            let info = OCILayerTests.Crafted(name: ".PKGINFO", data: fields.map { "\($0.0) = \($0.1)\n" }.joined())
            let path = repo + "/\(package)-1.0-1-any.pkg.tar"
            // .INSTALL sorts before .PKGINFO, as makepkg writes them.
            let scriptlet = entries.filter { $0.name == ".INSTALL" }
            try OCILayerTests.craft(scriptlet + [info] + entries.filter { $0.name != ".INSTALL" }, at: path)
            for command in [["/usr/bin/zstd", "-q", "--rm", path], ["/usr/bin/repo-add", "-q", repo + "/\(name).db.tar.gz", path + ".zst"]] {
                let made = try KernelMount.run(command[0], Array(command.dropFirst()))
                #expect(made.status == 0, "\(command): \(made.output)")
            }
        }
    }

    /// A layer file's `repos:`: the demo repository and `name`'s at `work`, unsigned.
    static func repos(with name: String, in work: String) -> String {
        """
        repos:
          - name: demo
            servers: [\(Harness.demoOut)/repo/$repo]
            siglevel: Optional TrustAll
          - name: \(name)
            servers: [\(work)/repo/$repo]
            siglevel: Optional TrustAll
        """
    }

    /// An empty root for pacman at `work`/pacman, and its pacman.conf with the same repositories.
    static func pacmanRoot(with name: String, in work: String) throws -> String {
        let root = work + "/pacman"
        try FileManager.default.createDirectory(
            atPath: root + "/var/lib/pacman", withIntermediateDirectories: true, attributes: [.posixPermissions: 0o755])
        try """
            [options]
            Architecture = x86_64
            SigLevel = Never
            [demo]
            Server = file://\(Harness.demoOut)/repo/$repo
            [\(name)]
            Server = file://\(work)/repo/$repo

            """.write(toFile: work + "/pacman.conf", atomically: true, encoding: .utf8)
        return root
    }

    /// pacman `arguments` on `root`, with `work`'s configuration, cache and log.
    static func pacman(_ root: String, in work: String, _ arguments: [String]) throws {
        let ran = try KernelMount.run(
            "/usr/bin/pacman",
            [
                "--root", root, "--dbpath", root + "/var/lib/pacman", "--cachedir", work + "/cache", "--config",
                work + "/pacman.conf", "--logfile", work + "/pacman.log", "--noconfirm", "--noprogressbar",
            ] + arguments)
        #expect(ran.status == 0, "pacman \(arguments): \(ran.output)")
    }

    /// Exports `layer`'s stack and expects its listing to be pacman's tree at `root`; returns the listing.
    static func compare(layer: String, store: String, withPacman root: String, in work: String) throws -> [String] {
        let exported = work + "/export"
        let export = try Harness.run(["export", layer, "--store", store, "--format", "dir", "-o", exported])
        #expect(export.status == 0, "\(export.stderr)")
        let found = try Self.listing(exported)
        let expected = try Self.listing(root, skipping: "var/lib/pacman/sync")
        let difference = OCILayerTests.difference(found, expected)
        #expect(difference == nil, "\(difference ?? "")")
        return found
    }

    /// `OCILayerTests.listing` of `tree` without times, and a package's `desc` in the local
    /// database without its install date.
    static func listing(_ tree: String, skipping: String? = nil) throws -> [String] {
        let local = tree + "/var/lib/pacman/local"
        for package in (try? FileManager.default.contentsOfDirectory(atPath: local)) ?? [] {
            let desc = "\(local)/\(package)/desc"
            guard let text = try? String(contentsOfFile: desc, encoding: .utf8) else { continue }
            let kept = text.components(separatedBy: "\n\n").filter { !$0.hasPrefix("%INSTALLDATE%") }
            try kept.joined(separator: "\n\n").write(toFile: desc, atomically: false, encoding: .utf8)
        }
        if let skipping { try? FileManager.default.removeItem(atPath: tree + "/" + skipping) }
        return try OCILayerTests.listing(tree, implied: [], folderTimes: false, fileTimes: false)
    }
}
