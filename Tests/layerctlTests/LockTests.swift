import Foundation
@testable import LayerRecipe
import Testing

/// Locks pin each layer's packages (`layerctl lock`), builds follow them, `build --locked`
/// requires them, and `snapshot:` repositories move by day through an Archive-like folder.
@Suite("Locks and snapshots")
struct LockTests {
    static let sha = String(repeating: "ab", count: 32)

    @Test("a lock reads back as written; hand edits, unknown lines and other formats fail at their line and column")
    func format() throws {
        let lock = LockFile(
            arch: "x86_64",
            inputs: LockFile.Inputs(
                repositories: [
                    LockFile.Repository(name: "core", snapshot: "2024-06-01", servers: [], siglevel: nil),
                    LockFile.Repository(name: "demo", snapshot: nil, servers: ["../my repo/$repo", "https://x/$repo"], siglevel: "Optional TrustAll"),
                    LockFile.Repository(name: "extra", snapshot: nil, servers: [], mirrorlist: "/etc/pacman.d/mirrorlist", siglevel: nil),
                ],
                install: ["zsh", "game"], remove: ["nano"]),
            parent: "image ghcr.io/steve/base@sha256:" + Self.sha,
            packages: [
                LockFile.Package(repository: "demo", name: "zlib", version: "1:1.3-2", filename: "zlib-1:1.3-2-x86_64.pkg.tar.zst", sha256: Self.sha),
                LockFile.Package(repository: "core", name: "acl", version: "2.3-1", filename: "acl-2.3-1-x86_64.pkg.tar.zst", sha256: Self.sha),
            ])
        let text = lock.text
        #expect(try LockFile.parse(text, path: "x.lock") == lock)
        // Sorted where order means nothing: packages by name, requests by name.
        let lines = text.split(separator: "\n")
        #expect(lines.firstIndex { $0.hasPrefix("package core acl") }! < lines.firstIndex { $0.hasPrefix("package demo zlib") }!)
        #expect(lines.firstIndex(of: "install game")! < lines.firstIndex(of: "install zsh")!)

        func error(_ text: String) -> String {
            do { _ = try LockFile.parse(text, path: "x.lock") } catch { return "\(error)" }
            return "no error"
        }
        #expect(error(text.replacingOccurrences(of: "install zsh", with: "install bash")).contains("x.lock:1:1: the lock's `spec` is not the digest"))
        #expect(error(text.replacingOccurrences(of: "format 1", with: "format 2")).contains("x.lock:2:8: this lock has format 2"))
        #expect(text.contains("\nrepo extra mirrorlist /etc/pacman.d/mirrorlist\n"))
        let twice = text.replacingOccurrences(of: "repo extra mirrorlist /etc/pacman.d/mirrorlist", with: "repo extra mirrorlist a\nrepo extra mirrorlist b")
        #expect(error(twice).contains("a repo line is `repo NAME server URL`, `repo NAME mirrorlist PATH` (once)"))
        #expect(error(text + "surprise here\n").contains("x.lock:\(lines.count + 1):1: `surprise` with 1 words is no lock line"))
        #expect(error(text.replacingOccurrences(of: "2.3-1-x86_64.pkg.tar.zst " + Self.sha, with: "2.3-1-x86_64.pkg.tar.zst abc")).contains("a package's sha256 is 64 hex digits"))
        // A package's file is a name in its repository's folder: a stranger's lock names no path.
        let acl = try #require(lines.firstIndex { $0.hasPrefix("package core acl") }) + 1
        for path in ["../../../etc/shadow", "..", "a/b.pkg.tar.zst"] {
            let found = error(text.replacingOccurrences(of: "acl-2.3-1-x86_64.pkg.tar.zst", with: path))
            #expect(found.contains("x.lock:\(acl):24: a package's file is a name in its repository, not a path"), "\(found)")
        }
        // And no longer than a file's name: a 100,000-byte package name is not echoed back.
        let long = error(text.replacingOccurrences(of: "package core acl ", with: "package core " + String(repeating: "a", count: 100_000) + " "))
        #expect(long.contains("x.lock:\(acl):14: a package's repository, name, version and file are at most 255 bytes"), "\(long.prefix(200))")
        #expect(long.count < 300)
        #expect(error(text.replacingOccurrences(of: "acl-2.3-1-x86_64", with: String(repeating: "é", count: 128))).contains(":\(acl):24: "))
        #expect(error(text.replacingOccurrences(of: "arch x86_64", with: "arch  x86_64")).contains("x.lock:3:1: a lock line is words separated by single spaces"))
        #expect(error("format 1\n").contains("x.lock:1:1: the lock lacks one of its"))
        #expect(LockFile.path(for: "/a/gaming.yaml") == "/a/gaming.lock" && LockFile.path(for: "/a/b.yml") == "/a/b.lock")

        // A lock is untrusted input like a layer file: a FIFO in its place is refused, not read
        // (which would block), and a long word is quoted short.
        let folder = try Harness.temporaryDirectory("lock-fifo")
        #expect(mkfifo(folder + "/x.lock", 0o644) == 0)
        #expect(throws: LayerFileError.self) { try LockFile.read(folder + "/x.lock") }
        #expect(error(String(repeating: "w", count: 100_000) + " x\n").count < 300)
    }

