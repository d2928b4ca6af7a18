import Alpm
import Foundation
import Glibc
import Testing

/// The Alpm module against the real demo repository, without any layer machinery.
@Suite("Alpm")
final class AlpmTests {
    static let demoOut = ProcessInfo.processInfo.environment["LAYERCTL_DEMO_OUT"]
        ?? URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().path + "/demo/out"
    static var hasDemo: Bool { FileManager.default.fileExists(atPath: demoOut + "/repo/demo/demo.db") }

    /// The folders this test made, removed when it ends (each test has its own instance).
    private var folders: [String] = []
    deinit { for folder in folders { try? FileManager.default.removeItem(atPath: folder) } }

    func temporaryFolder() -> String {
        var template = Array("/tmp/layerctl-alpm-XXXXXX".utf8CString)
        let folder = String(cString: mkdtemp(&template)!)
        folders.append(folder)
        return folder
    }

    /// A fresh root and database path with the demo repository registered and refreshed; `repo`
    /// is a folder of demo/out, or `from` any folder that holds repositories.
    func handle(repo: String = "repo", from folder: String? = nil, in existing: String? = nil) throws -> AlpmHandle {
        let dir = existing ?? temporaryFolder()
        try FileManager.default.createDirectory(atPath: dir + "/root", withIntermediateDirectories: true)
        try FileManager.default.createDirectory(atPath: dir + "/db", withIntermediateDirectories: true)
        let handle = try AlpmHandle(root: dir + "/root", dbPath: dir + "/db/")
        try handle.setArchitectures(["x86_64"])
        try handle.addCacheDir(dir + "/cache")
        try handle.register(Repository(name: "demo", servers: ["file://\(folder ?? Self.demoOut + "/" + repo)/$repo"],
                                       signatureLevel: try SignatureLevel.parse("Optional").get()), arch: "x86_64")
        try handle.refresh(force: true)
        return handle
    }

    @Test("signature levels parse as pacman.conf's words")
    func signatureLevels() throws {
        #expect(SignatureLevel.pacmanDefault.description == "PackageRequired DatabaseOptional")
        #expect(try SignatureLevel.parse("Never").get().description == "PackageNever DatabaseNever")
        #expect(try SignatureLevel.parse("PackageOptional").get().description == "PackageOptional DatabaseOptional")
        if case .failure(let error) = SignatureLevel.parse("Sometimes") { #expect(error.word == "Sometimes") } else {
            Issue.record("Sometimes parsed")
        }
    }

