import Foundation
import LayerRecipe
import Testing

/// Every validation error names the file, line and column of the mistake.
@Suite("Layer file validation")
final class LayerFileTests {
    let folder: String

    init() throws {
        var template = Array("/tmp/layerctl-recipe-XXXXXX".utf8CString)
        folder = String(cString: mkdtemp(&template)!)
        try write("base", "from: scratch\narch: x86_64\nrepos:\n  - name: core\n    servers: [/srv/repo/$repo]\npackages: [busybox]\n")
    }

    // Each test has its own instance, and its own folder.
    deinit { try? FileManager.default.removeItem(atPath: folder) }

    func write(_ name: String, _ text: String) throws {
        try text.write(toFile: folder + "/\(name).yaml", atomically: false, encoding: .utf8)
    }

    /// Loads `name.yaml` (after writing `text`) and returns the error it must raise.
    func error(_ text: String, name: String = "child") throws -> LayerFileError {
        try write(name, text)
        do {
            _ = try Recipe.load(folder + "/\(name).yaml")
        } catch let error as LayerFileError {
            return error
        }
        Issue.record("no error for:\n\(text)")
        return LayerFileError("none", at: FileLocation(file: "", line: 0, column: 0))
    }

    func expect(_ text: String, at line: Int, _ column: Int, _ message: String, name: String = "child") throws {
        let found = try error(text, name: name)
        #expect(found.location.file.hasSuffix("/\(name).yaml"))
        #expect(found.location.line == line && found.location.column == column, "\(found)")
        #expect(found.message.contains(message), "\(found)")
        #expect(found.description.hasPrefix(folder + "/\(name).yaml:\(line):\(column): "))
    }

    @Test("a valid chain loads root first, with repos inherited")
    func valid() throws {
        try write("child", "from: base\npackages: [game]\nremove: [nano]\nenv: {A: b}\nfiles:\n  - path: /etc/x\n    content: hi\n    mode: \"0600\"\n    owner: root\nrun: [\"true\"]\n")
        let recipe = try Recipe.load(folder + "/child.yaml")
        #expect(recipe.layers.map(\.name) == ["base", "child"])
        #expect(recipe.repositories(for: 1).map(\.name) == ["core"])
        #expect(recipe.repositories(for: 1)[0].servers == ["file:///srv/repo/$repo"])
        #expect(recipe.target.files[0].mode == 0o600 && recipe.target.files[0].owner == "root:root")
    }

    /// pacman takes a package from the first repository that holds it: a child adds its
    /// repositories after those it inherits, unless it names an inherited one again, whose place
    /// its list then takes (an Arch testing repository goes above the one it tests).
    @Test("repositories in pacman's order: a child's new ones after the inherited, or in the place of one it names again")
    func repositoryOrder() throws {
        func repo(_ name: String) -> String { "  - name: \(name)\n    servers: [/srv/\(name)/$repo]\n" }
        try write("root", "from: scratch\narch: x86_64\nrepos:\n" + ["core", "extra", "multilib"].map(repo).joined())
        let cases: [(repos: [String], order: [String])] = [
            (["aur"], ["core", "extra", "multilib", "aur"]),
            (["extra"], ["core", "extra", "multilib"]),
            (["extra-testing", "extra"], ["core", "extra-testing", "extra", "multilib"]),
            (["core-testing", "extra-testing", "core", "extra"], ["core-testing", "extra-testing", "core", "extra", "multilib"]),
            (["multilib", "mine", "core"], ["multilib", "mine", "core", "extra"]),
        ]
        for (index, (repos, order)) in cases.enumerated() {
            try write("c\(index)", "from: root\nrepos:\n" + repos.map(repo).joined())
            try write("g\(index)", "from: c\(index)\n")
            let recipe = try Recipe.load(folder + "/g\(index).yaml")
            #expect(recipe.repositories(for: 1).map(\.name) == order, "\(repos)")
            #expect(recipe.repositories(for: 2).map(\.name) == order, "inherited: \(repos)")
            #expect(recipe.repositories(for: 0).map(\.name) == ["core", "extra", "multilib"])
        }
    }

    /// A child that puts a repository above an inherited one names the inherited one by its name
    /// alone: its servers stay those a layer below declares, and a `siglevel` beside the name
    /// changes only that. A name alone that nothing below declares is refused where it is.
    @Test("a repository named alone is the inherited one, in the place the list gives it; with siglevel, that alone changes")
    func inheritedByName() throws {
        try write("root", "from: scratch\narch: x86_64\nrepos:\n  - name: core\n    servers: [/srv/core/$repo]\n    siglevel: Required\n  - name: extra\n    servers: [/srv/extra/$repo]\n")
        try write("testing", "from: root\nrepos:\n  - name: core-testing\n    servers: [/srv/testing/$repo]\n  - name: core\n")
        try write("top", "from: testing\n")
        let recipe = try Recipe.load(folder + "/top.yaml")
        for index in [1, 2] {
            let repos = recipe.repositories(for: index)
            #expect(repos.map(\.name) == ["core-testing", "core", "extra"])
            #expect(repos[1].servers == ["file:///srv/core/$repo"] && repos[1].siglevel == "Required")
            #expect(repos[1].location.file.hasSuffix("/root.yaml"), "where its servers are: \(repos[1].location)")
        }
        // The same as writing it out: what a build and a key read is the same list.
        try write("written", "from: root\nrepos:\n  - name: core-testing\n    servers: [/srv/testing/$repo]\n  - name: core\n    servers: [/srv/core/$repo]\n    siglevel: Required\n")
        let written = try Recipe.load(folder + "/written.yaml").repositories(for: 1)
        #expect(written.map { [$0.name, $0.servers.joined(), $0.siglevel ?? ""] } == recipe.repositories(for: 1).map { [$0.name, $0.servers.joined(), $0.siglevel ?? ""] })
        try write("weaker", "from: root\nrepos:\n  - name: extra\n  - name: core\n    siglevel: Never\n")
        let weaker = try Recipe.load(folder + "/weaker.yaml").repositories(for: 1)
        #expect(weaker.map(\.name) == ["extra", "core"])
        #expect(weaker[1].servers == ["file:///srv/core/$repo"] && weaker[1].siglevel == "Never")
        #expect(weaker[1].location.file.hasSuffix("/weaker.yaml") && weaker[1].location.line == 4, "\(weaker[1].location)")
        try expect("from: root\nrepos:\n  - name: core\n  - name: cor\n", at: 4, 5, "repository `cor` has no `servers`, `mirrorlist` or `snapshot`, and no layer below declares it")
        try expect("from: scratch\narch: x86_64\nrepos:\n  - name: core\npackages: [busybox]\n", at: 4, 5, "repository `core` has no `servers`, `mirrorlist` or `snapshot`")
    }