    @Test("a server under the layer files' folder is written relative to it; any other stays as written")
    func relativeServers() {
        #expect(LockFile.relativeServer("file:///w/demo/out/repo/$repo", from: "/w/layers/demo") == "../../demo/out/repo/$repo")
        #expect(LockFile.relativeServer("file:///w/layers/repo/$repo", from: "/w/layers") == "repo/$repo")
        #expect(LockFile.relativeServer("file:///srv/repo/$repo", from: "/w/layers") == "file:///srv/repo/$repo")
        #expect(LockFile.relativeServer("https://mirror/$repo/os/$arch", from: "/w") == "https://mirror/$repo/os/$arch")
        // A mirrorlist: pacman's stays where it is, even seen from /etc; one beside the layer
        // files is relative; spaces are escaped, as a lock's words hold none.
        #expect(LockFile.relativeMirrorlist("/etc/pacman.d/mirrorlist", from: "/etc/layers") == "/etc/pacman.d/mirrorlist")
        #expect(LockFile.relativeMirrorlist("/w/layers/my mirrors", from: "/w/layers/demo") == "../my%20mirrors")
        #expect(LockFile.relativeMirrorlist("/srv/mirrors", from: "/w/layers") == "/srv/mirrors")
    }

    /// pacman's `Include = /etc/pacman.d/mirrorlist`: the servers come from a file, which a lock
    /// names instead of them, so a host's mirrors move without making its locks stale.
    @Test(
        "a mirrorlist: its servers are tried in order, the lock names the file, and mirrors moved inside it keep the lock fresh",
        .enabled(if: Harness.canBuild, Harness.cannotBuildReason))
    func mirrorlist() throws {
        let (layers, repo, store) = try movableDemo()
        // The first server refuses the connection: libalpm goes on to the next, as pacman does.
        // (Not a second file:// one: libalpm counts the errors of all of them as one host's,
        // "disk", and after three skips them all, as pacman does.)
        try "# Arch's mirrorlists hold comments\r\nServer = http://127.0.0.1:9/$repo\r\n#Server = https://mirror.example/$repo/os/$arch\r\nServer = file://\(repo)/$repo # the good one\r\n"
            .write(toFile: layers + "/mirrors", atomically: false, encoding: .utf8)
        try Harness.edit(layers + "/base.yaml") { $0.replacingOccurrences(of: "servers: [mirror/$repo]", with: "mirrorlist: mirrors") }
        let lock = try Harness.run(["lock", layers + "/gaming.yaml", "--store", store])
        #expect(lock.status == 0, "\(lock.stderr)")
        let gaming = try read(layers + "/gaming.lock")
        #expect(gaming.contains("\nrepo demo mirrorlist mirrors\n") && !gaming.contains(" server "), "\(gaming)")
        #expect(try read(layers + "/base.lock").contains("\nrepo demo mirrorlist mirrors\n"))

        // The mirror moves, and the mirrorlist with it: the lock holds, and nothing is rebuilt.
        try FileManager.default.moveItem(atPath: repo, toPath: layers + "/moved")
        try Harness.edit(layers + "/mirrors") { $0.replacingOccurrences(of: "/mirror/$repo", with: "/moved/$repo") }
        let locked = try Harness.run(["build", "--locked", layers + "/gaming.yaml", "--store", store])
        #expect(locked.status == 0 && locked.stdout.contains("(0 built, 3 cached)"), "\(locked.stdout) \(locked.stderr)")
        // Built again from the moved mirror into another store: the same layers.
        let again = try Harness.run(["build", "--locked", layers + "/gaming.yaml", "--store", try Harness.temporaryDirectory("mirrorlist-store")])
        func key(_ output: String) -> String? { output.split(separator: "\n").last?.split(separator: " ").prefix(2).joined(separator: " ") }
        #expect(again.status == 0 && again.stdout.contains("(3 built, 0 cached)") && key(again.stdout) == key(locked.stdout), "\(again.stdout) \(again.stderr)")
        #expect(try read(layers + "/gaming.lock") == gaming)

        // Another mirrorlist is another input: --locked names it.
        try FileManager.default.copyItem(atPath: layers + "/mirrors", toPath: layers + "/other")
        try Harness.edit(layers + "/base.yaml") { $0.replacingOccurrences(of: "mirrorlist: mirrors", with: "mirrorlist: other") }
        let stale = try Harness.run(["build", "--locked", layers + "/gaming.yaml", "--store", store])
        #expect(stale.status == 3 && stale.stderr.contains("the lock of layer base is stale: repository demo changed"), "\(stale.stderr)")
        try Harness.expectValidStore(store)
    }

