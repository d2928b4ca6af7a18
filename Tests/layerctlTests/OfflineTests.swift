import Foundation
import LayerBuilder
import LayerStore
import Testing

/// `build --offline` fetches nothing over the network: the databases are the store's copies, and a
/// package comes from the store's cache or a file:// server. (And an online build downloads no
/// package the cache holds.) Each repository here is served over
/// HTTP by a server that logs every request, and stays up while the offline builds run: what they
/// asked of it is the oracle.
@Suite("Offline builds", .serialized, .enabled(if: Harness.canBuild, Harness.cannotBuildReason))
struct OfflineTests {
    /// A repository folder served over HTTP, each request's path logged.
    final class Served {
        let helper: PythonHelper
        var log: String { helper.folder + "/requests" }

        init(_ folder: String) throws {
            helper = try PythonHelper("trickle-server.py", folderName: "offline-repo") {
                ["--port-file", $0 + "/port", "--files", folder, "--log", $0 + "/requests"]
            }
        }

        var server: String { "http://127.0.0.1:\(helper.port)/$repo" }

        /// The requests since the last call.
        func requests() throws -> [String] {
            let text = (try? String(contentsOfFile: log, encoding: .utf8)) ?? ""
            try Data().write(to: URL(fileURLWithPath: log))
            return text.split(separator: "\n").map(String.init)
        }
    }

    func writeLayer(
        _ path: String, server: String, siglevel: String?, packages: String, hostname: String? = nil
    ) throws {
        var text = "from: scratch\narch: x86_64\nrepos:\n  - name: demo\n    servers: [\"\(server)\"]\n"
        if let siglevel { text += "    siglevel: \(siglevel)\n" }
        text += "packages: [\(packages)]\n"
        if let hostname { text += "files:\n  - path: /etc/hostname\n    content: \"\(hostname)\\n\"\n" }
        try text.write(toFile: path, atomically: false, encoding: .utf8)
    }

    /// The demo's unsigned repository served, and `filesystem, busybox` built from it into a store
    /// of its own, online: the server, the store and the layer file.
    func builtOnline(_ name: String) throws -> (served: Served, store: String, layer: String) {
        let served = try Served(Harness.demoOut + "/repo/demo")
        let work = try Harness.temporaryDirectory(name)
        let store = work + "/store", layer = work + "/layer.yaml"
        try writeLayer(layer, server: served.server, siglevel: "Optional TrustAll", packages: "filesystem, busybox")
        let online = try Harness.run(["build", layer, "--store", store])
        #expect(online.status == 0, "\(online.stderr)")
        #expect(try served.requests().contains { $0.hasSuffix(".pkg.tar.zst") })
        return (served, store, layer)
    }

    func layerCount(_ store: String) throws -> Int {
        try FileManager.default.contentsOfDirectory(atPath: store + "/layers").count
    }

    /// libalpm fetches a cached package again when its repository checks package signatures
    /// (`Optional` does) and no `.sig` is cached: a repository of unsigned packages has none. Every
    /// offline build of such a repository over HTTP failed, its packages all cached, and one with a
    /// server up fetched them all again.
    @Test("--offline builds an unsigned repository's cached packages without a request to its server, and names the package the cache lacks")
    func unsignedRepository() throws {
        let (served, store, layer) = try builtOnline("offline-unsigned")
        defer { served.helper.stop() }

        // Another layer of the same packages: built offline from the cache.
        try writeLayer(layer, server: served.server, siglevel: "Optional TrustAll", packages: "filesystem, busybox", hostname: "offline")
        let offline = try Harness.run(["build", layer, "--store", store, "--offline"])
        #expect(offline.status == 0 && offline.stdout.contains("(1 built, 0 cached)"), "\(offline.stdout) \(offline.stderr)")
        #expect(try served.requests() == [])
        try Harness.expectValidStore(store)

        // A package the cache lacks, with its server up: one line at the repository, nothing asked.
        let layers = try layerCount(store)
        try writeLayer(layer, server: served.server, siglevel: "Optional TrustAll", packages: "filesystem, busybox, nano", hostname: "offline")
        let lacking = try Harness.run(["build", layer, "--store", store, "--offline"])
        #expect(lacking.status == 5, "\(lacking.stderr)")
        let labelled = lacking.labelled
        #expect(
            labelled == [
                "layerctl: \(layer):4:5: --offline downloads nothing, and the store's cache lacks package nano 7.2-1 of repository "
                    + "demo: build once without --offline"
            ], "\(lacking.stderr)")
        #expect(try served.requests() == [])
        #expect(try layerCount(store) == layers)

