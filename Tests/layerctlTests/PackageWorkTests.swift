import Foundation
import Glibc
@testable import LayerBuilder
import LayerEntries
import LayerStore
import Testing

/// libalpm parses the repositories' databases and packages and the layers' package databases,
/// all of them strangers' data, in a child of its own (`PackageWork`): these look at that child
/// from outside, while it works, and give it jobs by hand to see what it may open.
@Suite("Package work", .serialized, .enabled(if: Harness.canBuild, Harness.cannotBuildReason))
struct PackageWorkTests {
    /// A database of `count` packages, each needing the next: libalpm takes seconds to resolve it,
    /// which is time to look at the process that does.
    static func chainRepository(in work: String, count: Int) throws -> String {
        let entries = work + "/entries"
        var names: [String] = []
        for index in 0..<count {
            let name = "p\(index)-1-1"
            names.append(name)
            try FileManager.default.createDirectory(atPath: entries + "/" + name, withIntermediateDirectories: true)
            let depends = index + 1 < count ? "%DEPENDS%\np\(index + 1)\n\n" : ""
            try ("%FILENAME%\n\(name)-any.pkg.tar.zst\n\n%NAME%\np\(index)\n\n%VERSION%\n1-1\n\n%ARCH%\nany\n\n%CSIZE%\n100\n\n"
                + "%SHA256SUM%\n\(String(repeating: "0", count: 64))\n\n" + depends)
                .write(toFile: entries + "/" + name + "/desc", atomically: false, encoding: .utf8)
        }
        try FileManager.default.createDirectory(atPath: work + "/repo/chain", withIntermediateDirectories: true)
        try names.joined(separator: "\n").write(toFile: work + "/names", atomically: false, encoding: .utf8)
        let pack = try KernelMount.run("/usr/bin/bsdtar", ["-czf", work + "/repo/chain/chain.db", "-C", entries, "-T", work + "/names"])
        #expect(pack.status == 0, "\(pack.output)")
        let layer = "from: scratch\narch: x86_64\nrepos:\n  - name: chain\n    servers: [\(work)/repo/$repo]\n    siglevel: Never\npackages: [p0]\n"
        try layer.write(toFile: work + "/probe.yaml", atomically: false, encoding: .utf8)
        return work + "/probe.yaml"
    }

    /// The old code resolved in layerctl's own process: root with every capability, in the host's
    /// namespaces, no filter. The resolution of a long chain is caught while it runs.
    @Test("libalpm works in children of its own: other pid and mount namespaces (and network, to resolve), no capability, no_new_privs, a seccomp filter")
    func resolutionInAChild() throws {
        let work = try Harness.temporaryDirectory("package-child")
        let layer = try Self.chainRepository(in: work, count: 20_000)
        let build = try Harness.start(["build", layer, "--store", work + "/store", "--timeout", "20"])
        defer {
            kill(build.processIdentifier, SIGKILL)
            build.waitUntilExit()
        }
        // Whatever of layerctl runs under the build, other than the build itself, once it has
        // confined itself: the child that downloads (it refreshed the repository) and the one that
        // resolves, which has no network of the host's. A build of the old code never has one.
        var children: [pid_t: [String: String]] = [:]
        var resolver: pid_t?
        let deadline = Date(timeIntervalSinceNow: 15)
        while resolver == nil && Date() < deadline && build.isRunning {
            for (pid, fields) in Harness.confinedChildren(of: build.processIdentifier) {
                children[pid] = fields
                if Harness.link("/proc/\(pid)/ns/net") != Harness.link("/proc/self/ns/net") { resolver = pid }
            }
            usleep(20_000)
        }
        #expect(resolver != nil, "no confined child without the host's network ran layerctl while the build resolved")
        // What it resolves against is a copy of the store's database: through a hard link in the
        // session folder, which it may write, it could change the store's.
        let caches = try FileManager.default.contentsOfDirectory(atPath: work + "/store/cache/sync").filter { !$0.hasSuffix(".lock") }
        #expect(caches.count == 1, "\(caches)")
        for cache in caches {
            var st = stat()
            #expect(stat("\(work)/store/cache/sync/\(cache)/sync/chain.db", &st) == 0)
            #expect(st.st_nlink == 1, "the store's chain.db has \(st.st_nlink) links while the build resolves")
        }
        // Two children for the whole build, whatever its layers: the downloads', the resolutions'.
        #expect(children.count == 2, "\(children.keys)")
        for (pid, fields) in children {
            #expect(fields["CapEff"] == "0000000000000000", "\(fields)")
            #expect(fields["CapBnd"] == "0000000000000000", "\(fields)")
            #expect(fields["NoNewPrivs"] == "1", "\(fields)")
            // pid 1 of its own pid namespace, with mounts of its own (its /proc).
            #expect(fields["NSpid"]?.split(separator: "\t").last == "1", "\(fields)")
            for namespace in ["pid", "mnt"] {
                #expect(Harness.link("/proc/\(pid)/ns/\(namespace)") != Harness.link("/proc/self/ns/\(namespace)"), "\(namespace)")
            }
        }
    }