    /// The demo layers on a repository folder of their own, `repo/demo`, that a test can move.
    func movableDemo() throws -> (layers: String, repo: String, store: String) {
        let layers = try Harness.demoLayers()
        let repo = layers + "/mirror"
        try FileManager.default.createDirectory(atPath: repo, withIntermediateDirectories: true)
        try FileManager.default.copyItem(atPath: Harness.demoOut + "/repo/demo", toPath: repo + "/demo")
        try Harness.edit(layers + "/base.yaml") {
            $0.replacingOccurrences(of: #"servers: \[[^\]]*\]"#, with: "servers: [mirror/$repo]", options: .regularExpression)
        }
        return (layers, repo, try Harness.temporaryDirectory("lock-store"))
    }

    func read(_ path: String) throws -> String { try String(contentsOfFile: path, encoding: .utf8) }

    @Test(
        "lock pins every layer; build follows it; a moved mirror fails at the lock's line; --update moves the named package; a changed layer file rewrites its lock holding the rest",
        .enabled(if: Harness.canBuild, Harness.cannotBuildReason))
    func pinAndFollow() throws {
        let (layers, repo, store) = try movableDemo()
        let plain = try Harness.run(["build", layers + "/gaming.yaml", "--store", try Harness.temporaryDirectory("lock-plain")])
        #expect(plain.status == 0, "\(plain.stderr)")
        // No lock is written by a build: only `lock` makes one.
        #expect(!FileManager.default.fileExists(atPath: layers + "/gaming.lock"))

        let lock = try Harness.run(["lock", layers + "/gaming.yaml", "--store", store])
        #expect(lock.status == 0, "\(lock.stderr)")
        // Locking changes no key: the same layers as a build without locks.
        #expect(lock.stdout.split(separator: "\n").last == plain.stdout.split(separator: "\n").last, "\(lock.stdout)")
        let gaming = try read(layers + "/gaming.lock")
        #expect(gaming.contains("\nrepo demo server mirror/$repo\n") && gaming.contains("\ninstall game\nremove nano\n"), "\(gaming)")
        #expect(gaming.contains("\npackage demo game 1.0-1 game-1.0-1-any.pkg.tar.zst "), "\(gaming)")
        #expect(try read(layers + "/base.lock").contains("\nparent scratch\n"))
        let nvidiaKey = try Harness.run(["inspect", "nvidia", "--store", store, "--json"]).stdout
        #expect(nvidiaKey.contains(String(gaming.split(separator: "\n").first { $0.hasPrefix("parent ") }!.dropFirst(7))))

        let follow = try Harness.run(["build", "--locked", layers + "/gaming.yaml", "--store", store])
        #expect(follow.status == 0 && follow.stdout.contains("(0 built, 3 cached)"), "\(follow.stdout) \(follow.stderr)")

        // The mirror moves on: game 1.1-1 (and linux, which no layer installs).
        try FileManager.default.removeItem(atPath: repo + "/demo")
        try FileManager.default.copyItem(atPath: Harness.demoOut + "/repo-next/demo", toPath: repo + "/demo")
        for arguments in [["build"], ["build", "--locked"], ["lock"]] {
            let moved = try Harness.run(arguments + [layers + "/gaming.yaml", "--store", store])
            #expect(moved.status == 3, "\(arguments) \(moved.stderr)")
            let line = gaming.split(separator: "\n", omittingEmptySubsequences: false).firstIndex { $0.hasPrefix("package demo game ") }! + 1
            #expect(
                moved.stderr.contains("\(layers)/gaming.lock:\(line):1: the lock pins game 1.0-1 from demo, and the repositories now resolve it to 1.1-1 from demo")
                    && moved.stderr.contains("layerctl lock --update \(layers)/gaming.yaml game"),
                "\(moved.stderr)")
            #expect(try read(layers + "/gaming.lock") == gaming)
        }
        let update = try Harness.run(["lock", "--update", layers + "/gaming.yaml", "game", "--store", store])
        #expect(update.status == 0, "\(update.stderr)")
        let updated = try read(layers + "/gaming.lock")
        #expect(updated == gaming.replacingOccurrences(of: #"package demo game 1\.0-1 game-1\.0-1-any\.pkg\.tar\.zst [0-9a-f]{64}"#, with: updated.split(separator: "\n").last.map(String.init)!, options: .regularExpression))
        #expect(updated.contains("package demo game 1.1-1 "))

        // An entry the layer file lost: at the lock's line of it.
        try Harness.edit(layers + "/gaming.yaml") { $0.replacingOccurrences(of: "remove: [nano]", with: "remove: []") }
        let lost = try Harness.run(["build", "--locked", layers + "/gaming.yaml", "--store", store])
        let removeLine = updated.split(separator: "\n", omittingEmptySubsequences: false).firstIndex(of: "remove nano")! + 1
        #expect(
            lost.status == 3 && lost.stderr.contains("gaming.lock:\(removeLine):1: the lock of layer gaming is stale: remove: changed"),
            "\(lost.stderr)")
        try Harness.edit(layers + "/gaming.yaml") { $0.replacingOccurrences(of: "remove: []", with: "remove: [nano]") }