    /// curl ends a file:// URL's path at `?` or `#`: "file:///dev/zero#" would read /dev/zero.
    @Test("a file:// server with ? or # is refused where it is; a folder path keeps them, escaped")
    func fileServers() throws {
        for server in ["file:///dev/zero#", "file:///dev/zero?"] {
            try expect(
                "from: scratch\narch: x86_64\nrepos:\n  - name: core\n    servers: [\"\(server)\"]\npackages: [busybox]\n",
                at: 5, 15, "a file:// server is a folder, and curl would end its path at `?` or `#`")
        }
        try write("odd", "from: scratch\narch: x86_64\nrepos:\n  - name: core\n    servers: [\"/srv/a#b?c%d e/$repo\", \"file:///srv/x%23\"]\npackages: [busybox]\n")
        let recipe = try Recipe.load(folder + "/odd.yaml")
        #expect(recipe.repositories(for: 0)[0].servers == ["file:///srv/a%23b%3Fc%25d%20e/$repo", "file:///srv/x%23"])
    }

    @Test("a repository name makes file names: no longer than 248 bytes, and quoted short when refused")
    func longRepositoryName() throws {
        let name = String(repeating: "r", count: 249)
        let found = try error("from: scratch\narch: x86_64\nrepos:\n  - name: \(name)\n    servers: [/srv/$repo]\npackages: [busybox]\n")
        #expect(found.message.hasPrefix("repository name `rrrr") && found.message.hasSuffix("…` is longer than 248 bytes"), "\(found)")
        #expect(found.location.line == 4)
        try write("fine", "from: scratch\narch: x86_64\nrepos:\n  - name: \(name.dropLast())\n    servers: [/srv/$repo]\npackages: [busybox]\n")
        #expect(try Recipe.load(folder + "/fine.yaml").repositories(for: 0)[0].name.count == 248)
    }

    @Test("an unknown key suggests the nearest known key")
    func unknownKey() throws {
        try expect("from: base\npackges: [game]\n", at: 2, 1, "unknown key `packges`; did you mean `packages`?")
        try expect("from: base\nfiles:\n  - path: /etc/x\n    contnet: hi\n", at: 4, 5, "did you mean `content`?")
    }

    @Test("a wrong type names what was expected")
    func wrongType() throws {
        try expect("from: base\npackages: game\n", at: 2, 11, "`packages` must be a list")
        try expect("from: base\ndescription: [a, b]\n", at: 2, 14, "must be a single value, not a list")
        try expect("from: base\nenv: [A]\n", at: 2, 6, "`env` is a mapping")
    }

    @Test("a missing parent and a cycle in from:")
    func parents() throws {
        try expect("from: nowhere\n", at: 1, 7, "`nowhere.yaml` does not exist in")
        try write("a", "from: b\n")
        try write("b", "from: a\n")
        // A parent that is no file: named at the child's `from:`, and a pipe never opened.
        #expect(mkfifo(folder + "/pipe.yaml", 0o644) == 0 && mkdir(folder + "/folder.yaml", 0o755) == 0)
        try expect("from: pipe\n", at: 1, 7, "the parent layer file `pipe.yaml` is a pipe, not a file")
        try expect("from: folder\n", at: 1, 7, "the parent layer file `folder.yaml` is a folder, not a file")
        let cycle = try error("from: a\n", name: "b")
        #expect(cycle.message.contains("cycle"), "\(cycle)")
        #expect(cycle.location.line == 1 && cycle.location.column == 7)
    }

    /// Windows editors begin a UTF-8 file with a byte order mark and end lines with CRLF: a layer
    /// file with the mark failed at 2:1 ("did not find expected <document start>").
    @Test("a byte order mark and CRLF line ends read as a plain file does, and lines and columns count without the mark")
    func windowsText() throws {
        let text = "from: base\npackages: [game]\nrun:\n  - echo one\n  - |\n    echo two\n"
        try write("plain", text)
        try (String(decoding: [0xEF, 0xBB, 0xBF], as: UTF8.self) + text.replacingOccurrences(of: "\n", with: "\r\n"))
            .write(toFile: folder + "/windows.yaml", atomically: false, encoding: .utf8)
        let plain = try Recipe.load(folder + "/plain.yaml").target
        let windows = try Recipe.load(folder + "/windows.yaml").target
        #expect(windows.packages.map(\.value) == plain.packages.map(\.value))
        #expect(windows.run.map(\.value) == plain.run.map(\.value))
        #expect(windows.run.map(\.value) == ["echo one", "echo two\n"], "\(windows.run)")
        try expect(String(decoding: [0xEF, 0xBB, 0xBF], as: UTF8.self) + "from: base\nrun: 5\n", at: 2, 6, "must be a list")
    }

    /// `- echo key: value` is a mapping to YAML; the error says why, and how to write it.
    @Test("a value written with `: ` in it, unquoted, is a mapping: the error says to quote it; a list without commas says to add them")
    func unquotedColon() throws {
        try expect(
            "from: base\nrun:\n  - echo key: value\n", at: 3, 5,
            "a `run` command must be a single value, not a mapping (YAML reads unquoted text with `: ` in it as one; put the value in quotes)")
        // A flow list without its commas.
        try expect(
            "from: base\npackages: [game nano]\n", at: 2, 12,
            "`game nano` is not a package name (names in a list are separated by commas: `[game, nano]`)")
        // A mapping written as one is not told to quote anything.
        let written = try error("from: base\nrun:\n  - {a: 1, b: 2}\n")
        #expect(written.message == "a `run` command must be a single value, not a mapping", "\(written)")
        try write("quoted", "from: base\nrun:\n  - \"echo key: value\"\n")
        #expect(try Recipe.load(folder + "/quoted.yaml").target.run.map(\.value) == ["echo key: value"])
    }

