import Alpm
import Foundation
import Testing

/// Package signatures are checked as pacman checks them, against the keyring given with --keyring.
// Serialized: two tests count the GnuPG daemons on the demo keyring before and after a build, and
// the others start them on the same keyring.
@Suite("Signatures", .serialized, .enabled(if: Harness.canBuild, Harness.cannotBuildReason))
struct SignatureTests {
    /// A root layer on `repo` (a folder holding the `demo` repository) with `packages`.
    func build(_ packages: [String], repo: String, siglevel: String? = nil, keyring: String = Harness.demoOut + "/keyring") throws -> Harness.Result {
        let folder = try Harness.temporaryDirectory("signed")
        var text = "from: scratch\narch: x86_64\nrepos:\n  - name: demo\n    servers: [\(repo)/$repo]\n"
        if let siglevel { text += "    siglevel: \(siglevel)\n" }
        text += "packages: [\(packages.joined(separator: ", "))]\n"
        try text.write(toFile: folder + "/signed.yaml", atomically: false, encoding: .utf8)
        let store = try Harness.temporaryDirectory("store")
        let result = try Harness.run(["build", folder + "/signed.yaml", "--store", store, "--keyring", keyring])
        try Harness.expectValidStore(store)
        return result
    }

    @Test("a signed repository whose key is in the keyring builds")
    func trusted() throws {
        let result = try build(["filesystem", "busybox", "game"], repo: Harness.demoOut + "/signed")
        #expect(result.status == 0, "\(result.stderr)")
    }

    /// gpg writes in its home: the old code's checks left a dirmngr socket and a `crls.d` in the
    /// keyring, and libalpm's child, which parses strangers' data, could have written keys and
    /// trust there. Its gpg works on a copy.
    @Test("a build checks signatures without writing anything in the keyring, for a good signature and for an unknown key")
    func keyringUntouched() throws {
        let keyring = try Harness.temporaryDirectory("keyring")
        for name in ["pubring.gpg", "trustdb.gpg"] {
            try FileManager.default.copyItem(atPath: Harness.demoOut + "/keyring/" + name, toPath: keyring + "/" + name)
        }
        func look() throws -> [String] {
            try FileManager.default.contentsOfDirectory(atPath: keyring).sorted().map { name in
                var st = stat()
                lstat(keyring + "/" + name, &st)
                let bytes = FileManager.default.contents(atPath: keyring + "/" + name) ?? Data()
                return "\(name) \(st.st_mode) \(st.st_mtim.tv_sec).\(st.st_mtim.tv_nsec) \(bytes.base64EncodedString())"
            }
        }
        let before = try look()
        let trusted = try build(["filesystem", "busybox", "game"], repo: Harness.demoOut + "/signed", keyring: keyring)
        #expect(trusted.status == 0, "\(trusted.stderr)")
        let unknown = try build(["rogue"], repo: Harness.demoOut + "/signed", keyring: keyring)
        #expect(unknown.status == 5, "\(unknown.stderr)")
        #expect(try look() == before)
    }