        // The layer file changes: --locked names what differs and writes nothing; build rewrites
        // the lock, and game stays where the lock has it.
        try Harness.edit(layers + "/gaming.yaml") { $0.replacingOccurrences(of: "packages: [game]", with: "packages: [game, demo-app]") }
        let stale = try Harness.run(["build", "--locked", layers + "/gaming.yaml", "--store", store])
        // At the entry the lock does not have.
        #expect(
            stale.status == 3 && stale.stderr.contains("gaming.yaml:4:18: the lock of layer gaming is stale: packages: gained demo-app"),
            "\(stale.stderr)")
        #expect(try read(layers + "/gaming.lock") == updated)
        let rewrite = try Harness.run(["build", layers + "/gaming.yaml", "--store", store])
        #expect(rewrite.status == 0 && rewrite.stderr.contains("gaming: wrote \(layers)/gaming.lock"), "\(rewrite.stdout) \(rewrite.stderr)")
        let rewritten = try read(layers + "/gaming.lock")
        #expect(rewritten.contains("\ninstall demo-app\n") && rewritten.contains("package demo demo-lib ") && rewritten.contains("package demo game 1.1-1 "), "\(rewritten)")

        // A lock that is missing fails --locked, which writes none.
        try FileManager.default.removeItem(atPath: layers + "/nvidia.lock")
        let missing = try Harness.run(["build", "--locked", layers + "/gaming.yaml", "--store", store])
        #expect(missing.status == 3 && missing.stderr.contains("layer nvidia has no lock (\(layers)/nvidia.lock)"), "\(missing.stderr)")
        #expect(!FileManager.default.fileExists(atPath: layers + "/nvidia.lock"))
        try Harness.expectValidStore(store)
    }

    @Test(
        "lock --update PKG moves PKG and what it needs of the layer's packages, and holds the rest",
        .enabled(if: Harness.canBuild, Harness.cannotBuildReason))
    func updateMovesWhatIsNeeded() throws {
        let (layers, repo, store) = try movableDemo()
        try "from: base\npackages: [demo-app]\n".write(toFile: layers + "/app.yaml", atomically: false, encoding: .utf8)
        #expect(try Harness.run(["lock", layers + "/app.yaml", "--store", store]).status == 0)
        let before = try read(layers + "/app.lock")
        #expect(before.contains("\npackage demo demo-lib 1.0-1 ") && before.contains("\npackage demo demo-data 1.0-1 "), "\(before)")
        // demo-lib 1.1-1 comes out: demo-app needs it, demo-data does not.
        try BootMachine.shell(
            """
            cd '\(repo)/demo'
            mkdir next
            bsdtar -xf demo-lib-1.0-1-any.pkg.tar.zst -C next
            sed -i 's/^pkgver = 1.0-1$/pkgver = 1.1-1/' next/.PKGINFO
            (cd next && bsdtar --zstd -cf ../demo-lib-1.1-1-any.pkg.tar.zst .PKGINFO usr)
            rm -rf next
            repo-add -q demo.db.tar.gz demo-lib-1.1-1-any.pkg.tar.zst
            """)
        let data = try Harness.run(["lock", "--update", layers + "/app.yaml", "demo-data", "--store", store])
        #expect(
            data.status == 3 && data.stderr.contains("the lock pins demo-lib 1.0-1 from demo, and the repositories now resolve it to 1.1-1"),
            "\(data.stderr)")
        #expect(try read(layers + "/app.lock") == before)
        let app = try Harness.run(["lock", "--update", layers + "/app.yaml", "demo-app", "--store", store])
        #expect(app.status == 0, "\(app.stderr)")
        let after = try read(layers + "/app.lock")
        #expect(after.contains("\npackage demo demo-lib 1.1-1 demo-lib-1.1-1-any.pkg.tar.zst "), "\(after)")
        // Only demo-lib's line changed.
        let changed = Set(after.split(separator: "\n")).symmetricDifference(Set(before.split(separator: "\n")))
        #expect(changed.count == 2 && changed.allSatisfy { $0.hasPrefix("package demo demo-lib ") }, "\(changed)")
        let built = try Harness.run(["build", "--locked", layers + "/app.yaml", "--store", store])
        #expect(built.status == 0, "\(built.stderr)")
    }

    @Test(
        "a package file that changed under the same name and version is refused at the lock's line",
        .enabled(if: Harness.canBuild, Harness.cannotBuildReason))
    func changedFile() throws {
        let (layers, repo, store) = try movableDemo()
        #expect(try Harness.run(["lock", layers + "/gaming.yaml", "--store", store]).status == 0)
        // The repository now has another game-1.0-1: the same package compressed again, so its
        // bytes (and sha256) differ and its name, version and contents do not.
        let folder = repo + "/demo"
        try BootMachine.shell(
            """
            cd '\(folder)'
            zstd -q -d -c game-1.0-1-any.pkg.tar.zst | zstd -q -1 -c > game.new
            mv game.new game-1.0-1-any.pkg.tar.zst
            repo-add -q demo.db.tar.gz game-1.0-1-any.pkg.tar.zst
            """)
        let result = try Harness.run(["build", layers + "/gaming.yaml", "--store", store])
        #expect(result.status == 3, "\(result.stderr)")
        #expect(result.stderr.contains("/gaming.lock:") && result.stderr.contains("the file changed under the same name"), "\(result.stderr)")
    }

    @Test(
        "a lock whose package file is not the one the repository offers for that version is refused, naming both",
        .enabled(if: Harness.canBuild, Harness.cannotBuildReason))
    func otherFileName() throws {
        let (layers, _, store) = try movableDemo()
        #expect(try Harness.run(["lock", layers + "/gaming.yaml", "--store", store]).status == 0)
        let lock = layers + "/gaming.lock"
        let text = try String(contentsOfFile: lock, encoding: .utf8)
        let edited = text.replacingOccurrences(of: " game-1.0-1-any.pkg.tar.zst ", with: " game-1.0-1-x86_64.pkg.tar.zst ")
        #expect(edited != text)
        try edited.write(toFile: lock, atomically: false, encoding: .utf8)
        let line = edited.split(separator: "\n", omittingEmptySubsequences: false).firstIndex { $0.hasPrefix("package demo game ") }! + 1
        let result = try Harness.run(["build", layers + "/gaming.yaml", "--store", store])
        #expect(result.status == 3, "\(result.stderr)")
        #expect(
            result.stderr.contains(
                "gaming.lock:\(line):1: the lock pins game 1.0-1 from demo as the file game-1.0-1-x86_64.pkg.tar.zst, and the repository offers it as game-1.0-1-any.pkg.tar.zst"),
            "\(result.stderr)")
    }

    @Test(
        "snapshot: resolves through an Archive-like folder; lock --update --snapshot moves the chain to another day in place, the files staying their owner's",
        .enabled(if: Harness.canBuild, Harness.cannotBuildReason))
    func snapshots() throws {
        let layers = try Harness.demoLayers()
        let archive = try Harness.temporaryDirectory("archive")
        for (day, repo) in [("2024/06/01", "repo"), ("2024/06/02", "repo-next")] {
            try FileManager.default.createDirectory(atPath: "\(archive)/repos/\(day)/demo/os", withIntermediateDirectories: true)
            try FileManager.default.copyItem(atPath: "\(Harness.demoOut)/\(repo)/demo", toPath: "\(archive)/repos/\(day)/demo/os/x86_64")
        }
        try Harness.edit(layers + "/base.yaml") {
            $0.replacingOccurrences(of: #"servers: \[[^\]]*\]"#, with: "snapshot: \"2024-06-01\"  # a day of the Archive", options: .regularExpression)
        }
        let store = try Harness.temporaryDirectory("snapshot-store")
        let environment = ["LAYERCTL_ARCHIVE": "file://" + archive]
        // The layer files are a user's (run with sudo, layerctl is root): what it writes beside them,
        // or writes them again, stays that user's, with their modes.
        for name in try FileManager.default.contentsOfDirectory(atPath: layers) { #expect(chown(layers + "/" + name, 65534, 65534) == 0) }
        #expect(chmod(layers + "/base.yaml", 0o664) == 0)
        // base.yaml is a link to the file, as a checkout of dotfiles has them: the link stays.
        #expect(rename(layers + "/base.yaml", layers + "/base.yaml.real") == 0)
        #expect(symlink("base.yaml.real", layers + "/base.yaml") == 0)
        func owner(_ name: String) -> String {
            var st = stat()
            guard stat(layers + "/" + name, &st) == 0 else { return "none" }
            return "\(st.st_uid):\(st.st_gid) " + String(st.st_mode & 0o777, radix: 8)
        }
        let lock = try Harness.run(["lock", layers + "/gaming.yaml", "--store", store], environment: environment)
        #expect(lock.status == 0, "\(lock.stderr)")
        #expect([owner("base.lock"), owner("gaming.lock")] == ["65534:65534 664", "65534:65534 644"])
        let first = try read(layers + "/gaming.lock")
        #expect(first.contains("\nrepo demo snapshot 2024-06-01\n") && first.contains("package demo game 1.0-1 "), "\(first)")
        // --archive says the same as the environment.
        let again = try Harness.run(["build", "--locked", layers + "/gaming.yaml", "--store", store, "--archive", "file://" + archive])
        #expect(again.status == 0 && again.stdout.contains("(0 built, 3 cached)"), "\(again.stderr)")

        let before = try read(layers + "/base.yaml")
        let move = try Harness.run(["lock", "--update", "--snapshot", "2024-06-02", layers + "/gaming.yaml", "--store", store], environment: environment)
        #expect(move.status == 0, "\(move.stderr)")
        #expect(try read(layers + "/base.yaml") == before.replacingOccurrences(of: "\"2024-06-01\"", with: "\"2024-06-02\""))
        #expect([owner("base.yaml"), owner("base.lock")] == ["65534:65534 664", "65534:65534 664"])
        #expect(Harness.link(layers + "/base.yaml") == "base.yaml.real")
        let second = try read(layers + "/gaming.lock")
        #expect(second.contains("\nrepo demo snapshot 2024-06-02\n") && second.contains("package demo game 1.1-1 "), "\(second)")
        let locked = try Harness.run(["build", "--locked", layers + "/gaming.yaml", "--store", store], environment: environment)
        #expect(locked.status == 0 && locked.stdout.contains("(0 built, 3 cached)"), "\(locked.stderr)")
        let built = try Harness.run(["shell", "gaming", "--store", store, "--", "/bin/sh", "-c", "cat /etc/game.version"])
        #expect(built.stdout.contains("1.1"), "\(built.stdout) \(built.stderr)")

        // A day the Archive does not have: one line, at the repository.
        let missing = try Harness.run(["lock", "--update", "--snapshot", "2024-06-09", layers + "/gaming.yaml", "--store", store], environment: environment)
        #expect(missing.status != 0 && missing.stderr.split(separator: "\n").filter { $0.hasPrefix("layerctl:") }.count == 1, "\(missing.stderr)")
        #expect(missing.stderr.contains("base.yaml:7:5: refresh repository demo failed: "), "\(missing.stderr)")
        // Nothing moved: the layer files and the locks are as the last good lock left them.
        #expect(try read(layers + "/base.yaml").contains("\"2024-06-02\"") && (try read(layers + "/gaming.lock")) == second)
    }
}