    @Test("a signature level satisfies another when it checked at least as strictly and trusted no more")
    func levelsSatisfy() throws {
        func level(_ words: String) throws -> SignatureLevel { try SignatureLevel.parse(words).get() }
        let never = try level("Never")
        let optional = try level("Optional")
        let required = try level("Required")
        let trustAll = try level("Optional TrustAll")
        let databaseRequired = try level("PackageRequired DatabaseRequired")
        // Stricter serves weaker, never the other way.
        #expect(required.satisfies(optional) && required.satisfies(never) && optional.satisfies(never))
        #expect(!never.satisfies(optional) && !optional.satisfies(required) && !never.satisfies(required))
        // Trusting marginal and unknown keys is weaker than trusting only trusted ones.
        #expect(optional.satisfies(trustAll) && !trustAll.satisfies(optional))
        // Databases count too.
        let databaseOptional = try level("PackageRequired DatabaseOptional")
        #expect(databaseRequired.satisfies(databaseOptional) && !databaseOptional.satisfies(databaseRequired))
        for each in [never, optional, required, trustAll, databaseRequired] { #expect(each.satisfies(each)) }
    }

    @Test("a hook file's package targets are those of its Type = Package triggers, negations left out")
    func hookPackageTargets() {
        let hook = """
            # a comment: Target = commented
            [Trigger]
            Type = Path
            Operation = Install
            Target = usr/lib/modules/*/vmlinuz

            [Trigger]
            Operation = Upgrade
            Target = linux*
            Target = !linux-firmware
            Type = Package

            [Action]
            Target = action-is-no-trigger
            Exec = /bin/true
            """
        #expect(AlpmHandle.packageTargets(ofHook: Array(hook.utf8)) == ["linux*"])
        #expect(AlpmHandle.packageTargets(ofHook: Array("Type = Package\nTarget = outside\n".utf8)).isEmpty)
        #expect(AlpmHandle.packageTargets(ofHook: [0xFF, 0x00, 0x5B]).isEmpty)
    }

    @Test("versions compare as pacman's, epochs included")
    func versions() {
        #expect(AlpmHandle.compareVersions("1.0-1", "1.1-1") < 0)
        #expect(AlpmHandle.compareVersions("1:1.0-1", "2.0-1") > 0)
        #expect(AlpmHandle.compareVersions("1.0-2", "1.0-2") == 0)
    }

    @Test("resolving follows dependencies and returns the exact package files", .enabled(if: hasDemo, "needs demo/make-repo.sh"))
    func resolve() throws {
        let alpm = try handle()
        let resolution = try alpm.resolve(TransactionRequest(install: ["demo-app"]))
        #expect(resolution.install.map(\.name) == ["busybox", "demo-app", "demo-data", "demo-lib"])
        let app = try #require(resolution.install.first { $0.name == "demo-app" })
        #expect(app.filename == "demo-app-1.0-1-any.pkg.tar.zst" && app.repository == "demo")
        let data = try Data(contentsOf: URL(fileURLWithPath: Self.demoOut + "/repo/demo/" + app.filename))
        #expect(app.sha256.count == 64 && app.downloadSize == Int64(data.count))
        #expect(alpm.installedPackages().isEmpty, "resolving installed something")
    }

    @Test("errors carry libalpm's words and the package", .enabled(if: hasDemo, "needs demo/make-repo.sh"))
    func errors() throws {
        let alpm = try handle()
        #expect { try alpm.resolve(TransactionRequest(install: ["nope"])) } throws: { error in
            "\(error)" == "install nope failed: target not found in any repository"
        }
        #expect { try alpm.resolve(TransactionRequest(install: ["conflict-a", "conflict-b"])) } throws: { error in
            (error as? AlpmError)?.details.contains("conflict-a and conflict-b are in conflict") ?? false
        }
    }

    @Test("install, replace and sysupgrade commit for real", .enabled(if: getuid() == 0 && hasDemo, "needs root and demo/make-repo.sh"))
    func commit() throws {
        let alpm = try handle()
        var events: [AlpmEvent] = []
        alpm.observer = { events.append($0) }
        try alpm.commit(TransactionRequest(install: ["game", "oldtool"]))
        #expect(alpm.installedPackages().map(\.name) == ["busybox", "game", "oldtool"])
        #expect(events.contains { if case .packageStarted(.install, "game", "1.0-1") = $0 { true } else { false } })
        // newtool replaces oldtool on a sysupgrade, as `pacman -Su --noconfirm` answers yes to replacing.
        try alpm.commit(TransactionRequest(sysupgrade: true))
        #expect(alpm.installedPackages().map(\.name) == ["busybox", "game", "newtool"])
        // A scriptlet that fails throws, although libalpm only logs it.
        #expect { try alpm.commit(TransactionRequest(install: ["broken-scriptlet"])) } throws: { error in
            (error as? AlpmError)?.subject == "broken-scriptlet"
        }
    }

    /// libalpm opens a package with every format and filter libarchive has; layerctl leaves it tar
    /// and the libraries' decompressors (CLayerSupport's archive_readers.c), in this process as in
    /// the builder. The builder never meets such a package (the parent refuses it first, with
    /// `opensAsTar`), so the policy itself is shown here, where libalpm opens one.
    @Test("a package that is a cpio is no tar to opensAsTar, and libalpm does not open it", .enabled(if: getuid() == 0 && hasDemo, "needs root and demo/make-repo.sh"))
    func packageOfNoTar() throws {
        let work = temporaryFolder()
        let package = "busybox-1.35.0-1-x86_64.pkg.tar.zst"
        let shell = Process()
        shell.executableURL = URL(fileURLWithPath: "/bin/sh")
        shell.arguments = ["-ec", """
            mkdir -p "$1/files" "$1/repo/demo"
            bsdtar -xf "$2" -C "$1/files"
            cd "$1/files"
            bsdtar --format newc --zstd -cf "$1/repo/demo/$3" .PKGINFO .MTREE usr
            repo-add -q "$1/repo/demo/demo.db.tar.gz" "$1/repo/demo/$3"
            """, "sh", work, Self.demoOut + "/repo/demo/" + package, package]
        try shell.run()
        shell.waitUntilExit()
        try #require(shell.terminationStatus == 0)
        #expect(AlpmHandle.opensAsTar(Self.demoOut + "/repo/demo/" + package))
        #expect(!AlpmHandle.opensAsTar(work + "/repo/demo/" + package))
        #expect(!AlpmHandle.opensAsTar(work + "/nothing-here"))
        let alpm = try handle(from: work + "/repo")
        #expect { try alpm.commit(TransactionRequest(install: ["busybox"])) } throws: { error in
            "\(error)".contains("Unrecognized archive format")
        }
        #expect(alpm.installedPackages().isEmpty)
    }

    @Test(
        "progress is reported when it changes, at most ten times a second in a step besides its end, not for every file, package and chunk libalpm calls back with",
        .enabled(if: getuid() == 0 && hasDemo, "needs root and demo/make-repo.sh"))
    func progressChanges() throws {
        let alpm = try handle()
        var events: [(event: AlpmEvent, at: Double)] = []
        alpm.observer = { events.append(($0, ProcessInfo.processInfo.systemUptime)) }
        // perl: thousands of files in one package, and a download of 10 MB in 16 KiB chunks.
        let started = Date()
        try alpm.commit(TransactionRequest(install: ["perl"]))
        let seconds = Date().timeIntervalSince(started)
        var progress: [String] = []
        var downloads: [String: [Int64]] = [:]
        var lastOfStep: [String: Double] = [:]
        for (event, at) in events {
            switch event {
            case .progress(let step, let package, let percent, let current, let total):
                progress.append("\(step) \(package) \(percent) \(current)/\(total)")
                // Within a step (the checks go through each of perl's dependencies too), a report
                // comes `reportInterval` after the one before, or ends the step.
                if let before = lastOfStep["\(step)"], !(percent == 100 && current >= total) {
                    #expect(at - before >= AlpmHandle.reportInterval * 0.99, "\(step) \(package) \(percent) \(current)/\(total) after \(at - before) s")
                }
                lastOfStep["\(step)"] = at
            case .downloadProgress(let file, let downloaded, let total) where total > 0:
                downloads[file, default: []].append(downloaded * 100 / total)
            default: break
            }
        }
        #expect(progress.contains { $0.hasPrefix("install perl 100") }, "\(progress.suffix(5))")
        #expect(zip(progress, progress.dropFirst()).allSatisfy { $0 != $1 }, "a progress report repeated")
        #expect(progress.count <= 6 * 101, "\(progress.count) progress reports")
        let perl = try #require(downloads.first { $0.key.hasPrefix("perl-") }?.value)
        #expect(perl.count > 1 && perl.count <= 101 && Set(perl).count == perl.count, "\(perl)")
        // Its first chunk and its last, and between them one report per 0.1 s at most.
        #expect(perl.first! < 100 && perl.last == 100, "\(perl)")
        #expect(perl.count <= 2 + Int(seconds / AlpmHandle.reportInterval), "\(perl) in \(seconds) s")
    }

    @Test("sysupgrade takes the newer repository state", .enabled(if: getuid() == 0 && hasDemo, "needs root and demo/make-repo.sh"))
    func sysupgrade() throws {
        let dir = temporaryFolder()
        let alpm = try handle(in: dir)
        try alpm.commit(TransactionRequest(install: ["game"]))
        #expect(try alpm.resolve(TransactionRequest(sysupgrade: true)).install.isEmpty, "nothing is newer yet")
        // The same root, its repository now at the next state.
        let next = try handle(repo: "repo-next", in: dir)
        let upgraded = try next.commit(TransactionRequest(sysupgrade: true))
        #expect(upgraded.install.map(\.version) == ["1.1-1"])
        #expect(next.installedPackages().first { $0.name == "game" }?.version == "1.1-1")
    }
}