    @Test("a package signed by an unknown key fails in one line at the repository, with the key and what to do; no gpg process stays")
    func unknownKey() throws {
        let before = Self.gnupgProcesses()
        // A keyring of the user's own, in a folder whose name a shell would split: the advice's
        // pacman-key must work on it, not on pacman's.
        let spaced = try Harness.temporaryDirectory("keyring") + "/the user's keys"
        try FileManager.default.createDirectory(atPath: spaced, withIntermediateDirectories: true)
        for name in ["pubring.gpg", "trustdb.gpg"] {
            try FileManager.default.copyItem(atPath: Harness.demoOut + "/keyring/" + name, toPath: spaced + "/" + name)
        }
        let rogue = try String(contentsOfFile: Harness.demoOut + "/signer/rogue/fpr", encoding: .utf8)
            .trimmingCharacters(in: .whitespacesAndNewlines).suffix(16)
        // A repository whose database holds no signature: libalpm checks each package's `.sig`
        // file, and the key it names was not looked for there ("commit transaction failed: could
        // not find or read file; keyring is not writable; required key missing from keyring").
        let signatureFiles = try Harness.temporaryDirectory("signature-files")
        _ = try Self.repositoryOfSignatureFiles(in: signatureFiles)
        for (repo, siglevel, keyring, pacmanKey) in [
            (Harness.demoOut + "/signed", nil, Harness.demoOut + "/keyring", "pacman-key --gpgdir \(Harness.demoOut)/keyring"),
            (Harness.demoOut + "/signed", "PackageRequired DatabaseNever", spaced,
             "pacman-key --gpgdir '\(spaced.replacingOccurrences(of: "'", with: "'\\''"))'"),
            (signatureFiles, nil, Harness.demoOut + "/keyring", "pacman-key --gpgdir \(Harness.demoOut)/keyring"),
        ] {
            let result = try build(["rogue"], repo: repo, siglevel: siglevel, keyring: keyring)
            #expect(result.status == 5)
            let error = result.labelled
            #expect(error.count == 1, "\(result.stderr)")
            let line = String(error.first ?? "")
            #expect(line.contains("/signed.yaml:4:5: check the signature of rogue failed: from repository demo, it is signed by key "), "\(line)")
            #expect(
                line.contains("add it with `\(pacmanKey) --recv-keys \(rogue) && \(pacmanKey) --lsign-key \(rogue)`")
                    && line.contains("--keyring"), "\(line)")
            // libalpm's own lines ("key … could not be looked up remotely", "required key missing
            // from keyring") said it before, twice.
            #expect(!result.stderr.contains("error: "), "\(result.stderr)")
        }
        // A signature check leaves no gpg-agent or dirmngr behind.
        #expect(Self.gnupgProcesses().subtracting(before).isEmpty, "\(Self.gnupgProcesses().subtracting(before))")
    }

    @Test(
        "a database signed by an unknown key fails in one line at the repository, with the key and what to do; no gpg process stays"
    )
    func unknownDatabaseKey() throws {
        let before = Self.gnupgProcesses()
        let fingerprint = try String(contentsOfFile: Harness.demoOut + "/signer/rogue/fpr", encoding: .utf8)
            .trimmingCharacters(in: .whitespacesAndNewlines)
        // pacman's default (DatabaseOptional checks a signature that is there) and DatabaseRequired.
        for siglevel in [nil, "DatabaseRequired PackageRequired"] {
            let result = try build(["filesystem"], repo: Harness.demoOut + "/rogue-db", siglevel: siglevel)
            #expect(result.status == 5)
            let lines = result.stderr.split(separator: "\n")
            #expect(lines.count == 1, "\(result.stderr)")
            let line = String(lines.first ?? "")
            #expect(
                line.hasPrefix("layerctl: ")
                    && line.contains(
                        "/signed.yaml:4:5: check the signature of the database of repository demo failed: it is signed by key \(fingerprint.suffix(16)), which the keyring does not hold (\(Harness.demoOut)/keyring)"
                    ), "\(line)")
            let pacmanKey = "pacman-key --gpgdir \(Harness.demoOut)/keyring"
            #expect(
                line.contains("add it with `\(pacmanKey) --recv-keys \(fingerprint.suffix(16)) && \(pacmanKey) --lsign-key")
                    && line.contains("--keyring"), "\(line)")
        }
        // libalpm looked the key up remotely, which starts a dirmngr on the keyring; it is stopped.
        #expect(Self.gnupgProcesses().subtracting(before).isEmpty, "\(Self.gnupgProcesses().subtracting(before))")
    }

    /// A fresh machine has no /etc/pacman.d/gnupg: a key cannot be added to it before
    /// `pacman-key --init` makes it, so the advice is to make it. libalpm's warning ("Public keyring
    /// not found; have you run 'pacman-key --init'?") said so apart, before the error.
    @Test("a keyring that is not there yet: one line that says how to make it, for a package and for a database")
    func keyringNotMade() throws {
        let keyring = try Harness.temporaryDirectory("fresh-machine") + "/gnupg"
        let pacmanKey = "pacman-key --gpgdir \(keyring)"
        for repo in ["signed", "rogue-db"] {
            let result = try build(["filesystem"], repo: Harness.demoOut + "/" + repo, keyring: keyring)
            #expect(result.status == 5, "\(result.stderr)")
            let error = result.labelled
            #expect(error.count == 1, "\(result.stderr)")
            #expect(
                error.first?.contains(
                    "(\(keyring)); that keyring holds no keys: make it with `\(pacmanKey) --init && \(pacmanKey) --populate archlinux` "
                        + "(on Debian, `apt-get install archlinux-keyring` first), and add a key that is no Arch packager's with `\(pacmanKey) --recv-keys "
                ) == true, "\(result.stderr)")
            #expect(!result.stderr.contains("warning: ") && !result.stderr.contains("error: "), "\(result.stderr)")
        }
        #expect(!FileManager.default.fileExists(atPath: keyring))
    }

    /// What an Arch user's keyring is: pacman-key's own `--init` and `--populate archlinux` from the
    /// Arch keyring (Debian's `archlinux-keyring`), with a third-party repository's key added and
    /// locally signed as its instructions say. Its packager keys are trusted through the master
    /// keys' signatures, marginal or full, and revoked keys are disabled: the build reads that
    /// trust through gpgme as libalpm does.
    @Test("a keyring made by pacman-key from the Arch keyring, with the demo key added as a third-party repository's: unknown, then advised, added, trusted")
    func archKeyring() throws {
        guard FileManager.default.fileExists(atPath: "/usr/share/keyrings/archlinux.gpg") else {
            Issue.record("no /usr/share/keyrings/archlinux.gpg: scripts/install-deps.sh installs archlinux-keyring")
            return
        }
        let keyring = try Harness.temporaryDirectory("arch-keyring") + "/gnupg"
        defer { _ = try? KernelMount.run("/usr/bin/gpgconf", ["--homedir", keyring, "--kill", "all"]) }
        func pacmanKey(_ arguments: [String]) throws {
            let result = try KernelMount.run("/usr/bin/pacman-key", ["--gpgdir", keyring] + arguments)
            try #require(result.status == 0, "pacman-key \(arguments): \(result.output)")
        }
        try pacmanKey(["--init"])
        try pacmanKey(["--populate", "archlinux"])
        let demoKey = try String(contentsOfFile: Harness.demoOut + "/signer/trusted/fpr", encoding: .utf8)
            .trimmingCharacters(in: .whitespacesAndNewlines)

        let unknown = try build(["filesystem", "busybox"], repo: Harness.demoOut + "/signed", keyring: keyring)
        #expect(unknown.status == 5, "\(unknown.stderr)")
        #expect(
            unknown.stderr.contains(
                "add it with `pacman-key --gpgdir \(keyring) --recv-keys \(demoKey.suffix(16)) && pacman-key --gpgdir \(keyring) --lsign-key \(demoKey.suffix(16))`"),
            "\(unknown.stderr)")

        // No keyserver here: the key comes from a file, as `pacman-key --add` takes it.
        let exported = try KernelMount.run(
            "/bin/sh", ["-c", "gpg --homedir \"$1\" --export \"$2\" > \"$3\"", "sh", Harness.demoOut + "/keyring", demoKey, keyring + ".asc"])
        try #require(exported.status == 0, "\(exported.output)")
        try pacmanKey(["--add", keyring + ".asc"])
        try pacmanKey(["--lsign-key", demoKey])

        let folder = try Harness.temporaryDirectory("signed")
        try "from: scratch\narch: x86_64\nrepos:\n  - name: demo\n    servers: [\(Harness.demoOut)/signed/$repo]\npackages: [filesystem, busybox]\n"
            .write(toFile: folder + "/signed.yaml", atomically: false, encoding: .utf8)
        let store = try Harness.temporaryDirectory("store")
        let trusted = try Harness.run(["build", folder + "/signed.yaml", "--store", store, "--keyring", keyring])
        #expect(trusted.status == 0, "\(trusted.stderr)")
        let record = try Harness.run(["inspect", "signed", "--store", store, "--json"])
        let signatures = try #require(
            (try JSONSerialization.jsonObject(with: Data(record.stdout.utf8)) as? [String: Any])?["signatures"] as? [String: Any])
        let keys = signatures["trustedKeys"] as? [String] ?? []
        #expect(keys.contains(demoKey + ":f"), "\(keys)")
        // The Arch keys pacman-key signed (its master keys, with ultimate trust from --init's own key) are there too.
        #expect(keys.count > 1, "\(keys)")
    }

    /// The pids of live gpg-agent, dirmngr and keyboxd processes on the demo keyring (zombies, ended
    /// and awaiting their parent, do not count). Those of other suites' builds, which run at the
    /// same time with keyrings of their own, are not this suite's to count.
    /// The demo's signed repository in `folder`/demo, its database made by repo-add with the
    /// `.sig` files away, so that it holds no signature: each package's is its `.sig` file alone,
    /// which the folder holds, as a server of such a repository serves it. Returns `folder`/demo.
    static func repositoryOfSignatureFiles(in folder: String) throws -> String {
        let repository = folder + "/demo"
        try BootMachine.shell(
            """
            mkdir -p '\(repository)'
            cp '\(Harness.demoOut)/signed/demo/'*.pkg.tar.zst '\(repository)/'
            repo-add -q '\(repository)/demo.db.tar.gz' '\(repository)/'*.pkg.tar.zst
            cp '\(Harness.demoOut)/signed/demo/'*.sig '\(repository)/'
            """)
        return repository
    }

    static func gnupgProcesses() -> Set<String> {
        let entries = (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []
        let home = Harness.demoOut + "/keyring"
        return Set(entries.filter { pid in
            guard pid.allSatisfy(\.isNumber),
                let command = try? String(contentsOfFile: "/proc/\(pid)/comm", encoding: .utf8),
                let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
                !(stat.split(separator: ")").last?.hasPrefix(" Z") ?? false),
                let arguments = FileManager.default.contents(atPath: "/proc/\(pid)/cmdline")
            else { return false }
            let words = arguments.split(separator: 0).map { String(decoding: $0, as: UTF8.self) }
            return ["gpg-agent", "dirmngr", "keyboxd"].contains(command.trimmingCharacters(in: .whitespacesAndNewlines))
                && zip(words, words.dropFirst()).contains { $0 == "--homedir" && $1.hasPrefix(home) }
        })
    }

    @Test("a tampered package fails the build and names the package")
    func tampered() throws {
        let copy = try Harness.temporaryDirectory("tampered")
        try FileManager.default.copyItem(atPath: Harness.demoOut + "/signed/demo", toPath: copy + "/demo")
        let package = try #require(try FileManager.default.contentsOfDirectory(atPath: copy + "/demo")
            .first { $0.hasPrefix("game-") && $0.hasSuffix(".pkg.tar.zst") })
        let handle = try #require(FileHandle(forWritingAtPath: copy + "/demo/" + package))
        try handle.seek(toOffset: 100)
        try handle.write(contentsOf: Data([0xFF, 0x00, 0xFF]))
        try handle.close()
        let result = try build(["game"], repo: copy)
        #expect(result.status == 5)
        #expect(result.stderr.contains("game: signature"), "\(result.stderr)")
    }

    @Test("repositories without siglevel get pacman's default, Required DatabaseOptional")
    func defaultLevel() throws {
        #expect(SignatureLevel.pacmanDefault.description == "PackageRequired DatabaseOptional")
        // The unsigned demo repository therefore fails: its packages have no signatures. One line
        // at the repository, as a repository of one's own unsigned packages (the AUR's) meets it;
        // its database's signature, where the level requires that too.
        let repo = Harness.demoOut + "/repo"
        let package = "filesystem-2024.11.21-1-any.pkg.tar.zst"
        for (siglevel, said, what, file, sign) in [
            (nil, "pacman's default, PackageRequired DatabaseOptional", "package filesystem of repository demo", package,
             "sign its packages (`makepkg --sign`)"),
            ("PackageRequired", "PackageRequired DatabaseOptional", "package filesystem of repository demo", package,
             "sign its packages (`makepkg --sign`)"),
            ("Required TrustAll", "PackageRequired DatabaseRequired", "the database of repository demo", "demo.db",
             "sign it (`repo-add --sign`)"),
        ] {
            let result = try build(["filesystem"], repo: repo, siglevel: siglevel)
            #expect(result.status == 5)
            let lines = result.labelled
            #expect(lines.count == 1, "\(result.stderr)")
            #expect(
                lines.first?.hasSuffix(
                    "/signed.yaml:4:5: the signature of \(what) could not be fetched (failed retrieving file '\(file).sig' "
                        + "from disk: Couldn't open file \(repo)/demo/\(file).sig), and the repository's siglevel (\(said)) "
                        + "requires one: \(sign), or give a repository of your own unsigned packages "
                        + "`siglevel: Optional TrustAll`, as pacman.conf would") == true, "\(result.stderr)")
        }
        // …and builds once the layer file says signatures are optional.
        #expect(try build(["filesystem"], repo: Harness.demoOut + "/repo", siglevel: "Optional").status == 0)
    }

    @Test("a layer checked under a weaker signature policy is built again under a stricter one; a stricter one serves a weaker one")
    func policyOnCacheHits() throws {
        let folder = try Harness.temporaryDirectory("signed")
        let store = try Harness.temporaryDirectory("store")
        let emptyKeyring = try Harness.temporaryDirectory("keyring")
        // The demo keyring as make-repo.sh or pacman-key leaves it, before anything checked its
        // trust database: gpg shows the demo key's validity as unknown until that check.
        let fresh = try Harness.temporaryDirectory("keyring") + "/gnupg"
        let (made, output) = try KernelMount.run(
            "/bin/bash", ["-euo", "pipefail", "-c",
            """
            cp -a '\(Harness.demoOut)/keyring' '\(fresh)'
            rm -f '\(fresh)'/trustdb.gpg '\(fresh)'/S.*
            gpg --homedir '\(Harness.demoOut)/keyring' --batch --quiet --export-ownertrust \
                | gpg --homedir '\(fresh)' --batch --quiet --import-ownertrust 2>/dev/null
            gpgconf --homedir '\(fresh)' --kill all 2>/dev/null || true
            """])
        try #require(made == 0, "\(output)")
        func build(_ siglevel: String?, keyring: String = fresh) throws -> Harness.Result {
            var text = "from: scratch\narch: x86_64\nrepos:\n  - name: demo\n    servers: [\(Harness.demoOut)/signed/$repo]\n"
            if let siglevel { text += "    siglevel: \(siglevel)\n" }
            text += "packages: [filesystem, game]\n"
            try text.write(toFile: folder + "/signed.yaml", atomically: false, encoding: .utf8)
            return try Harness.run(["build", folder + "/signed.yaml", "--store", store, "--keyring", keyring, "--json"])
        }
        // Built without checking signatures, then asked for under pacman's default: built again.
        let never = try build("Never")
        #expect(never.status == 0 && never.built == ["signed"], "\(never.stderr)")
        let strict = try build(nil)
        #expect(strict.status == 0 && strict.built == ["signed"], "\(strict.stdout)\(strict.stderr)")
        #expect(strict.stdout.contains("built under a weaker signature policy (repository demo was checked under PackageNever"), "\(strict.stdout)")
        // Now it proves the default, which also covers a weaker policy.
        let again = try build(nil)
        #expect(again.status == 0 && again.cached == ["signed"], "\(again.stdout)")
        let weaker = try build("Optional TrustAll")
        #expect(weaker.status == 0 && weaker.cached == ["signed"], "\(weaker.stdout)")
        // A keyring that no longer trusts the demo key: the stored layer does not serve, and the
        // build, which checks the packages again, fails.
        let untrusted = try build(nil, keyring: emptyKeyring)
        #expect(untrusted.status == 5 && untrusted.cached.isEmpty, "\(untrusted.stdout)\(untrusted.stderr)")
        #expect(untrusted.stdout.contains("was trusted then and is not now"), "\(untrusted.stdout)")
        try Harness.expectValidStore(store)
    }

    /// An Arch host's /var/cache/pacman/pkg holds what pacman fetched, each package with its
    /// `.sig`: a build takes them from there, checked as downloads are, and never writes there.
    @Test("packages in the host's cache (--host-cache) are taken, with their .sig, checked as downloads; one that differs, a link or a FIFO is downloaded; the host's cache stays as it was")
    func hostCache() throws {
        let signed = Harness.demoOut + "/signed/demo"
        let host = try Harness.temporaryDirectory("host-cache")
        let mirror = try Harness.temporaryDirectory("mirror")
        try FileManager.default.createDirectory(atPath: mirror + "/demo", withIntermediateDirectories: true)
        for name in try FileManager.default.contentsOfDirectory(atPath: signed) {
            try FileManager.default.copyItem(atPath: signed + "/" + name, toPath: (name.contains(".pkg.tar") ? host : mirror + "/demo") + "/" + name)
        }
        // The mirror has the database, and only the packages the host's cache has wrong.
        let busybox = "busybox-1.35.0-1-x86_64.pkg.tar.zst", filesystem = "filesystem-2024.11.21-1-any.pkg.tar.zst"
        let game = "game-1.0-1-any.pkg.tar.zst"
        for name in [busybox, filesystem, game] {
            for suffix in ["", ".sig"] { try FileManager.default.copyItem(atPath: signed + "/" + name + suffix, toPath: mirror + "/demo/" + name + suffix) }
        }
        var bytes = try Data(contentsOf: URL(fileURLWithPath: host + "/" + busybox))
        bytes[bytes.count / 2] ^= 0xFF  // the same size, another sha256
        try bytes.write(to: URL(fileURLWithPath: host + "/" + busybox))
        try FileManager.default.removeItem(atPath: host + "/" + filesystem)
        try FileManager.default.createSymbolicLink(atPath: host + "/" + filesystem, withDestinationPath: signed + "/" + filesystem)
        try FileManager.default.removeItem(atPath: host + "/" + game)
        #expect(mkfifo(host + "/" + game, 0o644) == 0)
        func listing() throws -> [String: Data] {
            var files: [String: Data] = [:]
            for name in try FileManager.default.contentsOfDirectory(atPath: host) where name != game {
                let link = try? FileManager.default.destinationOfSymbolicLink(atPath: host + "/" + name)
                files[name] = try link.map { Data($0.utf8) } ?? Data(contentsOf: URL(fileURLWithPath: host + "/" + name))
            }
            return files
        }
        let before = try listing()

        let folder = try Harness.temporaryDirectory("host-cache-layers")
        try "from: scratch\narch: x86_64\nrepos:\n  - name: demo\n    servers: [\(mirror)/$repo]\npackages: [filesystem, busybox, game, nano, greeter]\n"
            .write(toFile: folder + "/signed.yaml", atomically: false, encoding: .utf8)
        let store = try Harness.temporaryDirectory("store")
        let keyring = ["--keyring", Harness.demoOut + "/keyring"]
        let built = try Harness.run(["build", folder + "/signed.yaml", "--store", store, "--host-cache", host] + keyring)
        #expect(built.status == 0, "\(built.stderr)")
        let taken = try #require(built.stderr.split(separator: "\n").first { $0.contains("from the host's cache") }, "\(built.stderr)")
        let installed = try FileManager.default.contentsOfDirectory(atPath: store + "/cache/pkg").filter { $0.hasSuffix(".pkg.tar.zst") }
        #expect(installed.count > 3 && taken.contains("took \(installed.count - 3) packages ("), "\(taken) \(installed)")
        // Each came with its .sig, which libalpm needs to take a cached package.
        for name in installed { #expect(FileManager.default.fileExists(atPath: store + "/cache/pkg/" + name + ".sig"), "\(name)") }
        #expect(try listing() == before)
        var st = stat()
        #expect(lstat(host + "/" + game, &st) == 0 && st.st_mode & S_IFMT == S_IFIFO)
        try Harness.expectValidStore(store)

        // Without the host's cache, the mirror lacks them: they came from there.
        let without = try Harness.run(["build", folder + "/signed.yaml", "--store", try Harness.temporaryDirectory("store"), "--no-host-cache"] + keyring)
        #expect(without.status == 5 && without.stderr.contains("the download of package"), "\(without.stderr)")
        for (arguments, message) in [
            (["--host-cache", host, "--no-host-cache"], "--host-cache and --no-host-cache exclude each other"),
            (["--host-cache", host + "/" + busybox], "--host-cache \(host)/\(busybox) is no folder"),
        ] {
            let refused = try Harness.run(["build", folder + "/signed.yaml", "--store", store] + arguments)
            #expect(refused.status == 2 && refused.stderr.contains(message), "\(refused.stderr)")
        }
    }
}