    @Test("a source: that leaves the layer file's folder tree")
    func sourceEscapes() throws {
        try expect("from: base\nfiles:\n  - path: /etc/passwd\n    source: ../../etc/passwd\n", at: 4, 13, "leaves the layer file's folder")
        try FileManager.default.createSymbolicLink(atPath: folder + "/sneaky", withDestinationPath: "/etc/passwd")
        try expect("from: base\nfiles:\n  - path: /etc/passwd\n    source: sneaky\n", at: 4, 13, "leaves the layer file's folder")
    }

    /// A layer folder reached through a symlink, as in a dotfiles checkout: a source that is
    /// there is read, and one that is not said "leaves the layer file's folder".
    @Test("a layer folder reached through a symlink: its sources are read, and a missing one is said to be missing")
    func linkedFolder() throws {
        let linked = folder + "-linked"
        try FileManager.default.createSymbolicLink(atPath: linked, withDestinationPath: folder)
        defer { try? FileManager.default.removeItem(atPath: linked) }
        try FileManager.default.createDirectory(atPath: folder + "/files", withIntermediateDirectories: true)
        try "hello\n".write(toFile: folder + "/files/motd", atomically: false, encoding: .utf8)
        try write("present", "from: base\nfiles:\n  - path: /etc/motd\n    source: files/motd\n")
        #expect(try Recipe.load(linked + "/present.yaml").target.files.count == 1)
        for source in ["files/gone.conf", "gone/x.conf"] {
            try write("missing", "from: base\nfiles:\n  - path: /etc/x\n    source: \(source)\n")
            #expect {
                try Recipe.load(linked + "/missing.yaml")
            } throws: { error in
                "\(error)".contains("4:13: `source` `\(source)` does not exist; it is found from the layer file's folder")
            }
        }
        try write("outside", "from: base\nfiles:\n  - path: /etc/x\n    source: ../gone.conf\n")
        #expect {
            try Recipe.load(linked + "/outside.yaml")
        } throws: { error in
            "\(error)".contains("4:13: `source` `../gone.conf` leaves the layer file's folder")
        }
    }

    /// A NUL cut a command or a value short without a word (`run: "rm -rf /x\\0 && make"` ran
    /// `rm -rf /x`), and a string longer than the kernel passes a program failed the build's
    /// shell with "Argument list too long ... its files or steps broke /bin/sh".
    @Test("a value with a NUL but a file's content, or a run: command or env: longer than the kernel passes a program, is refused at its place")
    func commandLineLimits() throws {
        let longest = 131_071  // the kernel's MAX_ARG_STRLEN (32 pages), less the string's NUL
        try expect("from: base\nrun:\n  - \"true\\0 && make\"\n", at: 3, 5, "a `run` command holds a NUL byte")
        try expect("from: base\nenv:\n  A: \"x\\0y\"\n", at: 3, 6, "the value of A holds a NUL byte")
        // Nor may any other value: a server, a source, an owner, a key. A file's content may.
        try expect("from: base\nfiles:\n  - path: /etc/x\n    source: \"a\\0b\"\n", at: 4, 13, "`source` holds a NUL byte")
        try expect("from: base\nfiles:\n  - path: /etc/x\n    content: a\n    owner: \"root\\0\"\n", at: 5, 12, "holds a NUL byte")
        try expect("from: base\n\"env\\0\": {}\n", at: 2, 1, "holds a NUL byte")
        try expect(
            "from: scratch\narch: x86_64\nrepos:\n  - name: demo\n    servers: [\"https://a.example\\0.archlinux.org/\"]\n",
            at: 5, 15, "a server holds a NUL byte")
        try write("nul", "from: base\nfiles:\n  - path: /etc/x\n    content: \"a\\0b\"\n")
        #expect(try Recipe.load(folder + "/nul.yaml").target.files.first?.content == .inline("a\0b"))
        let x = { (count: Int) in String(repeating: "x", count: count) }
        try expect("from: base\nrun:\n  - \(x(longest + 1))\n", at: 3, 5, "a `run` command is \(longest + 1) bytes")
        try expect("from: base\nenv:\n  A: \(x(longest - 1))\n", at: 3, 6, "A=value is \(longest + 1) bytes")
        try expect("from: base\nenv:\n  A: \(x(70_000))\n  B: \(x(70_000))\n", at: 3, 3, "`env` is more than \(longest) bytes")
        // At the limits, they load.
        try write("longest", "from: base\nrun:\n  - \(x(longest))\nenv:\n  A: \(x(longest - 2))\n")
        let target = try Recipe.load(folder + "/longest.yaml").target
        #expect(target.run.first?.value.utf8.count == longest && target.env.first?.value.utf8.count == longest - 2)
    }

    @Test("a path: that is not absolute, contains .., or is longer than Linux or a layer holds")
    func badPath() throws {
        try expect("from: base\nfiles:\n  - path: etc/x\n    content: a\n", at: 3, 11, "must be absolute")
        try expect("from: base\nfiles:\n  - path: /etc/../x\n    content: a\n", at: 3, 11, "may not contain `..`")
        // Such paths failed once the packages were installed, quoting the whole path twice.
        let name = String(repeating: "n", count: 255)
        try expect(
            "from: base\nfiles:\n  - path: /etc/\(name)n/x\n    content: a\n", at: 3, 11,
            "`path` has a name of 256 bytes, longer than a file's name may be (255)")
        let deep = "/etc" + String(repeating: "/" + name, count: 12)
        try expect(
            "from: base\nfiles:\n  - path: \(deep)\n    content: a\n", at: 3, 11,
            "`path` is \(deep.utf8.count) bytes, longer than a path in a layer may be (3072)")
        // At the limits, they load.
        let longest = "/etc" + String(repeating: "/" + name, count: 11) + "/" + String(repeating: "x", count: 3072 - 4 - 11 * 256 - 1)
        #expect(longest.utf8.count == 3072)
        try write("longest-path", "from: base\nfiles:\n  - path: \(longest)\n    content: a\n")
        #expect(try Recipe.load(folder + "/longest-path.yaml").target.files.first?.path == longest)
    }

    /// The builder takes pacman's lock, log, package cache and sync databases out of every layer:
    /// a file written there was gone from the layer without a word (or failed in the build, for
    /// the sync databases, with a message about mounts).
    @Test("a path: in pacman's working state, which no layer keeps, is refused at its place")
    func packageManagerState() throws {
        for path in ["/var/lib/pacman/db.lck", "/var/log/pacman.log"] {
            try expect("from: base\nfiles:\n  - path: \(path)\n    content: a\n", at: 3, 11, "`\(path)` is pacman's working state")
        }
        for folder in ["/var/cache/pacman/pkg", "/var/lib/pacman/sync"] {
            try expect("from: base\nfiles:\n  - path: \(folder)/x.db\n    content: a\n", at: 3, 11, "is under \(folder), pacman's")
            try expect("from: base\nfiles:\n  - path: \(folder)\n    link: /x\n", at: 3, 11, "`\(folder)` is pacman's working state")
        }
        // pacman's own files beside them are a layer's to write.
        try write("ok", "from: base\nfiles:\n  - path: /var/lib/pacman/syncing\n    content: a\n  - path: /var/log/pacman.log.1\n    content: b\n")
        #expect(try Recipe.load(folder + "/ok.yaml").target.files.count == 2)
    }

    /// `files:` are the layer's own content: not what the kernel or the booted system makes, and
    /// read only from regular files.
    @Test("a path: under /proc, /sys, /dev, /run or /tmp; a source: that is a FIFO or a device; a folder source, never the layer file's own folder, without a mode")
    func apiFolders() throws {
        for folder in ["/proc", "/sys", "/dev", "/run", "/tmp"] {
            try expect("from: base\nfiles:\n  - path: \(folder)/x\n    content: a\n", at: 3, 11, "is under \(folder)")
            try expect("from: base\nfiles:\n  - path: \(folder)\n    content: a\n", at: 3, 11, "is under \(folder)")
        }
        // A name that only begins like one of them is fine.
        try write("ok", "from: base\nfiles:\n  - path: /devices/x\n    content: a\n  - path: /tmpfiles\n    content: b\n")
        #expect(try Recipe.load(folder + "/ok.yaml").target.files.count == 2)
        #expect(mkfifo(folder + "/pipe", 0o644) == 0)
        try expect("from: base\nfiles:\n  - path: /etc/x\n    source: pipe\n", at: 4, 13, "`source` `pipe` is a pipe, not a file")
        // A folder is a tree to copy, without a mode; the layer file's own folder is none. A file
        // that is not there is said to be missing.
        try FileManager.default.createDirectory(atPath: folder + "/files", withIntermediateDirectories: true)
        try write("tree", "from: base\nfiles:\n  - path: /etc/x\n    source: files/\n    owner: \"5:5\"\n")
        let tree = try #require(try Recipe.load(folder + "/tree.yaml").target.files.first)
        #expect(tree.content == .tree(URL(fileURLWithPath: folder + "/files").resolvingSymlinksInPath().path) && tree.owner == "5:5")
        try expect(
            "from: base\nfiles:\n  - path: /etc/x\n    source: files\n    mode: \"0600\"\n", at: 5, 5,
            "a folder `source` has no `mode`: its files are 0755 or 0644 by their executable bit, its folders 0755")
        for own in [".", "files/..", "./"] {
            try expect(
                "from: base\nfiles:\n  - path: /etc/x\n    source: \(own)\n", at: 4, 13,
                "is the layer file's own folder; a folder source is one below it")
        }
        try FileManager.default.createSymbolicLink(atPath: folder + "/etc", withDestinationPath: "/etc")
        try expect("from: base\nfiles:\n  - path: /etc/x\n    source: etc\n", at: 4, 13, "leaves the layer file's folder")
        try expect(
            "from: base\nfiles:\n  - path: /etc/x\n    source: files/x.conf\n", at: 4, 13,
            "`source` `files/x.conf` does not exist; it is found from the layer file's folder")
        try FileManager.default.createSymbolicLink(atPath: folder + "/null", withDestinationPath: "/dev/null")
        try expect("from: base\nfiles:\n  - path: /etc/x\n    source: null\n", at: 4, 13, "leaves the layer file's folder")
    }

    @Test("from: names a file of the same folder: no path, and no link out of the folder, whose target is never read")
    func parentOutside() throws {
        try expect("from: ../base\n", at: 1, 7, "in the same folder")
        try expect("from: /srv/layers/base\n", at: 1, 7, "in the same folder")
        let outside = folder + "-outside.yaml"
        try "secret: do-not-print\n".write(toFile: outside, atomically: false, encoding: .utf8)
        defer { try? FileManager.default.removeItem(atPath: outside) }
        try FileManager.default.createSymbolicLink(atPath: folder + "/elsewhere.yaml", withDestinationPath: outside)
        let linked = try error("from: elsewhere\n")
        #expect(linked.message.contains("is a link out of its folder"), "\(linked)")
        #expect(linked.location.line == 1 && linked.location.column == 7)
        #expect(!linked.description.contains("do-not-print") && !linked.description.contains("secret"))
        // A parent that is not there is named as written, and a long name is not echoed back whole.
        let missing = try error("from: nothing-here\n")
        #expect(missing.message == "the parent layer file `nothing-here.yaml` does not exist in \(folder)", "\(missing)")
        let long = try error("from: " + String(repeating: "a", count: 100_000) + "\n")
        #expect(long.message.hasPrefix("the parent layer file `aaaa") && long.message.contains("…"), "\(long.message.prefix(200))")
        #expect(long.description.utf8.count < 400, "\(long.description.utf8.count) bytes")
    }

    @Test("from: with a / is an image in a registry, and one that is none is an error at its place")
    func parentImage() throws {
        try write("child", "from: localhost:5000/steve/gaming:v1\nrun: [\"true\"]\n")
        let recipe = try Recipe.load(folder + "/child.yaml")
        #expect(recipe.layers.count == 1)
        #expect(recipe.baseImage?.value == "localhost:5000/steve/gaming:v1")
        #expect(recipe.baseImage?.location.line == 1 && recipe.baseImage?.location.column == 7)
        #expect(recipe.layers[0].parent == .image("localhost:5000/steve/gaming:v1"))
        try write("short", "from: steve/base\narch: x86_64\n")
        #expect(try Recipe.load(folder + "/short.yaml").layers[0].parent == .image("steve/base"))
        try expect("from: steve/Base\n", at: 1, 7, "repository components are lowercase")
        try expect("from: ghcr.io/steve/base:-x\n", at: 1, 7, "a tag is 1 to 128")
        try expect("from: ghcr.io/steve/base@sha256:12\n", at: 1, 7, "the digest must be sha256:")
        // Packages on an image need repositories this chain declares.
        try expect("from: steve/base\npackages: [game]\n", at: 2, 12, "no layer up to here declares `repos`")
    }

    @Test("a package named twice")
    func packageTwice() throws {
        try expect("from: base\npackages: [game, nano]\nremove: [game]\n", at: 3, 10, "package `game` is named twice")
        try expect("from: base\npackages:\n  - game\n  - game\n", at: 4, 5, "named twice")
    }

    @Test("packages: may say a version, as pacman -S 'linux>=6.6' does; remove: may not; a name with and without one is named twice")
    func versions() throws {
        try write("v", "from: base\npackages: [\"linux>=6.6\", \"core/glibc=2.40-1\", \"a<1:2.0\", b>3, c]\n")
        #expect(try Recipe.load(folder + "/v.yaml").target.packages.map(\.value) == ["linux>=6.6", "core/glibc=2.40-1", "a<1:2.0", "b>3", "c"])
        try expect("from: base\nremove: [\"nano>=1\"]\n", at: 2, 10, "`nano>=1` is not a package name")
        try expect("from: base\npackages: [\"nano>=\"]\n", at: 2, 12, "`nano>=` is not a package name")
        try expect("from: base\npackages: [\"nano>=1 2\"]\n", at: 2, 12, "is not a package name")
        try expect("from: base\npackages: [nano, \"nano>=1\"]\n", at: 2, 18, "package `nano` is named twice")
    }

    @Test("an empty file")
    func empty() throws {
        try expect("", at: 1, 1, "the layer file is empty")
        try expect("# only a comment\n", at: 1, 1, "the layer file is empty")
    }

    @Test("other mistakes: no from:, arch outside the root, bad YAML (a tab named), duplicate keys, bad mode, a flag that is not true or false")
    func others() throws {
        try expect("packages: [a]\n", at: 1, 1, "has no `from:`")
        try expect("from: base\narch: aarch64\n", at: 2, 7, "`arch` belongs in the root layer")
        try expect("from: base\npackages: [a\n", at: 3, 1, "not valid YAML")
        try expect("from: base\npackages:\n\t- nano\n", at: 3, 1, "(a tab: YAML indents with spaces only)")
        try expect("from: base\nrun:\n  - echo a\n \t- echo b\n", at: 4, 2, "(a tab: YAML indents with spaces only)")
        try expect("from: base\nrun: [a]\nrun: [b]\n", at: 3, 1, "`run` is written twice")
        try expect("from: base\nfiles:\n  - path: /x\n    content: a\n    mode: \"999\"\n", at: 5, 11, "`mode` is octal")
        try expect("from: base\nupgrade: yes\n", at: 2, 10, "`upgrade` is true or false, not `yes`")
        try expect("from: base\nnetwork: 1\n", at: 2, 10, "`network` is true or false, not `1`")
        try write("up", "from: base\nupgrade: true\n")
        #expect(try Recipe.load(folder + "/up.yaml").target.upgrade?.value == true)
    }

    @Test("ignore: goes with upgrade: true, names installed packages without a repository, each once, none of packages:")
    func ignore() throws {
        try expect(
            "from: base\nignore: [linux]\n", at: 2, 10,
            "`ignore` keeps packages back from `upgrade: true`, as pacman.conf's IgnorePkg does from pacman -Syu, and this layer has no `upgrade: true`")
        try expect("from: base\nupgrade: false\nignore: [linux]\n", at: 3, 10, "and this layer has no `upgrade: true`")
        try expect(
            "from: base\nupgrade: true\nignore: [core/linux]\n", at: 3, 10,
            "`ignore` names installed packages, as pacman.conf's IgnorePkg does, without a repository: `linux`")
        for bad in ["linux>=6", "linux 6", "Linux", "!linux"] {
            try expect(
                "from: base\nupgrade: true\nignore: [\"\(bad)\"]\n", at: 3, 10,
                "`\(bad)` is not a package name or a pattern of names, as pacman.conf's IgnorePkg takes them")
        }
        try expect("from: base\nupgrade: true\nignore: [linux, nano, linux]\n", at: 3, 23, "package `linux` is named twice; first at ")
        try expect(
            "from: base\nupgrade: true\npackages: [core/linux]\nignore: [linux]\n", at: 4, 10,
            "package `linux` is in `packages:` (at \(folder)/child.yaml:3:12) and `ignore:` names it, which keeps it as the layers below installed it; name it in one")
        try expect(
            "from: base\nupgrade: true\nremove: [nano]\nignore: [linux, \"n?n*\"]\n", at: 4, 17,
            "package `nano` is in `remove:` (at \(folder)/child.yaml:3:10) and `ignore:` matches it")
        try write("held", "from: base\nupgrade: true\nignore: [nano, \"linux*\", \"nvidia-[0-9]?xx\"]\n")
        #expect(try Recipe.load(folder + "/held.yaml").target.ignore.map(\.value) == ["nano", "linux*", "nvidia-[0-9]?xx"])
    }

    @Test("bytes that are not UTF-8, and NUL, are reported where they are")
    func badBytes() throws {
        var data = Data("from: base\npackages: [a]\ndescription: \"caf".utf8)
        data += [0xE9, 0x22, 0x0A]
        try data.write(to: URL(fileURLWithPath: folder + "/child.yaml"))
        let latin1 = try #require(try? { () throws -> LayerFileError? in
            do { _ = try Recipe.load(folder + "/child.yaml") } catch let error as LayerFileError { return error }
            return nil
        }())
        #expect(latin1.location.line == 3 && latin1.location.column == 18, "\(latin1)")
        #expect(latin1.message.contains("not UTF-8"), "\(latin1)")
        try expect("from: base\npackages: [a\u{0}]\n", at: 2, 13, "control characters are not allowed (U+0000)")
    }

    @Test("a long value is quoted short, a root layer needs repos, a layer name has a character set, a key is a single value, nesting stops at 1,000 levels")
    func hostileValues() throws {
        let long = String(repeating: "x", count: 1_000_000)
        let found = try error("from: base\npackages: [\(long)Y]\n")
        #expect(found.description.count < 200, "\(found.description.prefix(300))")
        #expect(found.message.contains("`" + String(repeating: "x", count: 40) + "…`"), "\(found.message.prefix(200))")
        try expect("from: scratch\narch: x86_64\npackages: [a]\n", at: 1, 7, "must declare its `repos`", name: "root")
        // The file's name is escaped in the location too: one mistake, one line.
        let newline = try error("from: base\n", name: "new\nline")
        #expect(newline.message.contains("the layer name `new\\x0Aline`"), "\(newline)")
        #expect(newline.description.hasSuffix("/new\\x0aline.yaml:1:1: \(newline.message)"), "\(newline)")
        try expect("from: base\n", at: 1, 1, "may hold letters, digits", name: ".hidden")
        try expect("from: base\n? [a, b]\n: 1\n? [a, b]\n: 2\n", at: 2, 3, "a key must be a single value")
        try expect("from: base\nenv: {\"A\\tB\": x}\n", at: 2, 7, "`A\\x09B` is not a valid environment variable name")
        // libyaml stops at 1,000 levels, flow or block, before a deeper tree costs stack or time; the
        // place is libyaml's: the flow's start, the block's 1,000th level.
        let deep = String(repeating: "[", count: 200_000) + String(repeating: "]", count: 200_000)
        try expect("from: base\npackages: \(deep)\n", at: 2, 12, "lists and mappings are nested more than 1,000 deep")
        let block = (1..<1100).map { String(repeating: "  ", count: $0) + "-\n" }.joined()
        try expect("from: base\npackages:\n" + block, at: 1001, 1999, "nested more than 1,000 deep")
    }

    /// A sparse file costs its maker no disk (a tar or a git pack of zeros is a few bytes); read
    /// whole, the old code took 24 GB of memory for this layer file and was killed.
    @Test("a layer file, a lock or a source: larger than layerctl reads is refused unread, where it is named")
    func sparseFiles() throws {
        try write("base", "from: scratch\n")
        #expect(truncate(folder + "/base.yaml", 20 << 30) == 0)
        let parent = try error("from: base\n")
        #expect(parent.description == folder + "/base.yaml:1:1: the layer file is 20.0 GiB; a layer file may be at most 16.0 MiB", "\(parent)")
        try "from: scratch\n".write(toFile: folder + "/child.lock", atomically: false, encoding: .utf8)
        #expect(truncate(folder + "/child.lock", 20 << 30) == 0)
        do {
            _ = try LockFile.read(folder + "/child.lock")
            Issue.record("a lock of 20 GiB was read")
        } catch let error as LayerFileError {
            #expect(error.description == folder + "/child.lock:1:1: the lock is 20.0 GiB; a lock may be at most 16.0 MiB", "\(error)")
        }
        #expect(FileManager.default.createFile(atPath: folder + "/blob", contents: nil))
        #expect(truncate(folder + "/blob", 1 << 30) == 0)
        try expect(
            "from: base\nfiles:\n  - path: /etc/x\n    source: blob\n", at: 4, 13,
            "`source` `blob` is 1.0 GiB; a `files:` source may be at most 64.0 MiB (a larger file belongs in a package)")
    }

    /// A root layer with one repository whose `mirrorlist:` is `list`, at line 5, column 17.
    func withMirrorlist(_ list: String) -> String {
        "from: scratch\narch: x86_64\nrepos:\n  - name: core\n    mirrorlist: \(list)\n    servers: [/srv/first/$repo]\npackages: [busybox]\n"
    }

    func writeMirrorlist(_ name: String, _ text: String) throws {
        try text.write(toFile: folder + "/" + name, atomically: false, encoding: .utf8)
    }

    @Test("a mirrorlist: its Server lines, in order, after servers:, as pacman reads an Include; comments, blank lines and CRLF as pacman has them")
    func mirrorlistServers() throws {
        try writeMirrorlist(
            "mirrors",
            "##\n## Arch Linux repository mirrorlist\n##\n\n## Worldwide\n#Server = https://geo.mirror.pkgbuild.com/$repo/os/$arch\n"
                + "Server = https://one.example/$repo/os/$arch\r\n  Server=file:///srv/two/$repo   # the local one\n\tServer = https://three.example/#/x\n")
        try write("root", withMirrorlist("mirrors"))
        let spec = try Recipe.load(folder + "/root.yaml").repositories(for: 0)[0]
        #expect(spec.mirrorlist?.path == folder + "/mirrors")
        #expect(
            spec.allServers == [
                "file:///srv/first/$repo", "https://one.example/$repo/os/$arch", "file:///srv/two/$repo", "https://three.example/",
            ])
        // A repository may have a mirrorlist and nothing else.
        try write("only", "from: scratch\narch: x86_64\nrepos:\n  - name: core\n    mirrorlist: mirrors\n")
        #expect(try Recipe.load(folder + "/only.yaml").repositories(for: 0)[0].allServers.count == 3)
    }

    @Test("a mirrorlist that is wrong is refused at mirrorlist:, naming its line and never quoting it")
    func mirrorlistErrors() throws {
        func expectRefused(_ text: String, _ message: String) throws {
            try writeMirrorlist("mirrors", text)
            let found = try error(withMirrorlist("mirrors"))
            #expect(found.location.line == 5 && found.location.column == 17, "\(found)")
            #expect(found.message == "`mirrorlist` `mirrors`" + message, "\(found)")
        }
        try expectRefused(
            "#Server = https://a.example/$repo/os/$arch\n\n",
            " has no `Server =` line that is not a comment; uncomment the mirrors to use, as pacman needs")
        try expectRefused(
            "Server = https://a.example/\nroot:$6$secret:19000:0:99999:7:::\n",
            ", line 2: this is not a `Server = URL` line; a mirrorlist holds those and # comments")
        try expectRefused("[core]\nServer = https://a.example/\n", ", line 1: this is not a `Server = URL` line; a mirrorlist holds those and # comments")
        try expectRefused("Server = /srv/repo\n", ", line 1: a mirrorlist's server is a URL, such as https://mirror.example/$repo/os/$arch")
        try expectRefused("Server = file:///dev/zero?\n", ", line 1: a file:// server is a folder, and curl would end its path at `?`; write it %3F")
        #expect(FileManager.default.createFile(atPath: folder + "/mirrors", contents: Data([0x53, 0xFF, 0xFE, 0x0A])))
        try expect(withMirrorlist("mirrors"), at: 5, 17, "`mirrorlist` `mirrors` is not UTF-8 text", name: "child")
        // Sparse: refused by its size, unread.
        #expect(truncate(folder + "/mirrors", 8 << 30) == 0)
        try expect(withMirrorlist("mirrors"), at: 5, 17, "`mirrorlist` `mirrors` is 8.0 GiB; a mirrorlist may be at most 1.0 MiB")
        // As a source is: no FIFO, no folder, nothing outside the layer file's folder tree.
        #expect(mkfifo(folder + "/pipe", 0o644) == 0)
        try expect(withMirrorlist("pipe"), at: 5, 17, "`mirrorlist` `pipe` is a pipe, not a file")
        try expect(withMirrorlist("../mirrors"), at: 5, 17, "`mirrorlist` `../mirrors` leaves the layer file's folder")
        try FileManager.default.createSymbolicLink(atPath: folder + "/shadow", withDestinationPath: "/etc/shadow")
        try expect(withMirrorlist("shadow"), at: 5, 17, "`mirrorlist` `shadow` leaves the layer file's folder")
        try expect(withMirrorlist("gone"), at: 5, 17, "`mirrorlist` `gone` does not exist; it is found from the layer file's folder")
        // Of the host's files, only those where pacman keeps its mirrorlists.
        for path in ["/etc/shadow", "/etc/pacman.d/../shadow", "/dev/zero", "/proc/self/environ"] {
            try expect(withMirrorlist(path), at: 5, 17, "`mirrorlist` `\(path)` is not in /etc/pacman.d, where pacman keeps its mirrorlists")
        }
    }

    /// The one folder of the host's that a layer file may name. This host may have none (Debian's
    /// pacman keeps no mirrorlist): the test makes its own file there, and removes what it made.
    @Test("a mirrorlist in /etc/pacman.d is read; a link there to another host file is refused, and a missing one says what installs it")
    func hostMirrorlist() throws {
        let host = Mirrorlist.hostFolder
        let made = !FileManager.default.fileExists(atPath: host)
        if made { try FileManager.default.createDirectory(atPath: host, withIntermediateDirectories: false) }
        let name = "layerctl-test-" + UUID().uuidString
        defer {
            for suffix in ["", "-link"] { try? FileManager.default.removeItem(atPath: host + "/" + name + suffix) }
            if made { try? FileManager.default.removeItem(atPath: host) }
        }
        try "Server = https://mirror.example/$repo/os/$arch\n".write(toFile: host + "/" + name, atomically: false, encoding: .utf8)
        try write("root", withMirrorlist(host + "/" + name))
        let spec = try Recipe.load(folder + "/root.yaml").repositories(for: 0)[0]
        #expect(spec.allServers == ["file:///srv/first/$repo", "https://mirror.example/$repo/os/$arch"])
        #expect(spec.mirrorlist?.path == host + "/" + name)
        try FileManager.default.createSymbolicLink(atPath: host + "/" + name + "-link", withDestinationPath: "/etc/shadow")
        try expect(withMirrorlist(host + "/" + name + "-link"), at: 5, 17, "is not in /etc/pacman.d, where pacman keeps its mirrorlists")
        try expect(
            withMirrorlist(host + "/" + name + "-gone"), at: 5, 17,
            "does not exist; on Arch, the pacman-mirrorlist package installs /etc/pacman.d/mirrorlist")
    }

    @Test("noextract: pacman's NoExtract patterns, without a leading /, ! kept; a child's come after its parent's; a pattern that is no path is refused where it is")
    func noExtract() throws {
        try write("slim", "from: base\nnoextract: [/usr/share/doc/*, \"!/usr/share/doc/nano/*\", usr/share/man/*]\n")
        try write("child", "from: slim\nnoextract: [usr/share/locale/*]\n")
        let recipe = try Recipe.load(folder + "/child.yaml")
        #expect(recipe.noExtract(for: 0).isEmpty)
        #expect(recipe.noExtract(for: 1) == ["usr/share/doc/*", "!usr/share/doc/nano/*", "usr/share/man/*"])
        #expect(recipe.noExtract(for: 2) == ["usr/share/doc/*", "!usr/share/doc/nano/*", "usr/share/man/*", "usr/share/locale/*"])
        for bad in ["\"\"", "\"!\"", "\"/\"", "\"!//\"", "\"a\\nb\""] {
            try expect("from: base\nnoextract: [\(bad)]\n", at: 2, 13, "a `noextract` pattern is a path in the packages")
        }
        try expect("from: base\nnoextract: usr/share/doc/*\n", at: 2, 12, "`noextract` must be a list")
        try expect("from: base\nnoextract: [\(String(repeating: "a", count: 5000))]\n", at: 2, 13, "at most 4096 bytes")
    }

    @Test("files: link: is a symlink's target, absolute or relative, with an owner and no mode; one of content, source and link; an empty or overlong target is refused where it is")
    func links() throws {
        try write(
            "child",
            "from: base\nfiles:\n  - path: /etc/localtime\n    link: /usr/share/zoneinfo/Europe/Berlin\n"
                + "  - path: /etc/os-release\n    link: ../usr/lib/os-release\n    owner: \"7:7\"\n")
        let files = try Recipe.load(folder + "/child.yaml").target.files
        #expect(files.map(\.content) == [.link("/usr/share/zoneinfo/Europe/Berlin"), .link("../usr/lib/os-release")])
        #expect(files.map(\.mode) == [0o777, 0o777] && files.map(\.owner) == ["root:root", "7:7"])
        let entry = "from: base\nfiles:\n  - path: /etc/x\n"
        try expect(entry + "    link: /a\n    mode: \"0644\"\n", at: 5, 5, "a `link` has no `mode`: its target's counts")
        try expect(entry + "    content: a\n    link: /a\n", at: 5, 5, "a file has one of `content`, `source` and `link`")
        try expect(entry + "    link: /a\n    content: a\n", at: 5, 5, "a file has one of `content`, `source` and `link`")
        try expect(entry + "    link: \"\"\n", at: 4, 11, "`link` is the path the link points to")
        try expect(entry + "    link: \(String(repeating: "a", count: 4096))\n", at: 4, 11, "`link` is at most 4095 bytes")
        try expect(entry + "    mode: \"0600\"\n", at: 3, 5, "has none of `content`, `source` and `link`")
        try expect(entry + "    lnik: /a\n", at: 4, 5, "did you mean `link`?")
    }

    /// The layer files for Arch's own mirrors cannot be built here (no network to Arch), and a
    /// mistake in them would be found by users first: each is read as a build would read it.
    @Test("layers/*.yaml, for Arch's mirrors, read as the README describes them: base, nvidia and gaming or development on it")
    func archLayers() throws {
        let folder = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent("layers").path
        for (top, chain) in [("gaming", ["base", "nvidia", "gaming"]), ("development", ["base", "nvidia", "development"])] {
            let recipe = try Recipe.load(folder + "/\(top).yaml")
            #expect(recipe.layers.map(\.name) == chain)
            #expect(recipe.arch == "x86_64")
            #expect(recipe.repositories(for: chain.count - 1).map(\.name) == ["core", "extra", "multilib"])
            #expect(recipe.repositories(for: 0).allSatisfy { $0.siglevel == nil && $0.servers.allSatisfy { $0.hasPrefix("https://") } })
            #expect(recipe.boot(for: chain.count - 1)?.value == .mkinitcpio)
        }
        let base = try Recipe.load(folder + "/base.yaml").target
        #expect(base.packages.map(\.value) == ["base", "linux", "mkinitcpio"])
        #expect(base.files.contains { $0.path == "/etc/mkinitcpio.conf" })
        // pacman's keyring, made at boot, since the build removes one made in it.
        #expect(base.files.first { $0.path == "/etc/systemd/system/multi-user.target.wants/pacman-init.service" }?.content == .link("../pacman-init.service"))
        #expect(base.files.contains { $0.path == "/etc/systemd/system/pacman-init.service" })
        // A user to log in as (`ConfinementTests.accounts` runs these tools in a build).
        #expect(base.run.map(\.value) == ["useradd -m -G wheel -s /bin/bash -p '' arch"])
        let gaming = try Recipe.load(folder + "/gaming.yaml")
        #expect(gaming.layers[1].packages.map(\.value).contains("nvidia-utils"))
        #expect(gaming.target.packages.map(\.value) == ["steam", "lib32-nvidia-utils"])
    }

    @Test("YAML aliases are refused where the first one is, before anything is expanded: an alias bomb as a key or a value")
    func aliases() throws {
        // Each level is a list of ten aliases of the level before: 10^9 strings once expanded.
        let levels = Array("abcdefghij")
        var bomb = "from: base\na: &a [x, x, x, x, x, x, x, x, x, x]\n"
        for (previous, level) in zip(levels, levels.dropFirst()) {
            bomb += "\(level): &\(level) [" + Array(repeating: "*\(previous)", count: 10).joined(separator: ", ") + "]\n"
        }
        try expect(bomb + "? *j\n: used as a key\n", at: 3, 8, "YAML aliases (`*name`) are not allowed")
        try expect(bomb + "description: *j\n", at: 3, 8, "YAML aliases (`*name`) are not allowed")
        try expect("from: base\nenv: {A: &v one}\ndescription: *v\n", at: 3, 14, "YAML aliases")
    }
}

/// A libalpm failure is put at the line of the package libalpm names, and no other.
@Suite("Failure locations")
struct FailureLocationTests {
    @Test("the package libalpm names, not one whose name is part of it; a repository prefix is no part of the name")
    func packageLine() throws {
        var template = Array("/tmp/layerctl-recipe-XXXXXX".utf8CString)
        let folder = String(cString: mkdtemp(&template)!)
        defer { try? FileManager.default.removeItem(atPath: folder) }
        let text = """
            from: scratch
            arch: x86_64
            repos:
              - name: core
                servers: [/srv/repo/$repo]
            packages: [perl, perl-xml, core/zlib]
            remove: [nano]

            """
        try text.write(toFile: folder + "/l.yaml", atomically: false, encoding: .utf8)
        let layer = try Recipe.load(folder + "/l.yaml").layers[0]
        #expect(layer.location(ofPackage: ["perl-xml"])?.column == 18)
        #expect(layer.location(ofPackage: ["perl"])?.column == 12)
        #expect(layer.location(ofPackage: ["zlib"])?.column == 28)
        #expect(layer.location(ofPackage: ["nano"])?.line == 7)
        #expect(layer.location(ofPackage: ["xml", "perl-xm"]) == nil)
    }
}