        // One package of the repository has a `.sig` in the cache, the others none: `Optional`
        // checks the one, and libalpm would fetch the others again to look for theirs.
        let signature = try FileManager.default.contentsOfDirectory(atPath: Harness.demoOut + "/signed/demo").first {
            $0.hasPrefix("busybox-") && $0.hasSuffix(".sig")
        }!
        try FileManager.default.copyItem(atPath: Harness.demoOut + "/signed/demo/" + signature, toPath: store + "/cache/pkg/" + signature)
        try writeLayer(layer, server: served.server, siglevel: "Optional TrustAll", packages: "filesystem, busybox", hostname: "mixed")
        let mixed = try Harness.run(["build", layer, "--store", store, "--offline"])
        #expect(mixed.status == 5, "\(mixed.stderr)")
        #expect(
            mixed.stderr.contains(
                "\(layer):4:5: --offline downloads nothing, and the store's cache lacks the signature (.sig) of package filesystem "
                    + "2024.11.21-1 of repository demo, whose repository's other packages have theirs: build once without --offline"),
            "\(mixed.stderr)")
        #expect(try served.requests() == [])
    }

    /// Online too, libalpm downloaded a cached package again when its repository checks package
    /// signatures and no `.sig` is cached: each rebuild of a layer from a repository of unsigned
    /// packages under `Optional` downloaded every package of it again.
    @Test("an online build takes a cached unsigned package from the cache, asking its server for the database alone")
    func onlineFromCache() throws {
        let (served, store, layer) = try builtOnline("online-cached")
        defer { served.helper.stop() }
        try writeLayer(layer, server: served.server, siglevel: "Optional TrustAll", packages: "filesystem, busybox", hostname: "again")
        let again = try Harness.run(["build", layer, "--store", store, "--json"])
        #expect(again.status == 0 && again.built == ["layer"], "\(again.stdout) \(again.stderr)")
        let asked = try served.requests()
        #expect(!asked.isEmpty && asked.allSatisfy { $0.contains("/demo.db") }, "\(asked)")
        let handle = try Store(root: store)
        let record = try handle.record(try #require(try handle.ref("layer")))
        #expect(record.added.map(\.name).sorted() == ["busybox", "filesystem"])
        #expect(try String(contentsOfFile: handle.tree(record.key) + "/etc/hostname", encoding: .utf8) == "again\n")
        try Harness.expectValidStore(store)
    }

    /// A repository with a file:// folder and a server over the network keeps the folder offline:
    /// a package found there is built from it, one it lacks (as the cache does) is the one line,
    /// where libalpm said it could not open the file.
    @Test("--offline with a file:// folder beside a server over the network builds from the folder, and names a package neither it nor the cache holds")
    func folderBesideServer() throws {
        let served = try Served(Harness.demoOut + "/repo/demo")
        defer { served.helper.stop() }
        let work = try Harness.temporaryDirectory("offline-folder")
        let store = work + "/store", layer = work + "/layer.yaml", mirror = work + "/mirror/demo"
        try FileManager.default.createDirectory(atPath: work + "/mirror", withIntermediateDirectories: true)
        try FileManager.default.copyItem(atPath: Harness.demoOut + "/repo/demo", toPath: mirror)
        for name in try FileManager.default.contentsOfDirectory(atPath: mirror) where name.hasPrefix("nano-") {
            try FileManager.default.removeItem(atPath: mirror + "/" + name)
        }
        func write(_ packages: String) throws {
            try "from: scratch\narch: x86_64\nrepos:\n  - name: demo\n    servers: [\"file://\(work)/mirror/$repo\", \"\(served.server)\"]\n    siglevel: Optional TrustAll\npackages: [\(packages)]\n"
                .write(toFile: layer, atomically: false, encoding: .utf8)
        }
        try write("filesystem, busybox")
        let online = try Harness.run(["build", layer, "--store", store])
        #expect(online.status == 0, "\(online.stderr)")

        try write("filesystem, busybox, greeter")
        let folder = try Harness.run(["build", layer, "--store", store, "--offline"])
        #expect(folder.status == 0 && folder.stdout.contains("(1 built, 0 cached)"), "\(folder.stdout) \(folder.stderr)")

        try write("filesystem, busybox, nano")
        let lacking = try Harness.run(["build", layer, "--store", store, "--offline"])
        #expect(lacking.status == 5, "\(lacking.stderr)")
        #expect(
            lacking.labelled == [
                "layerctl: \(layer):4:5: --offline downloads nothing, and the store's cache lacks package nano 7.2-1 of repository "
                    + "demo: build once without --offline"
            ], "\(lacking.stderr)")
        #expect(try served.requests() == [])
        try Harness.expectValidStore(store)
    }

    /// Under pacman's default level a package's `.sig` is fetched with it and cached: offline, both
    /// come from the cache. A `.sig` the cache lacks is written from the database, which holds each
    /// signature where repo-add found one beside its package (libalpm checks that one, and fetched
    /// the package again only to have a `.sig`); where the database holds none either, the
    /// package cannot be checked offline.
    @Test("--offline builds a signed repository's cached packages with their signatures, from the database where the cache lacks one, and names a signature neither holds")
    func signedRepository() throws {
        let work = try Harness.temporaryDirectory("offline-signed")
        let keyring = ["--keyring", Harness.demoOut + "/keyring"]
        let signature = "busybox-1.35.0-1-x86_64.pkg.tar.zst.sig"
        // The demo's signed repository, and one whose database holds no signature.
        let bare = try SignatureTests.repositoryOfSignatureFiles(in: work + "/bare")
        for (folder, databaseSigned) in [(Harness.demoOut + "/signed/demo", true), (bare, false)] {
            let served = try Served(folder)
            defer { served.helper.stop() }
            let store = work + "/store-\(databaseSigned)", layer = work + "/layer-\(databaseSigned).yaml"
            try writeLayer(layer, server: served.server, siglevel: nil, packages: "busybox")
            let online = try Harness.run(["build", layer, "--store", store] + keyring)
            #expect(online.status == 0, "\(online.stderr)")
            #expect(try served.requests().contains { $0.hasSuffix(".pkg.tar.zst.sig") })

            try writeLayer(layer, server: served.server, siglevel: nil, packages: "busybox", hostname: "offline")
            let offline = try Harness.run(["build", layer, "--store", store, "--offline"] + keyring)
            #expect(offline.status == 0 && offline.stdout.contains("(1 built, 0 cached)"), "\(offline.stdout) \(offline.stderr)")
            #expect(try served.requests() == [])

            try FileManager.default.removeItem(atPath: store + "/cache/pkg/" + signature)
            let layers = try layerCount(store)
            try writeLayer(layer, server: served.server, siglevel: nil, packages: "busybox", hostname: "unsigned")
            let lacking = try Harness.run(["build", layer, "--store", store, "--offline"] + keyring)
            #expect(try served.requests() == [])
            if databaseSigned {
                #expect(lacking.status == 0 && lacking.stdout.contains("(1 built, 0 cached)"), "\(lacking.stdout) \(lacking.stderr)")
                #expect(
                    FileManager.default.contents(atPath: store + "/cache/pkg/" + signature)
                        == FileManager.default.contents(atPath: folder + "/" + signature))
            } else {
                #expect(lacking.status == 5, "\(lacking.stderr)")
                #expect(
                    lacking.stderr.contains(
                        "\(layer):4:5: --offline downloads nothing, and the store's cache lacks the signature (.sig) of package busybox "
                            + "1.35.0-1 of repository demo, which its siglevel requires: build once without --offline"),
                    "\(lacking.stderr)")
                #expect(try layerCount(store) == layers)
            }
            try Harness.expectValidStore(store)
        }
    }

    /// A layer an older layerctl made (other builder rules) is built again at the next build. With
    /// --offline it is, from the cache; where the cache lacks its packages, the stored layer serves
    /// the build as it was made, with a warning, where the build used to fail.
    @Test("--offline builds a layer of other builder rules again from the cache, and where the cache lacks its packages uses the stored one, saying so")
    func otherRules() throws {
        let (served, store, layer) = try builtOnline("offline-rules")
        defer { served.helper.stop() }
        let handle = try Store(root: store)
        let key = try #require(try handle.ref("layer"))
        func makeOlder() throws {
            var record = try handle.record(key)
            record.rules = nil
            try record.encoded().write(to: URL(fileURLWithPath: handle.layerDirectory(key) + "/layer.json"))
        }
        let said = "made by another layerctl, under builder rules 1; this one's rules, \(BuilderRules.version), make some trees otherwise"

        try makeOlder()
        let rebuilt = try Harness.run(["build", layer, "--store", store, "--offline", "--json"])
        #expect(rebuilt.status == 0 && rebuilt.built == ["layer"], "\(rebuilt.stdout) \(rebuilt.stderr)")
        #expect(try handle.record(key).rules == BuilderRules.version)
        #expect(try served.requests() == [])

        try makeOlder()
        for name in try FileManager.default.contentsOfDirectory(atPath: store + "/cache/pkg") {
            try FileManager.default.removeItem(atPath: store + "/cache/pkg/" + name)
        }
        let kept = try Harness.run(["build", layer, "--store", store, "--offline"])
        #expect(kept.status == 0 && kept.stdout.contains("(0 built, 1 cached)"), "\(kept.stdout) \(kept.stderr)")
        #expect(
            kept.stderr.contains(
                "layer: warning: --offline, and the store's cache lacks package busybox 1.35.0-1 of repository demo (and 1 more): "
                    + "the stored layer serves this build as it was made (\(said)); build without --offline to make it anew"),
            "\(kept.stderr)")
        #expect(try handle.ref("layer") == key && handle.record(key).rules == nil)
        #expect(try served.requests() == [])

        // --no-cache asks for the layer anew: that still needs its packages.
        let anew = try Harness.run(["build", layer, "--store", store, "--offline", "--no-cache"])
        #expect(anew.status == 5, "\(anew.stderr)")
        #expect(anew.stderr.contains("--offline downloads nothing, and the store's cache lacks package busybox"), "\(anew.stderr)")
        #expect(try served.requests() == [])
        try Harness.expectValidStore(store)
    }
}