    /// The downloads' child fetches into a cache of the layer's own packages, and the parent
    /// links what was checked into the store's cache. A damaged copy there (a disk's fault, a
    /// copy by hand) is linked in, and libalpm fails the build on it and removes it, as pacman
    /// does: it must go from the store's cache too, or every build after would fail on it. The
    /// next build downloads it again, and the cache then holds the good one and nothing else.
    @Test("a damaged package in the store's cache fails one build and is removed; the next fetches it again, and the cache holds it alone")
    func damagedCachedPackage() throws {
        let work = try Harness.temporaryDirectory("damaged-cache")
        let layer = "from: scratch\narch: x86_64\nrepos:\n  - name: demo\n    servers: [\(Harness.demoOut)/repo/$repo]\n    siglevel: Never\npackages: [busybox]\n"
        try layer.write(toFile: work + "/probe.yaml", atomically: false, encoding: .utf8)
        let repo = Harness.demoOut + "/repo/demo"
        let packages = try FileManager.default.contentsOfDirectory(atPath: repo)
        guard let package = packages.first(where: { $0.hasPrefix("busybox-") && $0.hasSuffix(".pkg.tar.zst") }) else {
            Issue.record("no busybox package in \(repo)")
            return
        }
        let good = try Data(contentsOf: URL(fileURLWithPath: repo + "/" + package))
        let cache = work + "/store/cache/pkg"
        try FileManager.default.createDirectory(atPath: cache, withIntermediateDirectories: true)
        var damaged = good
        damaged[damaged.count / 2] ^= 0xFF
        try damaged.write(to: URL(fileURLWithPath: cache + "/" + package))
        let failed = try Harness.run(["build", work + "/probe.yaml", "--store", work + "/store"])
        #expect(failed.status == 5 && failed.stderr.contains("invalid or corrupted package (checksum)"), "\(failed.stderr)")
        #expect(!FileManager.default.fileExists(atPath: cache + "/" + package))
        let result = try Harness.run(["build", work + "/probe.yaml", "--store", work + "/store"])
        #expect(result.status == 0, "\(result.stderr)")
        #expect(FileManager.default.contents(atPath: cache + "/" + package) == good)
        let cached = try FileManager.default.contentsOfDirectory(atPath: cache).sorted()
        #expect(cached == [package], "\(cached)")
    }

    /// Runs the package work's child by hand, as pid 2 of new namespaces (under a shell that
    /// plays its parent), on a refresh of the demo repository from `server`, and returns its
    /// last event.
    private func refresh(work: String, server: String, readable: [String], writable: [String]) throws -> [String: Any] {
        let scratch = try Harness.temporaryDirectory("package-job")
        try FileManager.default.createDirectory(atPath: scratch + "/db/sync", withIntermediateDirectories: true)
        let job: [String: Any] = [
            "operation": "refresh", "layer": "probe", "root": scratch, "dbPath": scratch + "/db", "arch": "x86_64",
            "repositories": [["name": "demo", "servers": [server], "signatureLevel": 0]],
            "request": ["install": [String](), "remove": [String](), "sysupgrade": false, "needed": true, "ignore": [String]()],
            "force": true, "largestDownload": 128 << 20,
            "readable": readable, "writable": writable.map { $0 == "SCRATCH" ? scratch : $0 },
        ]
        try JSONSerialization.data(withJSONObject: job).write(to: URL(fileURLWithPath: scratch + "/job.json"))
        let script = #"LAYERCTL_NAMESPACED_WORK="packages 1 $1/job.json" "$2" 3>"$1/events"; echo status $?"#
        // Slave, not unshare's default private: a private copy of the host's mounts would hold a
        // disk another test unmounts (ConfinementTests.hostUnmountReachesTheBuild).
        let run = try KernelMount.run(
            "/usr/bin/unshare",
            [
                "--mount", "--propagation", "slave", "--pid", "--net", "--ipc", "--uts", "--fork",
                "/bin/sh", "-c", script, "sh", scratch, Harness.executable,
            ])
        let events = (try? String(contentsOfFile: scratch + "/events", encoding: .utf8)) ?? ""
        defer { try? FileManager.default.removeItem(atPath: scratch) }
        guard let last = events.split(separator: "\n").last, let data = last.data(using: .utf8),
            let event = try JSONSerialization.jsonObject(with: data) as? [String: Any]
        else {
            Issue.record("no event: \(run.output)")
            return [:]
        }
        return event
    }

    /// The child may write its job's folder; a hard link there to a stored layer's `desc` (root's,
    /// mode 0644) would let it change that layer, which later builds stand on: a uid 0 without
    /// capabilities may write it, and Landlock sees only the path.
    @Test("the local database a resolution reads holds copies of each package's desc and files, no link to a stored layer's file")
    func localDatabaseCopies() throws {
        let layers = try Harness.demoLayers()
        let store = try Harness.temporaryDirectory("store")
        #expect(try Harness.run(["build", layers + "/base.yaml", "--store", store]).status == 0)
        let stored = try Store(root: store)
        let tree = stored.tree(try #require(try stored.ref("base")))
        let resolver = PackageResolver(parents: [try FolderSource(tree)], arch: "x86_64", repositories: [], syncSnapshot: tree)
        let local = try Harness.temporaryDirectory("local")
        try resolver.assembleLocalDatabase(into: local)

        let database = tree + "/var/lib/pacman/local"
        let packages = try FileManager.default.contentsOfDirectory(atPath: database).filter { !$0.hasPrefix("ALPM") }.sorted()
        #expect(packages.count == 8 && packages.contains { $0.hasPrefix("perl-") }, "\(packages)")
        #expect(try FileManager.default.contentsOfDirectory(atPath: local).sorted() == (packages + ["ALPM_DB_VERSION"]).sorted())
        for package in packages {
            #expect(try FileManager.default.contentsOfDirectory(atPath: "\(local)/\(package)").sorted() == ["desc", "files"])
            for file in ["desc", "files"] {
                let copied = FileManager.default.contents(atPath: "\(local)/\(package)/\(file)")
                #expect(copied != nil && copied == FileManager.default.contents(atPath: "\(database)/\(package)/\(file)"))
            }
        }
        for path in try FileManager.default.subpathsOfDirectory(atPath: local) {
            var st = stat()
            #expect(lstat(local + "/" + path, &st) == 0)
            #expect((st.st_mode & S_IFMT) == S_IFDIR || st.st_nlink == 1, "\(path) has \(st.st_nlink) links")
        }
    }

    /// What the job does not name, the child cannot open: a repository's folder, a database that
    /// a symlink in a named folder leads to, and a folder to write the databases in.
    @Test("the package work reads only the system's files and what its job names, and writes only its job's folders")
    func packageWorkPaths() throws {
        let work = try Harness.temporaryDirectory("package-paths")
        let database = Harness.demoOut + "/repo/demo/demo.db"
        for folder in ["listed", "unlisted", "linked"] {
            try FileManager.default.createDirectory(atPath: "\(work)/\(folder)/demo", withIntermediateDirectories: true)
        }
        for folder in ["listed", "unlisted"] {
            try Data(contentsOf: URL(fileURLWithPath: database)).write(to: URL(fileURLWithPath: "\(work)/\(folder)/demo/demo.db"))
        }
        try FileManager.default.createSymbolicLink(atPath: "\(work)/linked/demo/demo.db", withDestinationPath: "\(work)/unlisted/demo/demo.db")
        let refreshed = try refresh(
            work: work, server: "file://\(work)/listed/$repo", readable: ["\(work)/listed/demo"], writable: ["SCRATCH"])
        #expect(refreshed["kind"] as? String == "finished", "\(refreshed)")

        for (server, readable, writable, says) in [
            ("unlisted", ["\(work)/listed/demo"], ["SCRATCH"], "Couldn't open file \(work)/unlisted/demo/demo.db"),
            ("linked", ["\(work)/linked/demo"], ["SCRATCH"], "Couldn't open file \(work)/linked/demo/demo.db"),
            ("listed", ["\(work)/listed/demo"], [String](), "could not create database"),
        ] {
            let event = try refresh(work: work, server: "file://\(work)/\(server)/$repo", readable: readable, writable: writable)
            #expect(event["kind"] as? String == "failed", "\(server) \(writable): \(event)")
            #expect((event["message"] as? String ?? "").contains(says), "\(event)")
        }
    }
}
