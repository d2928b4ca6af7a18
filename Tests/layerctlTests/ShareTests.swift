import Crypto
import CLayerSupport
import Foundation
import Glibc
import LayerBuilder
import LayerEntries
import LayerShare
import LayerStore
import LayerSupport
@testable import RegistryClient
import Synchronization
import Testing

/// Push and pull through a real registry (Debian's docker-registry on loopback): nothing sent or
/// fetched twice, the same image bytes from either store, auth failures in one line, and a
/// registry's bad bytes refused with nothing stored.
@Suite(
    "Sharing through a registry", .serialized,
    .enabled(if: Harness.canBuild && RegistryServer.available, RegistryServer.unavailableReason))
struct ShareTests {
    /// The demo stack, built once for the suite.
    nonisolated(unsafe) static var demoStore: String?

    static func builtDemo() throws -> String {
        if let demoStore { return demoStore }
        let layers = try Harness.demoLayers()
        let store = try Harness.temporaryDirectory("share-store")
        let build = try Harness.run(["build", layers + "/gaming.yaml", "--store", store])
        guard build.status == 0 else { throw RegistryServerError("the demo build failed: \(build.stderr)") }
        demoStore = store
        return store
    }

    @Test("push, push again, pull into a new store, pull again: nothing twice, and both stores write the same image")
    func pushPull() throws {
        let store = try Self.builtDemo()
        let registry = try RegistryServer()
        defer { registry.stop() }
        let reference = "\(registry.host)/steve/gaming:v1"

        let first = try Harness.run(["push", "gaming", reference, "--store", store, "--json"])
        #expect(first.status == 0, "\(first.stderr)")
        let pushed = try JSONSerialization.jsonObject(with: Data(first.stdout.utf8)) as? [String: Any]
        let layers = try #require(pushed?["layers"] as? [[String: Any]])
        #expect(layers.map { $0["upload"] as? String } == ["uploaded", "uploaded", "uploaded"])
        #expect(layers.map { $0["name"] as? String } == ["base", "nvidia", "gaming"])
        let again = try Harness.run(["push", "gaming", reference, "--store", store, "--json"])
        #expect(again.status == 0, "\(again.stderr)")
        #expect(again.stdout.components(separatedBy: "\"present\"").count == 4, "\(again.stdout)")
        #expect(again.stdout.contains(pushed?["manifestDigest"] as? String ?? "?"), "the same stack, the same manifest")

        let other = try Harness.temporaryDirectory("share-pulled")
        let pull = try Harness.run(["pull", reference, "--store", other])
        #expect(pull.status == 0, "\(pull.stderr)")
        #expect(pull.stdout.contains("as gaming") && pull.stdout.contains("3 downloaded"), "\(pull.stdout)")
        // Each pulled tree is the built one (the scan of a pulled layer takes the digests the
        // unpack made of its files as it wrote them).
        let built = try Store(root: store)
        let pulled = try Store(root: other)
        let builtTrees = try built.chain(try #require(try built.ref("gaming"))).map { try built.record($0).treeDigest }
        let pulledTrees = try pulled.chain(try #require(try pulled.ref("gaming"))).map { try pulled.record($0).treeDigest }
        #expect(builtTrees == pulledTrees)
        let pullAgain = try Harness.run(["pull", reference, "--store", other])
        #expect(pullAgain.stdout.contains("0 downloaded"), "\(pullAgain.stdout)")
        try Harness.expectValidStore(other)

        // The stack pulled writes the image the stack built writes, byte for byte.
        let work = try Harness.temporaryDirectory("share-images")
        #expect(try Harness.run(["export", "gaming", "--store", store, "-o", work + "/built.sqfs"]).status == 0)
        #expect(try Harness.run(["export", "gaming", "--store", other, "-o", work + "/pulled.sqfs"]).status == 0)
        #expect(
            FileManager.default.contentsEqual(atPath: work + "/built.sqfs", andPath: work + "/pulled.sqfs"),
            "the pulled stack exports other bytes")

        // A pulled layer says where it came from.
        let inspect = try Harness.run(["inspect", "gaming", "--store", other])
        #expect(inspect.stdout.contains("pulled from: \(registry.host)/steve/gaming:v1@sha256:"), "\(inspect.stdout)")

        // Pulled into the store that built it: every layer is recognised, nothing downloaded,
        // and the ref of a layer built here is not taken over.
        let home = try Harness.run(["pull", reference, "--store", store])
        #expect(home.status == 3 && home.stderr.contains("the ref gaming holds a layer built here"), "\(home.stderr)")
        let named = try Harness.run(["pull", reference, "--store", store, "--name", "steve-gaming"])
        #expect(named.stdout.contains("0 downloaded"), "\(named.stdout) \(named.stderr)")
        let store1 = try Store(root: store)
        #expect(try store1.ref("steve-gaming") == store1.ref("gaming"))
        try store1.removeRef("steve-gaming")
    }

    @Test("a layer with a sparse file goes to a registry and comes back the same tree, its holes still holes")
    func sparseRoundTrip() throws {
        let layers = try Harness.demoLayers()
        // A tar carries holes as zeros: the pull makes them holes again.
        try """
            from: base
            run:
              - truncate -s 256M /var/disk.img && printf data | dd of=/var/disk.img bs=1 seek=100000000 conv=notrunc 2>/dev/null
            """.write(toFile: layers + "/disk.yaml", atomically: false, encoding: .utf8)
        let store = try Harness.temporaryDirectory("share-sparse")
        let build = try Harness.run(["build", layers + "/disk.yaml", "--store", store])
        try #require(build.status == 0, "\(build.stderr)")
        let registry = try RegistryServer()
        defer { registry.stop() }
        let reference = "\(registry.host)/steve/disk:v1"
        let push = try Harness.run(["push", "disk", reference, "--store", store])
        #expect(push.status == 0, "\(push.stderr)")
        let other = try Harness.temporaryDirectory("share-sparse-pulled")
        let pull = try Harness.run(["pull", reference, "--store", other])
        try #require(pull.status == 0, "\(pull.stderr)")
        let built = try Store(root: store)
        let pulled = try Store(root: other)
        let builtKey = try #require(try built.ref("disk"))
        let pulledKey = try #require(try pulled.ref("disk"))
        #expect(try built.record(builtKey).treeDigest == pulled.record(pulledKey).treeDigest)
        for tree in [built.tree(builtKey), pulled.tree(pulledKey)] {
            var st = stat()
            #expect(stat(tree + "/var/disk.img", &st) == 0 && st.st_size == 256 << 20)
            #expect(st.st_blocks * 512 <= 64 << 10, "\(tree): \(st.st_blocks * 512) bytes allocated")
        }
        let work = try Harness.temporaryDirectory("share-sparse-images")
        #expect(try Harness.run(["export", "disk", "--store", store, "-o", work + "/built.sqfs"]).status == 0)
        #expect(try Harness.run(["export", "disk", "--store", other, "-o", work + "/pulled.sqfs"]).status == 0)
        #expect(FileManager.default.contentsEqual(atPath: work + "/built.sqfs", andPath: work + "/pulled.sqfs"))
    }

    @Test("basic auth: no credentials or a wrong password is one line and exit 3, the password never shown; the right one works")
    func basicAuth() throws {
        let store = try Self.builtDemo()
        let registry = try RegistryServer(users: ["steve": "right horse battery"])
        defer { registry.stop() }
        let reference = "\(registry.host)/steve/base:v1"
        let work = try Harness.temporaryDirectory("share-auth")
        func authFile(_ password: String) throws -> String {
            let path = work + "/auth-\(password.count).json"
            let auth = Data("steve:\(password)".utf8).base64EncodedString()
            try #"{"auths":{"\#(registry.host)":{"auth":"\#(auth)"}}}"#.write(toFile: path, atomically: false, encoding: .utf8)
            return path
        }
        let none = try Harness.run(["push", "base", reference, "--store", store], environment: ["REGISTRY_AUTH_FILE": work + "/none.json"])
        #expect(none.status == 3, "\(none.stderr)")
        #expect(none.stderr.contains("asks for a user name and password"), "\(none.stderr)")

        let wrong = try Harness.run(["push", "base", reference, "--store", store], environment: ["REGISTRY_AUTH_FILE": try authFile("wrong")])
        #expect(wrong.status == 3, "\(wrong.stderr)")
        #expect(wrong.stderr.contains("refused user steve from"), "\(wrong.stderr)")
        #expect(wrong.stderr.split(separator: "\n").count == 1, "\(wrong.stderr)")
        #expect(!wrong.stderr.contains("wrong") && !wrong.stderr.contains(Data("steve:wrong".utf8).base64EncodedString()))

        let right = try authFile("right horse battery")
        let push = try Harness.run(["push", "base", reference, "--store", store], environment: ["REGISTRY_AUTH_FILE": right])
        #expect(push.status == 0, "\(push.stderr)")
        let other = try Harness.temporaryDirectory("share-auth-pulled")
        let pull = try Harness.run(["pull", reference, "--store", other], environment: ["REGISTRY_AUTH_FILE": right])
        #expect(pull.status == 0, "\(pull.stderr)")
        #expect(!push.stdout.contains("battery") && !push.stderr.contains("battery"))

        // `docker login` as alice, then `sudo layerctl push`: HOME is root's, which has no config;
        // alice's is found through SUDO_USER (in a mount namespace whose /etc/passwd knows her).
        let home = work + "/alice"
        try FileManager.default.createDirectory(atPath: home + "/.docker", withIntermediateDirectories: true)
        try FileManager.default.copyItem(atPath: right, toPath: home + "/.docker/config.json")
        let passwd = work + "/passwd"
        try (String(contentsOfFile: "/etc/passwd", encoding: .utf8) + "alice:x:4242:4242::\(home):/bin/sh\n")
            .write(toFile: passwd, atomically: false, encoding: .utf8)
        let sudo = try Harness.run(
            ["-m", "sh", "-c", "mount --bind \"$0\" /etc/passwd && exec \"$@\"", passwd, Harness.executable, "push", "base", reference, "--store", store],
            environment: ["HOME": work + "/root-home", "SUDO_USER": "alice"], tool: "/usr/bin/unshare")
        #expect(sudo.status == 0, "\(sudo.stderr)")
        #expect(!sudo.stderr.contains("asks for a user name and password"), "\(sudo.stderr)")
        // Root's own config, where there is one, is root's choice.
        try FileManager.default.createDirectory(atPath: work + "/root-home/.docker", withIntermediateDirectories: true)
        try #"{"auths":{}}"#.write(toFile: work + "/root-home/.docker/config.json", atomically: false, encoding: .utf8)
        let rootOwn = try Harness.run(
            ["-m", "sh", "-c", "mount --bind \"$0\" /etc/passwd && exec \"$@\"", passwd, Harness.executable, "push", "base", reference, "--store", store],
            environment: ["HOME": work + "/root-home", "SUDO_USER": "alice"], tool: "/usr/bin/unshare")
        #expect(rootOwn.status == 3 && rootOwn.stderr.contains("/root-home/.docker/config.json"), "\(rootOwn.stderr)")
    }

    /// A registry on object storage gives upload locations on another server. The push sent that
    /// server the user's password with each upload (basic auth, so in every request), as it sent
    /// the registry: libcurl keeps credentials from a redirect's host, but an upload location is
    /// no redirect.
    @Test("credentials go to the registry alone: an upload location on another server gets none, and the push completes; a presigned location's signature is never shown")
    func uploadElsewhere() throws {
        let store = try Self.builtDemo()
        /// A push of the demo's base to a new upload-elsewhere registry (`arguments` added), as
        /// its one user; the server, for its log, and what the push printed.
        func push(_ arguments: [String] = []) throws -> (PythonHelper, Harness.Result) {
            let server = try PythonHelper("upload-elsewhere-registry.py", folderName: "upload-elsewhere") {
                ["--port-file", $0 + "/port", "--storage-port-file", $0 + "/storage-port", "--log", $0 + "/log", "--user", "steve:right horse battery"]
                    + arguments
            }
            let auth = Data("steve:right horse battery".utf8).base64EncodedString()
            try #"{"auths":{"127.0.0.1:\#(server.port)":{"auth":"\#(auth)"}}}"#.write(
                toFile: server.folder + "/auth.json", atomically: false, encoding: .utf8)
            let pushed = try Harness.run(
                ["push", "base", "127.0.0.1:\(server.port)/steve/base:v1", "--store", store],
                environment: ["REGISTRY_AUTH_FILE": server.folder + "/auth.json"])
            return (server, pushed)
        }
        let (server, pushed) = try push()
        defer { server.stop() }
        #expect(pushed.status == 0, "\(pushed.stderr)")
        struct Request: Decodable {
            var server: String
            var method: String
            var path: String
            var authorization: Bool
        }
        let requests = try String(contentsOfFile: server.folder + "/log", encoding: .utf8).split(separator: "\n")
            .map { try JSONDecoder().decode(Request.self, from: Data($0.utf8)) }
        let stored = requests.filter { $0.server == "storage" }
        #expect(stored.contains { $0.method == "PUT" }, "no upload reached the storage server: \(requests)")
        #expect(stored.allSatisfy { !$0.authorization }, "credentials went to the storage server: \(stored)")
        #expect(requests.contains { $0.server == "registry" && $0.method == "PUT" && $0.authorization }, "\(requests)")
        // The same server, however its URL is spelled; another port or scheme is another server.
        #expect(RegistryClient.origin("https://Registry.Example.com:443/v2/x/blobs/uploads/1") == RegistryClient.origin("https://registry.example.com"))
        #expect(RegistryClient.origin("http://127.0.0.1:80/v2/") == RegistryClient.origin("http://127.0.0.1"))
        #expect(RegistryClient.origin("http://127.0.0.1:5001/v2/") != RegistryClient.origin("http://127.0.0.1:5000"))
        #expect(RegistryClient.origin("http://registry.example.com/v2/") != RegistryClient.origin("https://registry.example.com"))
        #expect(RegistryClient.origin("/v2/relative") == nil)

        // A presigned location's signature is a credential too: a failure names the location
        // without its query. (The storage server speaks no TLS, so the upload fails.)
        let (presigned, failed) = try push(["--presigned"])
        defer { presigned.stop() }
        #expect(failed.status == 8, "\(failed.stderr)")
        #expect(failed.stderr.contains("PUT https://127.0.0.1:") && failed.stderr.contains("/uploads/"), "\(failed.stderr)")
        #expect(failed.stderr.contains("?… failed"), "\(failed.stderr)")
        #expect(!failed.stderr.contains("5ecre7516a7ure"), "\(failed.stderr)")
    }

    @Test("bytes that do not match their digest, a manifest naming a missing blob, a hostile layer: refused, nothing stored")
    func faults() throws {
        let store = try Self.builtDemo()
        let registry = try RegistryServer()
        defer { registry.stop() }
        let reference = "\(registry.host)/steve/nvidia:v1"
        let push = try Harness.run(["push", "nvidia", reference, "--store", store, "--json"])
        #expect(push.status == 0, "\(push.stderr)")
        let pushed = try JSONSerialization.jsonObject(with: Data(push.stdout.utf8)) as? [String: Any]
        let digests = try #require((pushed?["layers"] as? [[String: Any]])?.compactMap { $0["digest"] as? String })

        // The registry's copy of the top blob is altered: one byte flipped, same size.
        let data = registry.blobPath(digests[1]) + "/data"
        var bytes = try Data(contentsOf: URL(fileURLWithPath: data))
        bytes[bytes.count / 2] ^= 0xFF
        try bytes.write(to: URL(fileURLWithPath: data))
        let other = try Harness.temporaryDirectory("share-faults")
        let bad = try Harness.run(["pull", reference, "--store", other])
        #expect(bad.status == 3, "\(bad.stderr)")
        #expect(bad.stderr.contains("blob \(digests[1]): the bytes sent have digest sha256:"), "\(bad.stderr)")
        // The root layer came whole; of the bad one nothing is stored, and no ref.
        #expect(try Store(root: other).keys().count == 1)
        #expect(try FileManager.default.contentsOfDirectory(atPath: other + "/refs").isEmpty)
        #expect(try FileManager.default.contentsOfDirectory(atPath: other + "/tmp").isEmpty)

        // The blob is gone: the manifest names what the registry lacks.
        try FileManager.default.removeItem(atPath: registry.blobPath(digests[1]))
        let missing = try Harness.run(["pull", reference, "--store", other])
        #expect(missing.status == 3, "\(missing.stderr)")
        #expect(missing.stderr.contains("the registry does not have it"), "\(missing.stderr)")
        #expect(try Store(root: other).keys().count == 1)

        // A hostile layer, pushed by hand: refused with the entry's name, nothing of it stored.
        let work = try Harness.temporaryDirectory("share-hostile")
        try OCILayerTests.craft(
            [OCILayerTests.Crafted(name: "link", type: Glibc.S_IFLNK, symlink: "/tmp"), OCILayerTests.Crafted(name: "link/owned")],
            at: work + "/layer.tar")
        let hostile = try ImageReference(parsing: "\(registry.host)/steve/hostile:v1")
        try Self.pushImage(layers: [work + "/layer.tar"], to: hostile)
        let refused = try Harness.run(["pull", hostile.description, "--store", other])
        #expect(refused.status == 3, "\(refused.stderr)")
        #expect(refused.stderr.contains("hostile entry") && refused.stderr.contains("link/owned"), "\(refused.stderr)")
        #expect(try Store(root: other).keys().count == 1)
        #expect(try FileManager.default.contentsOfDirectory(atPath: other + "/tmp").isEmpty)
        #expect(!FileManager.default.fileExists(atPath: "/tmp/owned"))
    }

    /// A tar need not hold its folders, or `./`: those it only implies were made under the umask of
    /// whoever pulled, 0700 under 0077, so one blob gave two machines two trees.
    @Test("a pulled tar's root and the folders it only implies are 0755 whatever the puller's umask: one blob, one tree")
    func impliedFolders() throws {
        let registry = try RegistryServer()
        defer { registry.stop() }
        let work = try Harness.temporaryDirectory("share-implied")
        try OCILayerTests.craft([OCILayerTests.Crafted(name: "opt/deep/file")], at: work + "/layer.tar")
        let reference = try ImageReference(parsing: "\(registry.host)/steve/implied:v1")
        try Self.pushImage(layers: [work + "/layer.tar"], to: reference)
        var trees: [String] = []
        for mask in ["022", "077"] {
            let store = try Harness.temporaryDirectory("share-implied-store")
            let pulled = try Harness.run(
                ["-c", "umask \(mask); exec \"$0\" \"$@\"", Harness.executable, "pull", reference.description, "--name", "implied", "--store", store],
                tool: "/bin/sh")
            #expect(pulled.status == 0, "\(pulled.stderr)")
            let key = try #require(try Store(root: store).ref("implied"))
            let tree = try Store(root: store).tree(key)
            for folder in ["", "/opt", "/opt/deep"] {
                var st = stat()
                let mode = lstat(tree + folder, &st) == 0 ? st.st_mode & 0o7777 : 0
                #expect(mode == 0o755, "umask \(mask): \(folder.isEmpty ? "/" : folder) is \(String(mode, radix: 8))")
            }
            trees.append(try Store(root: store).record(key).treeDigest)
        }
        #expect(trees[0] == trees[1])
    }

    /// Pushes an image of tar layers, uncompressed or zstd, as another tool would, through the
    /// client.
    /// `claimedDiffIDs`, when given, are the config's diff_ids instead of the blobs' own (for a
    /// blob that does not decompress).
    /// `created`, when given, is the config's time (the epoch a pull records for the image).
    static func pushImage(
        layers: [String], to reference: ImageReference, claimedDiffIDs: [String]? = nil, created: String? = nil
    ) throws {
        let client = try RegistryClient(reference, options: RegistryOptions())
        var descriptors: [String] = []
        var diffIDs: [String] = []
        for layer in layers {
            let data = try Data(contentsOf: URL(fileURLWithPath: layer))
            let digest = "sha256:" + Hash256(SHA256.hash(data: data)).hex
            let zstd = data.prefix(4) == Data([0x28, 0xB5, 0x2F, 0xFD])
            try client.uploadBlob(reference.repository, file: layer, digest: digest, size: Int64(data.count))
            let mediaType = "application/vnd.oci.image.layer.v1.tar" + (zstd ? "+zstd" : "")
            descriptors.append(#"{"mediaType":"\#(mediaType)","digest":"\#(digest)","size":\#(data.count)}"#)
            let diffID = try claimedDiffIDs?[diffIDs.count] ?? (zstd ? try OCILayerReader(blob: layer).diffID() : digest)
            diffIDs.append(#""\#(diffID)""#)
        }
        let config = Data(
            #"{"architecture":"amd64","os":"linux",\#(created.map { #""created":"\#($0)","# } ?? "")"rootfs":{"type":"layers","diff_ids":[\#(diffIDs.joined(separator: ","))]}}"#.utf8)
        let configPath = try Harness.temporaryDirectory("share-config") + "/config.json"
        try config.write(to: URL(fileURLWithPath: configPath))
        let configDigest = "sha256:" + Hash256(SHA256.hash(data: config)).hex
        try client.uploadBlob(reference.repository, file: configPath, digest: configDigest, size: Int64(config.count))
        let manifest = Data(
            #"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"\#(configDigest)","size":\#(config.count)},"layers":[\#(descriptors.joined(separator: ","))]}"#.utf8)
        try client.putManifest(reference.repository, reference.tag ?? "latest", data: manifest, mediaType: "application/vnd.oci.image.manifest.v1+json")
    }
}

extension ShareTests {
    /// A `from:` image is resolved at its registry at each build: --offline said it "needs the
    /// registry". It takes the image as the store's last pull of that reference left it.
    @Test("build --offline on an image takes it as the store last pulled it, by its tag or its digest, with the registry gone; one never pulled is one line at from:; gc removes the notes with the image")
    func offlineOnImage() throws {
        let store = try Self.builtDemo()
        let registry = try RegistryServer()
        defer { registry.stop() }
        let image = "\(registry.host)/steve/gaming:v1"
        #expect(try Harness.run(["push", "gaming", image, "--store", store]).status == 0)
        let work = try Harness.temporaryDirectory("offline-image")
        let other = work + "/store", layer = work + "/child.yaml"
        func write(from reference: String, motd: String) throws {
            try "from: \(reference)\nfiles:\n  - path: /etc/motd\n    content: \"\(motd)\\n\"\n"
                .write(toFile: layer, atomically: false, encoding: .utf8)
        }
        try write(from: image, motd: "online")
        let online = try Harness.run(["build", layer, "--store", other])
        #expect(online.status == 0, "\(online.stderr)")
        let handle = try Store(root: other)
        let built = try #require(try handle.ref("child"))
        let top = try #require(try handle.record(built).parent)
        registry.stop()

        try write(from: image, motd: "offline")
        let offline = try Harness.run(["build", layer, "--store", other, "--offline", "--json"])
        #expect(offline.status == 0 && offline.built == ["child"], "\(offline.stdout) \(offline.stderr)")
        let rebuilt = try #require(try handle.ref("child"))
        let record = try handle.record(rebuilt)
        #expect(record.parent == top && rebuilt != built)
        #expect(try String(contentsOfFile: handle.tree(record.key) + "/etc/motd", encoding: .utf8) == "offline\n")

        // The image by its digest, alone or beside the tag, though only the tag was pulled.
        let digest = try #require(handle.pulledImage(image)).manifestDigest
        for reference in ["\(registry.host)/steve/gaming@\(digest)", "\(image)@\(digest)"] {
            try write(from: reference, motd: reference)
            let byDigest = try Harness.run(["build", layer, "--store", other, "--offline", "--json"])
            #expect(byDigest.status == 0 && byDigest.built == ["child"], "\(byDigest.stdout) \(byDigest.stderr)")
            #expect(try handle.record(try #require(try handle.ref("child"))).parent == top)
        }

        let other2 = "\(registry.host)/steve/gaming:v2"
        try write(from: other2, motd: "offline")
        let never = try Harness.run(["build", layer, "--store", other, "--offline"])
        #expect(never.status == 3, "\(never.stderr)")
        #expect(
            never.labelled == [
                "layerctl: \(layer):1:7: \(other2) was not pulled into this store (or gc removed its layers), and --offline fetches "
                    + "nothing: build once without --offline, or `layerctl pull \(other2)`"
            ], "\(never.stderr)")
        try Harness.expectValidStore(other)
        // gc keeps the notes of the image while a layer stands on it, and removes them with it.
        #expect(try Harness.run(["gc", "--store", other]).status == 0)
        #expect(try FileManager.default.contentsOfDirectory(atPath: handle.pulledImagesDirectory).count == 2)
        #expect(try Harness.run(["rm", "child", "--store", other]).status == 0)
        #expect(try Harness.run(["gc", "--store", other]).status == 0)
        #expect(try FileManager.default.contentsOfDirectory(atPath: handle.pulledImagesDirectory) == [])
    }

    /// A timer's pull, a user's and a build on the image may meet in one store: each layer's build
    /// lock lets one of them store it, and the others take it.
    @Test("two pulls of one image into one store, a build on it and a gc, all at once: each completes, each layer is stored once")
    func pullsAtOnce() throws {
        let store = try Self.builtDemo()
        let registry = try RegistryServer()
        defer { registry.stop() }
        #expect(try Harness.run(["push", "gaming", "\(registry.host)/steve/gaming:v1", "--store", store]).status == 0)
        // Slow enough that the downloads overlap.
        let slow = try RegistryProxy(upstream: registry.host, rate: 8 << 20)
        defer { slow.stop() }
        let reference = "\(slow.host)/steve/gaming:v1"
        let work = try Harness.temporaryDirectory("share-at-once")
        let other = work + "/store"
        try "from: \(reference)\nfiles:\n  - path: /etc/motd\n    content: \"on the image\\n\"\n"
            .write(toFile: work + "/child.yaml", atomically: false, encoding: .utf8)
        let commands: [[String]] = [
            ["pull", reference, "--store", other, "--name", "one"],
            ["pull", reference, "--store", other, "--name", "two"],
            ["build", work + "/child.yaml", "--store", other],
            ["gc", "--store", other],
        ]
        let results = Mutex<[Int: (result: Harness.Result?, started: Date, ended: Date)]>([:])
        DispatchQueue.concurrentPerform(iterations: commands.count) { index in
            // The gc comes once the others are under way.
            if commands[index][0] == "gc" { usleep(300_000) }
            let started = Date()
            let result = try? Harness.run(commands[index])
            results.withLock { $0[index] = (result, started, Date()) }
        }
        let ran = results.withLock { $0 }
        for (index, command) in commands.enumerated() {
            let result = try #require(ran[index]?.result)
            #expect(result.status == 0, "\(command.joined(separator: " ")): \(result.stderr)")
        }
        // They did meet: each pull began before the other ended.
        let (first, second) = (try #require(ran[0]), try #require(ran[1]))
        #expect(first.started < second.ended && second.started < first.ended)
        try Harness.expectValidStore(other)
        let pulled = try Store(root: other)
        let one = try #require(try pulled.ref("one")), two = try #require(try pulled.ref("two"))
        #expect(one == two)
        let child = try #require(try pulled.ref("child"))
        #expect(try pulled.record(child).parent == one)
        // The stack's three layers and the child, once each; no scratch folder left.
        #expect(try pulled.keys().count == 4)
        #expect(try FileManager.default.contentsOfDirectory(atPath: other + "/tmp").isEmpty)
        #expect(try Harness.run(["export", "gaming", "--store", store, "-o", work + "/built.sqfs"]).status == 0)
        #expect(try Harness.run(["export", "one", "--store", other, "-o", work + "/pulled.sqfs"]).status == 0)
        #expect(FileManager.default.contentsEqual(atPath: work + "/built.sqfs", andPath: work + "/pulled.sqfs"))
    }

    @Test("skopeo and umoci read what push wrote; an image umoci made and skopeo pushed pulls to the tree umoci unpacks")
    func interop() throws {
        let store = try Self.builtDemo()
        let registry = try RegistryServer()
        defer { registry.stop() }
        let work = try Harness.temporaryDirectory("share-interop")
        // layerctl → registry → skopeo → umoci (0.4 reads gzip layers only).
        let push = try Harness.run(["push", "gaming", "\(registry.host)/steve/gaming:gz", "--compression", "gzip", "--store", store])
        #expect(push.status == 0, "\(push.stderr)")
        let copy = try KernelMount.run(
            "/usr/bin/skopeo", ["copy", "--src-tls-verify=false", "docker://\(registry.host)/steve/gaming:gz", "oci:\(work)/copy:gaming"])
        #expect(copy.status == 0, "\(copy.output)")
        let unpack = try KernelMount.run("/usr/bin/umoci", ["unpack", "--image", "\(work)/copy:gaming", "\(work)/bundle"])
        #expect(unpack.status == 0, "\(unpack.output)")
        #expect(try Harness.run(["export", "gaming", "--store", store, "-o", work + "/dir", "--format", "dir"]).status == 0)
        #expect(try TreeScan.scan(work + "/bundle/rootfs").digest == TreeScan.scan(work + "/dir").digest)

        // umoci → skopeo → registry → layerctl: a small root of files, a link, a folder a second
        // layer removes.
        let image = "\(work)/foreign:t"
        for arguments in [["init", "--layout", "\(work)/foreign"], ["new", "--image", image], ["unpack", "--image", image, "\(work)/made"]] {
            let step = try KernelMount.run("/usr/bin/umoci", arguments)
            #expect(step.status == 0, "\(step.output)")
        }
        let rootfs = work + "/made/rootfs"
        try FileManager.default.createDirectory(atPath: rootfs + "/bin", withIntermediateDirectories: true)
        try FileManager.default.createDirectory(atPath: rootfs + "/var/old", withIntermediateDirectories: true)
        try FileManager.default.copyItem(atPath: "/bin/busybox", toPath: rootfs + "/bin/busybox")
        try FileManager.default.createSymbolicLink(atPath: rootfs + "/bin/sh", withDestinationPath: "busybox")
        try "hello\n".write(toFile: rootfs + "/var/old/note", atomically: false, encoding: .utf8)
        #expect(try KernelMount.run("/usr/bin/umoci", ["repack", "--image", image, "\(work)/made"]).status == 0)
        #expect(try KernelMount.run("/usr/bin/umoci", ["unpack", "--image", image, "\(work)/second"]).status == 0)
        try FileManager.default.removeItem(atPath: work + "/second/rootfs/var/old")
        try "hi\n".write(toFile: work + "/second/rootfs/motd", atomically: false, encoding: .utf8)
        #expect(try KernelMount.run("/usr/bin/umoci", ["repack", "--image", image, "\(work)/second"]).status == 0)
        let upload = try KernelMount.run(
            "/usr/bin/skopeo", ["copy", "--dest-tls-verify=false", "oci:\(image)", "docker://\(registry.host)/other/tiny:1"])
        #expect(upload.status == 0, "\(upload.output)")
        let other = try Harness.temporaryDirectory("share-foreign")
        let pull = try Harness.run(["pull", "\(registry.host)/other/tiny:1", "--store", other])
        #expect(pull.status == 0 && pull.stdout.contains("2 layers"), "\(pull.stdout) \(pull.stderr)")
        #expect(try Harness.run(["export", "tiny", "--store", other, "-o", work + "/tiny", "--format", "dir"]).status == 0)
        let fresh = try KernelMount.run("/usr/bin/umoci", ["unpack", "--image", image, "\(work)/fresh"])
        #expect(fresh.status == 0, "\(fresh.output)")
        #expect(!FileManager.default.fileExists(atPath: work + "/tiny/var/old"), "the second layer's whiteout hides it")
        #expect(try TreeScan.scan(work + "/fresh/rootfs").digest == TreeScan.scan(work + "/tiny").digest)

        // And built upon: a layer with no packages, a file and a command run by the image's shell.
        try """
            from: \(registry.host)/other/tiny:1
            files:
              - path: /etc/motd
                content: "built on a foreign image\\n"
            run:
              - busybox wc -c /etc/motd > /etc/motd.size
            """.write(toFile: work + "/on-tiny.yaml", atomically: false, encoding: .utf8)
        let build = try Harness.run(["build", work + "/on-tiny.yaml", "--store", other])
        #expect(build.status == 0, "\(build.stderr)")
        let top = try Store(root: other).tree(try #require(try Store(root: other).ref("on-tiny")))
        #expect(try String(contentsOfFile: top + "/etc/motd.size", encoding: .utf8) == "25 /etc/motd\n")
    }
}

extension ShareTests {
    @Test("a 500 then success: a push and a pull say they try again, and complete")
    func retries() throws {
        let store = try Self.builtDemo()
        let registry = try RegistryServer()
        defer { registry.stop() }
        let proxy = try RegistryProxy(upstream: registry.host, fail: 2)
        defer { proxy.stop() }
        let reference = "\(proxy.host)/steve/base:v1"
        let push = try Harness.run(["push", "base", reference, "--store", store])
        #expect(push.status == 0, "\(push.stderr)")
        #expect(push.stderr.contains("the registry answered 500; trying again"), "\(push.stderr)")
        #expect(try proxy.stats().failed == 2)
        let pullProxy = try RegistryProxy(upstream: registry.host, fail: 2)
        defer { pullProxy.stop() }
        let other = try Harness.temporaryDirectory("share-retries")
        let pull = try Harness.run(["pull", "\(pullProxy.host)/steve/base:v1", "--store", other])
        #expect(pull.status == 0, "\(pull.stderr)")
        #expect(pull.stderr.contains("trying again") && pull.stdout.contains("1 downloaded"), "\(pull.stdout) \(pull.stderr)")
        #expect(try pullProxy.stats().failed == 2)
    }

    @Test("the registry dies during a push and during a pull: one error, nothing half-stored, and the next call completes")
    func killed() throws {
        let store = try Self.builtDemo()
        let registry = try RegistryServer()
        defer { registry.stop() }
        let work = try Harness.temporaryDirectory("share-killed")

        /// Runs layerctl with `arguments`, kills the proxy once `moved` says enough bytes went
        /// through it, and returns the exit status and stderr.
        func interrupted(_ arguments: [String], proxy: RegistryProxy, moved: (RegistryProxy.Stats) -> Int64) throws -> (Int32, String) {
            let process = Harness.process(arguments)
            let errors = work + "/stderr-\(arguments[0])"
            _ = FileManager.default.createFile(atPath: errors, contents: nil)
            process.standardError = FileHandle(forWritingAtPath: errors)
            process.standardOutput = FileHandle(forWritingAtPath: "/dev/null")
            try process.run()
            var waited = 0
            while process.isRunning, (try? moved(proxy.stats())) ?? 0 < 1 << 20, waited < 600 {
                usleep(50_000)
                waited += 1
            }
            #expect(process.isRunning, "the transfer ended before the registry could be killed")
            proxy.stop()
            process.waitUntilExit()
            return (process.terminationStatus, try String(contentsOfFile: errors, encoding: .utf8))
        }

        // A push cut in its first upload: it fails; the next push completes.
        let port = try RegistryServer.freePort()
        let slowPush = try RegistryProxy(upstream: registry.host, rate: 2 << 20, port: port)
        let reference = "127.0.0.1:\(port)/steve/gaming:v1"
        let (pushStatus, pushErrors) = try interrupted(["push", "gaming", reference, "--store", store], proxy: slowPush) { $0.bytesUp }
        #expect(pushStatus == 8, "\(pushErrors)")
        #expect(pushErrors.contains("failed after 5 attempts"), "\(pushErrors)")
        let proxy = try RegistryProxy(upstream: registry.host, port: port)
        defer { proxy.stop() }
        let push = try Harness.run(["push", "gaming", reference, "--store", store])
        #expect(push.status == 0, "\(push.stderr)")

        // A pull cut in its first download: no layer, ref or scratch is left; the next pull completes.
        let other = try Harness.temporaryDirectory("share-killed-store")
        proxy.stop()
        let slowPull = try RegistryProxy(upstream: registry.host, rate: 2 << 20, port: port)
        let (pullStatus, pullErrors) = try interrupted(["pull", reference, "--store", other], proxy: slowPull) { $0.bytesDown }
        #expect(pullStatus == 8, "\(pullErrors)")
        #expect(try Store(root: other).keys().isEmpty)
        #expect(try FileManager.default.contentsOfDirectory(atPath: other + "/refs").isEmpty)
        #expect(try FileManager.default.contentsOfDirectory(atPath: other + "/tmp").isEmpty)
        let again = try RegistryProxy(upstream: registry.host, port: port)
        defer { again.stop() }
        let pull = try Harness.run(["pull", reference, "--store", other])
        #expect(pull.status == 0, "\(pull.stderr)")
        try Harness.expectValidStore(other)
        #expect(try Harness.run(["export", "gaming", "--store", store, "-o", work + "/built.sqfs"]).status == 0)
        #expect(try Harness.run(["export", "gaming", "--store", other, "-o", work + "/pulled.sqfs"]).status == 0)
        #expect(FileManager.default.contentsEqual(atPath: work + "/built.sqfs", andPath: work + "/pulled.sqfs"))
    }
}

extension ShareTests {
    @Test("from: an image: pulled and built upon, its digest in the key; a moved tag builds anew; export and build take a reference")
    func fromImage() throws {
        let store = try Self.builtDemo()
        let registry = try RegistryServer()
        defer { registry.stop() }
        let reference = "\(registry.host)/steve/gaming:v1"
        #expect(try Harness.run(["push", "gaming", reference, "--store", store]).status == 0)
        let folder = try Harness.temporaryDirectory("share-from")
        let layerFile = folder + "/extra.yaml"
        try """
            from: \(reference)
            repos:
              - name: demo
                servers: [\(Harness.demoOut)/repo/$repo]
                siglevel: Optional TrustAll
            packages: [demo-app]
            run:
              - echo "on $(cat /etc/hostname)" > /etc/extra
            """.write(toFile: layerFile, atomically: false, encoding: .utf8)
        let other = try Harness.temporaryDirectory("share-from-store")
        let build = try Harness.run(["build", layerFile, "--store", other, "-o", folder + "/extra.sqfs"])
        #expect(build.status == 0, "\(build.stderr)")
        let inspect = try Harness.run(["inspect", "extra", "--store", other])
        #expect(inspect.stdout.contains("from image: \(reference)@sha256:"), "\(inspect.stdout)")
        #expect(inspect.stdout.contains("+ demo-app 1.0-1"), "\(inspect.stdout)")
        let first = try #require(try Store(root: other).ref("extra"))
        let tree = try Store(root: other).tree(first)
        #expect(try String(contentsOfFile: tree + "/etc/extra", encoding: .utf8) == "on gaming\n")
        let again = try Harness.run(["build", layerFile, "--store", other])
        #expect(again.stdout.contains("(0 built, 1 cached)"), "\(again.stdout)")

        // The tag moves to another image: the layer on it is built anew, under another key; the
        // layer built on the old image stays as it was.
        #expect(try Harness.run(["push", "nvidia", reference, "--store", store]).status == 0)
        let moved = try Harness.run(["build", layerFile, "--store", other])
        #expect(moved.status == 0 && moved.stdout.contains("(1 built, 0 cached)"), "\(moved.stdout) \(moved.stderr)")
        let second = try #require(try Store(root: other).ref("extra"))
        #expect(second != first)
        #expect(try String(contentsOfFile: Store(root: other).tree(second) + "/etc/extra", encoding: .utf8) == "on demo\n")
        #expect(try String(contentsOfFile: tree + "/etc/extra", encoding: .utf8) == "on gaming\n")

        // A reference where a layer name goes: pulled, then exported; build REF pulls.
        let fresh = try Harness.temporaryDirectory("share-from-fresh")
        let export = try Harness.run(["export", reference, "--store", fresh, "-o", folder + "/nvidia.sqfs"])
        #expect(export.status == 0, "\(export.stderr)")
        #expect(try Harness.run(["export", "nvidia", "--store", store, "-o", folder + "/built.sqfs"]).status == 0)
        #expect(FileManager.default.contentsEqual(atPath: folder + "/nvidia.sqfs", andPath: folder + "/built.sqfs"))
        let pulled = try Harness.run(["build", reference, "--store", fresh])
        #expect(pulled.status == 0 && pulled.stdout.contains("0 downloaded"), "\(pulled.stdout) \(pulled.stderr)")

        // A reference that is none: one line at its place in the layer file.
        try "from: \(registry.host)/Steve/Gaming\n".write(toFile: folder + "/bad.yaml", atomically: false, encoding: .utf8)
        let bad = try Harness.run(["build", folder + "/bad.yaml", "--store", other])
        #expect(bad.status == 3, "\(bad.stderr)")
        #expect(bad.stderr.hasPrefix("layerctl: \(folder)/bad.yaml:1:7: "), "\(bad.stderr)")
        #expect(bad.stderr.contains("repository components are lowercase"), "\(bad.stderr)")
        // A registry that is not there: one line at the `from:`, after the retries.
        try "from: 127.0.0.1:\(try RegistryServer.freePort())/steve/none:v1\n".write(toFile: folder + "/gone.yaml", atomically: false, encoding: .utf8)
        let gone = try Harness.run(["build", folder + "/gone.yaml", "--store", other])
        #expect(gone.status == 8, "\(gone.stderr)")
        #expect(gone.stderr.split(separator: "\n").last?.hasPrefix("layerctl: \(folder)/gone.yaml:1:7: ") == true, "\(gone.stderr)")
    }
}

extension ShareTests {
    @Test("a registry as the build cache: the second store builds nothing, and both write the same image bytes")
    func sharedCache() throws {
        let registry = try RegistryServer()
        defer { registry.stop() }
        let cache = "\(registry.host)/builds/cache"
        let layers = try Harness.demoLayers()
        let first = try Harness.temporaryDirectory("share-cache-a")
        let build = try Harness.run(["build", layers + "/gaming.yaml", "--store", first, "--cache-to", cache])
        #expect(build.status == 0 && build.stdout.contains("(3 built, 0 cached)"), "\(build.stdout) \(build.stderr)")
        #expect(!build.stdout.contains("warning") && !build.stderr.contains("warning"), "\(build.stderr)")
        let firstStore = try Store(root: first)
        for name in ["base", "nvidia", "gaming"] {
            let key = try #require(try firstStore.ref(name))
            #expect(FileManager.default.fileExists(atPath: "\(registry.storage)/repositories/builds/cache/_manifests/tags/layer-\(key)"), "\(name)")
        }

        let second = try Harness.temporaryDirectory("share-cache-b")
        let reuse = try Harness.run(["build", layers + "/gaming.yaml", "--store", second, "--cache-from", cache, "-o", second + "/gaming.sqfs"])
        #expect(reuse.status == 0 && reuse.stdout.contains("(0 built, 3 cached)"), "\(reuse.stdout) \(reuse.stderr)")
        #expect(reuse.stderr.contains("taken from the shared cache"), "\(reuse.stderr)")
        #expect(try Harness.run(["export", "gaming", "--store", first, "-o", first + "/gaming.sqfs"]).status == 0)
        #expect(FileManager.default.contentsEqual(atPath: first + "/gaming.sqfs", andPath: second + "/gaming.sqfs"))
        try Harness.expectValidStore(second)
        // The layers came with their records: inspect tells their packages, as for a build.
        let inspect = try Harness.run(["inspect", "nvidia", "--store", second])
        #expect(inspect.stdout.contains("+ nvidia-utils 550.0-1") && inspect.stdout.contains("pulled from: \(cache):layer-"), "\(inspect.stdout)")

        // A cache that is not a layerctl cache (a tag pushed by hand) is a warning, and the layer is built.
        let third = try Harness.temporaryDirectory("share-cache-c")
        let baseKey = try #require(try firstStore.ref("base"))
        let work = try Harness.temporaryDirectory("share-cache-forged")
        try OCILayerTests.craft([OCILayerTests.Crafted(name: "forged")], at: work + "/layer.tar")
        try Self.pushImage(layers: [work + "/layer.tar"], to: try ImageReference(parsing: "\(registry.host)/builds/forged:layer-\(baseKey)"))
        let forged = try Harness.run(["build", layers + "/gaming.yaml", "--store", third, "--cache-from", "\(registry.host)/builds/forged"])
        #expect(forged.status == 0 && forged.stdout.contains("(3 built, 0 cached)"), "\(forged.stdout) \(forged.stderr)")
        #expect((forged.stdout + forged.stderr).contains("no build cache image"), "\(forged.stdout) \(forged.stderr)")
        #expect(try Store(root: third).keys().count == 3)
    }

    /// A build that makes a stored layer again and gets another tree moves it into the layer's
    /// place; a push reading the old one meanwhile would send records and blobs of two trees, and
    /// note a blob of the old tree as the new one's.
    @Test("a layer that takes another directory's place while a push compresses it: one error, no tag, no blob noted; then the push completes")
    func layerReplacedDuringPush() throws {
        let registry = try RegistryServer()
        defer { registry.stop() }
        let store = try Harness.temporaryDirectory("share-replaced")
        #expect(try Harness.run(["build", try Harness.demoLayers() + "/gaming.yaml", "--store", store]).status == 0)
        let handle = try Store(root: store)
        let key = try #require(try handle.ref("nvidia"))
        let reference = try ImageReference(parsing: "\(registry.host)/demo/replaced:v1")
        let push = ImagePush(store: handle, client: try RegistryClient(reference, options: RegistryOptions()), architecture: "amd64")
        #expect {
            _ = try push.push(try #require(try handle.ref("gaming")), to: reference) { event in
                // As nvidia's blob is about to be made: what such a build does, by rename(2).
                guard event.kind == .step, event.layer == "nvidia", event.detail == "compress" else { return }
                Harness.replaceLayerDirectory(key, in: handle)
            }
        } throws: { error in
            "\(error)".contains("layer \(key.prefix(12)) was built again by another layerctl while this one read it")
        }
        #expect(!FileSystemProbe.exists(handle.layerDirectory(key) + "/oci-blobs.json"))
        #expect(!FileSystemProbe.exists("\(registry.storage)/repositories/demo/replaced/_manifests/tags/v1"))
        let again = try Harness.run(["push", "gaming", reference.description, "--store", store])
        #expect(again.status == 0, "\(again.stderr)")
        #expect(FileSystemProbe.exists("\(registry.storage)/repositories/demo/replaced/_manifests/tags/v1"))
    }

    /// A cache that another layerctl filled holds trees made under its builder rules: such a layer
    /// is built instead of pulled, as the store's own would be built again.
    @Test("a shared cache's layer made under other builder rules is built, not pulled, and the cache then holds this layerctl's")
    func sharedCacheRules() throws {
        let registry = try RegistryServer()
        defer { registry.stop() }
        let cache = "\(registry.host)/builds/cache"
        let layers = try Harness.demoLayers()
        let older = try Harness.temporaryDirectory("share-rules-a")
        #expect(try Harness.run(["build", layers + "/gaming.yaml", "--store", older]).status == 0)
        let olderStore = try Store(root: older)
        let key = try #require(try olderStore.ref("gaming"))
        var record = try olderStore.record(key)
        record.rules = nil
        try record.encoded().write(to: URL(fileURLWithPath: olderStore.layerDirectory(key) + "/layer.json"))
        let push = try Harness.run(["push", "gaming", "\(cache):layer-\(key)", "--store", older])
        #expect(push.status == 0, "\(push.stderr)")

        let store = try Harness.temporaryDirectory("share-rules-b")
        let build = try Harness.run(["build", layers + "/gaming.yaml", "--store", store, "--cache-from", cache, "--cache-to", cache, "--json"])
        #expect(build.status == 0 && build.built == ["base", "nvidia", "gaming"], "\(build.stdout)\(build.stderr)")
        // Its record, in the image's manifest, is read before any of its blobs: it is not pulled.
        #expect(build.stdout.contains("\"layer\":\"gaming\",\"message\":\"the shared cache's layer was made by another layerctl, under builder rules 1;"), "\(build.stdout)")
        #expect(!build.stdout.contains("the stored layer was made") && !build.stdout.contains("taken from the shared cache"), "\(build.stdout)")
        #expect(try Store(root: store).record(key).rules == BuilderRules.version)
        try Harness.expectValidStore(store)
        // The cache now holds this layerctl's: a third store takes all three from it.
        let third = try Harness.temporaryDirectory("share-rules-c")
        let reuse = try Harness.run(["build", layers + "/gaming.yaml", "--store", third, "--cache-from", cache, "--json"])
        #expect(reuse.status == 0 && reuse.cached == ["base", "nvidia", "gaming"], "\(reuse.stdout)\(reuse.stderr)")
        #expect(try Store(root: third).record(key).rules == BuilderRules.version)
    }
}

extension ShareTests {
    @Test("bearer tokens, as Docker Hub's: anonymous pulls, a user's push, a wrong password in one line and exit 3")
    func bearerTokens() throws {
        let store = try Self.builtDemo()
        let tokens = try TokenServer(users: ["steve": "token horse"])
        defer { tokens.stop() }
        let registry = try RegistryServer(tokens: tokens)
        defer { registry.stop() }
        let reference = "\(registry.host)/steve/base:v1"
        let work = try Harness.temporaryDirectory("share-tokens")
        func authFile(_ password: String) throws -> String {
            let path = work + "/auth-\(password.count).json"
            try #"{"auths":{"\#(registry.host)":{"username":"steve","password":"\#(password)"}}}"#
                .write(toFile: path, atomically: false, encoding: .utf8)
            return path
        }
        // Anonymous: a token for pull only, so the push is refused.
        let anonymous = try Harness.run(["push", "base", reference, "--store", store], environment: ["REGISTRY_AUTH_FILE": work + "/none.json"])
        #expect(anonymous.status == 3, "\(anonymous.stderr)")
        #expect(anonymous.stderr.contains("refused anonymous access"), "\(anonymous.stderr)")
        let wrong = try Harness.run(["push", "base", reference, "--store", store], environment: ["REGISTRY_AUTH_FILE": try authFile("wrong")])
        #expect(wrong.status == 3, "\(wrong.stderr)")
        #expect(wrong.stderr.contains("token service refused user steve"), "\(wrong.stderr)")
        #expect(wrong.stderr.split(separator: "\n").count == 1 && !wrong.stderr.contains("wrong"), "\(wrong.stderr)")

        let before = tokens.issued
        let push = try Harness.run(["push", "base", reference, "--store", store], environment: ["REGISTRY_AUTH_FILE": try authFile("token horse")])
        #expect(push.status == 0, "\(push.stderr)")
        #expect(tokens.issued > before)
        #expect(!push.stderr.contains("horse"))
        // A pull needs no credentials: the anonymous token reads.
        let other = try Harness.temporaryDirectory("share-tokens-pulled")
        let pull = try Harness.run(["pull", reference, "--store", other], environment: ["REGISTRY_AUTH_FILE": work + "/none.json"])
        #expect(pull.status == 0 && pull.stdout.contains("1 downloaded"), "\(pull.stdout) \(pull.stderr)")
    }
}

extension ShareTests {
    @Test("references as Docker reads them; a blob larger than the chunk size goes up in chunks and comes back whole")
    func client() throws {
        let hub = try ImageReference(parsing: "alpine")
        #expect(hub.registry == "docker.io" && hub.repository == "library/alpine" && hub.tag == "latest")
        #expect(hub.apiHost == "registry-1.docker.io" && !hub.isLoopback)
        let short = try ImageReference(parsing: "steve/gaming", defaultRegistry: "ghcr.io")
        #expect(short.description == "ghcr.io/steve/gaming:latest")
        let local = try ImageReference(parsing: "localhost:5000/steve/gaming@sha256:" + String(repeating: "a", count: 64))
        #expect(local.registry == "localhost:5000" && local.tag == nil && local.isLoopback)
        #expect(try ImageReference(parsing: "127.0.0.9:1/a/b:v1").isLoopback)
        #expect(try !ImageReference(parsing: "128.0.0.1:1/a/b:v1").isLoopback)
        #expect(try ImageReference(parsing: "[::1]:5000/a:v1").isLoopback)
        for bad in ["Steve/gaming", "steve//gaming", "steve/gaming:", "steve/gaming:-x", "steve/gaming@sha256:00", "steve/-x"] {
            #expect(throws: ReferenceError.self, "\(bad)") { try ImageReference(parsing: bad) }
        }
        #expect(ImageReference.looksLikeReference("ghcr.io/steve/gaming:v1.2"))
        #expect(!ImageReference.looksLikeReference("out/gaming.squashfs") && !ImageReference.looksLikeReference("./x/y"))

        let registry = try RegistryServer()
        defer { registry.stop() }
        let reference = try ImageReference(parsing: "\(registry.host)/steve/chunks:v1")
        var options = RegistryOptions()
        options.chunkSize = 64 << 10
        let client = try RegistryClient(reference, options: options)
        let work = try Harness.temporaryDirectory("share-chunks")
        var bytes = Data(count: 300_000)
        for index in bytes.indices { bytes[index] = UInt8(truncatingIfNeeded: index &* 2_654_435_761 >> 7) }
        try bytes.write(to: URL(fileURLWithPath: work + "/blob"))
        let digest = "sha256:" + Hash256(SHA256.hash(data: bytes)).hex
        var sent: Int64 = 0
        #expect(try client.uploadBlob(reference.repository, file: work + "/blob", digest: digest, size: 300_000) { sent += $0 } == .uploaded)
        #expect(sent == 300_000)
        #expect(try client.uploadBlob(reference.repository, file: work + "/blob", digest: digest, size: 300_000) == .present)
        try client.downloadBlob(reference.repository, digest, size: 300_000, to: work + "/back")
        #expect(try Data(contentsOf: URL(fileURLWithPath: work + "/back")) == bytes)
        // Mounted into another repository of the registry, not sent again.
        let other = try ImageReference(parsing: "\(registry.host)/steve/other:v1")
        #expect(try client.uploadBlob(other.repository, file: work + "/blob", digest: digest, size: 300_000, mountFrom: reference.repository) == .mounted)
        // A size that is not the blob's: refused, and nothing left.
        #expect(throws: RegistryError.self) {
            try client.downloadBlob(reference.repository, digest, size: 299_999, to: work + "/short")
        }
        #expect(!FileManager.default.fileExists(atPath: work + "/short"))
    }
}

extension ShareTests {
    @Test("HTTPS: a registry whose CA is not trusted is one line and no plain-HTTP fallback; with its CA in a certs.d folder, or in a hashed system folder, it works")
    func https() throws {
        let store = try Self.builtDemo()
        let registry = try RegistryServer(tls: true)
        defer { registry.stop() }
        let reference = "\(registry.host)/steve/base:v1"
        let untrusted = try Harness.run(["push", "base", reference, "--store", store])
        #expect(untrusted.status == 8, "\(untrusted.stderr)")
        #expect(untrusted.stderr.contains("https://\(registry.host)/") && untrusted.stderr.contains("certificate"), "\(untrusted.stderr)")
        #expect(untrusted.stderr.split(separator: "\n").count == 1, "\(untrusted.stderr)")

        let certs = try Harness.temporaryDirectory("share-certs")
        try FileManager.default.createDirectory(atPath: certs + "/" + registry.host, withIntermediateDirectories: true)
        try FileManager.default.copyItem(atPath: registry.certificate, toPath: certs + "/\(registry.host)/ca.crt")
        let environment = ["LAYERCTL_CERTS_DIR": certs]
        let push = try Harness.run(["push", "base", reference, "--store", store], environment: environment)
        #expect(push.status == 0, "\(push.stderr)")
        let other = try Harness.temporaryDirectory("share-https-pulled")
        let pull = try Harness.run(["pull", reference, "--store", other], environment: environment)
        #expect(pull.status == 0 && pull.stdout.contains("1 downloaded"), "\(pull.stdout) \(pull.stderr)")

        // The system's CAs as a folder of certificates under their subject hashes (as
        // /etc/ssl/certs is, read as a chain needs them): trusted when it holds the registry's CA,
        // and not otherwise.
        let hashed = try Harness.temporaryDirectory("share-hashed-certs")
        let hash = try BootMachine.shell("openssl x509 -hash -noout -in '\(registry.certificate)'")
        let parsed = try ImageReference(parsing: reference)
        var options = RegistryOptions()
        options.certificateFolders = []
        options.systemCertificateFolder = hashed
        try FileManager.default.copyItem(atPath: registry.certificate, toPath: hashed + "/00000000.0")
        #expect(RegistryClient.isHashedFolder(hashed) && !RegistryClient.isHashedFolder(certs))
        #expect(throws: RegistryError.self) { try RegistryClient(parsed, options: options).manifest(parsed.repository, "v1") }
        let name = hash.trimmingCharacters(in: .whitespacesAndNewlines) + ".0"
        try FileManager.default.copyItem(atPath: registry.certificate, toPath: hashed + "/" + name)
        #expect(try RegistryClient(parsed, options: options).manifest(parsed.repository, "v1") != nil)
    }
}

extension ShareTests {
    /// curl's usual floor, a byte a second for a minute, let a registry that sends a byte every
    /// half second hold a pull without end: a stranger's `from:` image could hang the tool. The
    /// floor is now 32 KiB in 30 s. The server closes after 45 s, so the old code fails here (on
    /// the bytes it got) instead of hanging; no retries, so one attempt tells.
    @Test("a registry that trickles is dropped after 30 s, not waited on for ever")
    func tricklingRegistry() throws {
        let server = try PythonHelper("trickle-server.py", folderName: "trickle-registry") {
            ["--port-file", $0 + "/port", "--for", "45"]
        }
        defer { server.stop() }
        let reference = try ImageReference(parsing: "127.0.0.1:\(server.port)/steve/base:1")
        var options = RegistryOptions()
        options.retries = 0
        #expect {
            _ = try RegistryClient(reference, options: options).manifest(reference.repository, "1")
        } throws: { error in
            "\(error)".contains("Operation too slow. Less than 1092 bytes/sec transferred the last 30 seconds")
        }
    }

    /// libcurl bounds what a server's headers may take, but said it as the system's failure: exit 8
    /// and "Out of memory" for one endless header line; "Too large response headers", a failed
    /// receive, tried five times over 7.5 s, for endless header lines. A line that is no header
    /// was exit 8 too. Each is the registry's doing: one line, exit 3, one request.
    @Test("a registry whose answer breaks HTTP (endless headers, an endless header line, a line that is no header) is refused at once as the registry's fault")
    func brokenHTTP() throws {
        for (answer, said) in [
            ("endless-headers", "the response's headers pass 256 KiB"),
            ("endless-line", "the response has a header line longer than libcurl takes (100 KiB)"),
            ("no-colon", "the answer breaks HTTP: Header without colon"),
        ] {
            let server = try PythonHelper("broken-http-server.py", folderName: "broken-http") {
                ["--port-file", $0 + "/port", "--count-file", $0 + "/count", "--answer", answer]
            }
            defer { server.stop() }
            let store = try Harness.temporaryDirectory("broken-http-store")
            let pull = try Harness.run(["pull", "127.0.0.1:\(server.port)/steve/base:1", "--store", store])
            #expect(pull.status == 3, "\(answer): \(pull.stderr)")
            #expect(pull.stderr.hasPrefix("layerctl: GET http://127.0.0.1:\(server.port)/v2/"), "\(answer): \(pull.stderr)")
            #expect(pull.stderr.contains(said), "\(answer): \(pull.stderr)")
            #expect(pull.stderr.split(separator: "\n").count == 1, "\(answer): \(pull.stderr)")
            #expect(pull.stderr.count < 300, "\(answer): \(pull.stderr)")
            let requests = try String(contentsOfFile: server.folder + "/count", encoding: .utf8)
            #expect(requests == "1", "\(answer): the registry was asked \(requests) times")
        }
    }

    @Test("stage REF of an image with no kernel: one error, nothing staged, its layers stored whole, nothing left in tmp/")
    func stageReferenceWithoutKernel() throws {
        let store = try Self.builtDemo()
        let registry = try RegistryServer()
        defer { registry.stop() }
        let reference = "\(registry.host)/steve/gaming:v1"
        #expect(try Harness.run(["push", "gaming", reference, "--store", store]).status == 0)
        // The export reads the pulled top layer while its commit runs; the staging fails after both.
        // (A loop-mounted disk: staging names the image's filesystem by its UUID.)
        let disk = try PowerCutTests.Disk()
        defer { disk.remove() }
        let machine = disk.mount
        let stage = try Harness.run([
            "stage", reference, "--store", machine + "/store", "--state-dir", machine + "/state", "--boot-dir",
            machine + "/boot", "--no-grub", "--run-dir", machine + "/run",
        ])
        #expect(stage.status == 3, "\(stage.stderr)")
        // After the pull's lines, one error.
        let errors = stage.stderr.split(separator: "\n").filter { !$0.hasSuffix(": stored") }
        #expect(errors.count == 1 && errors[0].contains("has no kernel and initramfs in /boot"), "\(stage.stderr)")
        let left = FileManager.default.enumerator(atPath: machine + "/state")?.compactMap { $0 as? String } ?? []
        #expect(!left.contains { $0.hasSuffix(".squashfs") }, "an image was left staged: \(left)")
        #expect(!FileManager.default.fileExists(atPath: machine + "/boot/loader/entries"))
        let layers = try PowerCutTests.expectWholeLayers(machine + "/store")
        #expect(layers.isEmpty, "a ref was set by a pull without --name: \(layers)")
        #expect(try FileManager.default.contentsOfDirectory(atPath: try Store(root: machine + "/store").layersDirectory).count == 3)
        #expect(try FileManager.default.contentsOfDirectory(atPath: machine + "/store/tmp").isEmpty)
        // The pulled layers serve the next command, which pulls nothing.
        let again = try Harness.run(["pull", reference, "--store", machine + "/store", "--json"])
        #expect(again.status == 0 && !again.stdout.contains("\"stored\""), "\(again.stdout)")
    }

    @Test("an update pulled and exported in one command reads no block the cache holds, and writes what a cold export writes")
    func updateReadsOnlyWhatTheCacheLacks() throws {
        let store = try Self.builtDemo()
        let registry = try RegistryServer()
        defer { registry.stop() }
        let base = "\(registry.host)/steve/gaming:v1"
        #expect(try Harness.run(["push", "gaming", base, "--store", store]).status == 0)

        // A top layer with one file of 16 blocks of 128 KiB, bytes that do not compress; v2 appends
        // two bytes, so v2's file has another content digest and the same 16 full blocks.
        let folder = try Harness.temporaryDirectory("share-update")
        try FileManager.default.createDirectory(atPath: folder + "/files", withIntermediateDirectories: true)
        var bytes = Data()
        var digest = Array(SHA256.hash(data: Data("layerctl".utf8)))
        while bytes.count < 16 << 17 {
            digest = Array(SHA256.hash(data: digest))
            bytes.append(contentsOf: digest)
        }
        try bytes.write(to: URL(fileURLWithPath: folder + "/files/big.bin"))
        try """
            from: \(base)
            files:
              - path: /opt/big.bin
                source: files/big.bin
            """.write(toFile: folder + "/app.yaml", atomically: false, encoding: .utf8)
        let builder = try Harness.temporaryDirectory("share-update-builder")
        func release(_ tag: String) throws {
            let build = try Harness.run(["build", folder + "/app.yaml", "--store", builder])
            #expect(build.status == 0, "\(build.stderr)")
            let push = try Harness.run(["push", "app", "\(registry.host)/fleet/app:\(tag)", "--store", builder])
            #expect(push.status == 0, "\(push.stderr)")
        }
        try release("v1")
        bytes.append(contentsOf: Array("v2".utf8))
        try bytes.write(to: URL(fileURLWithPath: folder + "/files/big.bin"))
        try release("v2")

        // The machine holds v1, exported once, so its block cache holds the 16 blocks.
        let machine = try Harness.temporaryDirectory("share-update-machine")
        let v1 = try Harness.run(["export", "\(registry.host)/fleet/app:v1", "--store", machine, "-o", folder + "/v1.sqfs"])
        #expect(v1.status == 0, "\(v1.stderr)")
        let apart = try Harness.temporaryDirectory("share-update-apart")
        #expect(try KernelMount.run("/bin/cp", ["-a", machine + "/.", apart]).status == 0)
        func exported(_ arguments: [String]) throws -> [String: Any] {
            let run = try Harness.run(arguments + ["--json-result"])
            #expect(run.status == 0, "\(run.stderr)")
            let last = run.stdout.split(separator: "\n").last.map(String.init) ?? ""
            return try #require(try JSONSerialization.jsonObject(with: Data(last.utf8)) as? [String: Any], "\(run.stdout)")
        }

        // One command: the pull takes the blocks' digests as it unpacks, and the export finds the
        // 16 blocks by them.
        let together = try exported(["export", "\(registry.host)/fleet/app:v2", "--store", machine, "-o", folder + "/v2.sqfs"])
        let read = try #require(together["bytesRead"] as? Int)
        let total = try #require(together["bytesIn"] as? Int)
        #expect(read <= total - (16 << 17), "the export read \(read) of \(total) bytes: the big file's blocks too")
        // Apart (a pull, then an export in another process), the big file is read again to find them.
        #expect(try Harness.run(["pull", "\(registry.host)/fleet/app:v2", "--store", apart]).status == 0)
        let separate = try exported(["export", "app", "--store", apart, "-o", folder + "/v2-apart.sqfs"])
        #expect(try #require(separate["bytesRead"] as? Int) >= read + (16 << 17))
        #expect(separate["cacheMisses"] as? Int == together["cacheMisses"] as? Int)

        // The same image either way, and the one an export without the cache writes.
        #expect(try Harness.run(["export", "app", "--store", apart, "-o", folder + "/v2-cold.sqfs", "--no-block-cache"]).status == 0)
        #expect(FileManager.default.contentsEqual(atPath: folder + "/v2.sqfs", andPath: folder + "/v2-cold.sqfs"))
        #expect(FileManager.default.contentsEqual(atPath: folder + "/v2-apart.sqfs", andPath: folder + "/v2-cold.sqfs"))
        // And the next export of v2 (nothing is pulled, so no digests are taken) finds the blocks
        // by recipe, which the first remembered.
        let again = try exported(["export", "\(registry.host)/fleet/app:v2", "--store", machine, "-o", folder + "/v2-again.sqfs"])
        #expect(again["cacheMisses"] as? Int == 0, "\(again)")
        #expect(FileManager.default.contentsEqual(atPath: folder + "/v2-again.sqfs", andPath: folder + "/v2-cold.sqfs"))
        // An export after a pull works out the cache's tag (its compressor probe) while the pull
        // downloads: the same tag folder as an export of a stored layer.
        let tags = try FileManager.default.contentsOfDirectory(atPath: machine + "/cache/blocks")
        let tagsApart = try FileManager.default.contentsOfDirectory(atPath: apart + "/cache/blocks")
        #expect(tags.count == 1 && tags == tagsApart, "\(tags) and \(tagsApart)")
    }
}

extension ShareTests {
    /// A pulled layer's tar is a stranger's: libarchive parses it in a child that cannot reach
    /// the host (`TarUnpackWork`), caught here while a slow registry sends the blob.
    @Test("a pulled layer's tar is parsed in a confined child: a root holding only the tree, the capabilities an unpack needs, no network")
    func unpackInAChild() throws {
        let store = try Self.builtDemo()
        let registry = try RegistryServer()
        defer { registry.stop() }
        let reference = "\(registry.host)/steve/gaming:v1"
        #expect(try Harness.run(["push", "gaming", reference, "--store", store]).status == 0)
        let slow = try RegistryProxy(upstream: registry.host, rate: 2 << 20)
        defer { slow.stop() }
        let other = try Harness.temporaryDirectory("share-unpack-child")
        let pull = try Harness.start(["pull", "\(slow.host)/steve/gaming:v1", "--store", other])
        defer {
            kill(pull.processIdentifier, SIGKILL)
            pull.waitUntilExit()
        }
        // The unpack of a layer once it has confined itself. The old code parsed the tar in a
        // thread of the pull itself, and never had one.
        var child: (pid: pid_t, fields: [String: String], root: [String], namespaces: [String: Bool])?
        let deadline = Date(timeIntervalSinceNow: 30)
        while child == nil && Date() < deadline && pull.isRunning {
            if let (pid, fields) = Harness.confinedChildren(of: pull.processIdentifier).first {
                let root = ((try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/root")) ?? []).sorted()
                var namespaces: [String: Bool] = [:]
                for namespace in ["pid", "mnt", "net"] {
                    namespaces[namespace] = Harness.link("/proc/\(pid)/ns/\(namespace)") != Harness.link("/proc/self/ns/\(namespace)")
                }
                child = (pid, fields, root, namespaces)
            }
            usleep(20_000)
        }
        let caught = try #require(child, "no confined child of layerctl ran while the pull unpacked")
        // CAP_CHOWN, CAP_DAC_OVERRIDE, CAP_FOWNER, CAP_FSETID, CAP_MKNOD and CAP_SETFCAP: no CAP_SYS_ADMIN.
        #expect(caught.fields["CapEff"] == "000000008800001b", "\(caught.fields)")
        #expect(caught.fields["CapBnd"] == "000000008800001b", "\(caught.fields)")
        #expect(caught.fields["NoNewPrivs"] == "1", "\(caught.fields)")
        #expect(caught.fields["NSpid"]?.split(separator: "\t").last == "1", "\(caught.fields)")
        #expect(caught.namespaces == ["pid": true, "mnt": true, "net": true], "\(caught.namespaces)")
        // Its root holds the tree, the layers below and their opaque folder indexes, and nothing of the host.
        #expect(caught.root == ["lower", "opaque", "tree"], "\(caught.root)")
        pull.waitUntilExit()
        #expect(pull.terminationStatus == 0)
        try Harness.expectValidStore(other)
        let work = try Harness.temporaryDirectory("share-unpack-child-images")
        #expect(try Harness.run(["export", "gaming", "--store", store, "-o", work + "/built.sqfs"]).status == 0)
        #expect(try Harness.run(["export", "gaming", "--store", other, "-o", work + "/pulled.sqfs"]).status == 0)
        #expect(FileManager.default.contentsEqual(atPath: work + "/built.sqfs", andPath: work + "/pulled.sqfs"))
    }

    /// What the confined unpack may not set itself (CAP_SYS_ADMIN's `trusted.*`, the opaque
    /// markers among them) arrives all the same: the tree pulled is the tree unpacked in one process.
    @Test("a pulled layer's opaque folder and trusted.* attributes arrive as an unpack in one process makes them")
    func deferredAttributes() throws {
        let registry = try RegistryServer()
        defer { registry.stop() }
        let work = try Harness.temporaryDirectory("share-attributes")
        let blob = work + "/layer.tar.zst"
        try OCILayerTests.craft(
            [
                OCILayerTests.Crafted(name: "etc", type: Glibc.S_IFDIR, attributes: [("trusted.folder", "f"), ("user.folder", "u")]),
                OCILayerTests.Crafted(name: "etc/.wh..wh..opq", data: ""),
                OCILayerTests.Crafted(
                    name: "etc/hosts", attributes: [("trusted.note", "t"), ("user.note", "u"), ("trusted.overlay.redirect", "/x")]),
                OCILayerTests.Crafted(name: "etc/.wh.gone", data: ""),
                OCILayerTests.Crafted(name: "bin", type: Glibc.S_IFLNK, symlink: "usr/bin", attributes: [("trusted.link", "l")]),
            ], at: blob, zstd: true)
        let reference = try ImageReference(parsing: "\(registry.host)/steve/attributes:v1")
        try Self.pushImage(layers: [blob], to: reference)
        let other = try Harness.temporaryDirectory("share-attributes-store")
        let pulled = try Harness.run(["pull", reference.description, "--store", other])
        #expect(pulled.status == 0, "\(pulled.stderr)")
        let store = try Store(root: other)
        let tree = store.tree(try #require(try store.ref("attributes")))
        let oracle = work + "/oracle"
        try OCILayerReader(blob: blob).unpack(into: oracle)
        func attributes(_ path: String) -> [String: String] {
            var names = [CChar](repeating: 0, count: 4096)
            let size = llistxattr(path, &names, names.count)
            guard size > 0 else { return [:] }
            var result: [String: String] = [:]
            for name in names[0..<size].split(separator: 0).map({ String(decoding: $0.map { UInt8(bitPattern: $0) }, as: UTF8.self) }) {
                var value = [UInt8](repeating: 0, count: 256)
                let count = lgetxattr(path, name, &value, value.count)
                result[name] = count < 0 ? "?" : String(decoding: value[0..<count], as: UTF8.self)
            }
            return result
        }
        #expect(attributes(tree + "/etc") == ["trusted.overlay.opaque": "y", "trusted.folder": "f", "user.folder": "u"])
        #expect(attributes(tree + "/etc/hosts") == ["trusted.note": "t", "user.note": "u"])
        #expect(attributes(tree + "/bin") == ["trusted.link": "l"])
        // The whiteout hides nothing (the image has no layer below): left out of both.
        #expect(access(tree + "/etc/gone", F_OK) != 0 && access(oracle + "/etc/gone", F_OK) != 0)
        for path in ["", "/etc", "/etc/hosts", "/bin"] {
            #expect(attributes(tree + path) == attributes(oracle + path), "\(path)")
            var pulledStat = stat(), oracleStat = stat()
            #expect(lstat(tree + path, &pulledStat) == 0 && lstat(oracle + path, &oracleStat) == 0, "\(path)")
            #expect(pulledStat.st_mode == oracleStat.st_mode && pulledStat.st_rdev == oracleStat.st_rdev, "\(path)")
            #expect(pulledStat.st_mtim.tv_sec == oracleStat.st_mtim.tv_sec, "\(path)")
        }
    }
}

extension ShareTests {
    /// Images Docker made on aufs hold aufs's bookkeeping at their layers' root, and a file linked
    /// across layers is a hard link into `.wh..wh.plnk/`. Taken as whiteouts, `.wh..wh.plnk/` became
    /// the removal of `.wh.plnk`, and the pull failed on the first file below it.
    @Test("an image made on aufs: its bookkeeping is dropped, and a hard link into .wh..wh.plnk keeps its file")
    func aufsBookkeeping() throws {
        let registry = try RegistryServer()
        defer { registry.stop() }
        let work = try Harness.temporaryDirectory("share-aufs")
        let blob = work + "/layer.tar.zst"
        try FileManager.default.createDirectory(atPath: work + "/canary", withIntermediateDirectories: false)
        try "kept".write(toFile: work + "/canary/file", atomically: false, encoding: .utf8)
        typealias Crafted = OCILayerTests.Crafted
        try OCILayerTests.craft(
            [
                Crafted(name: ".wh..wh.aufs", data: ""),
                Crafted(name: ".wh..wh.orph", type: Glibc.S_IFDIR),
                Crafted(name: ".wh..wh.plnk", type: Glibc.S_IFDIR),
                // Removed as a link, never followed.
                Crafted(name: ".wh..wh.link", type: Glibc.S_IFLNK, symlink: work + "/canary"),
                Crafted(name: ".wh..wh.plnk/260.1234", data: "linked across layers", attributes: [("trusted.note", "t")]),
                Crafted(name: ".wh..wh.plnk/.wh.260.99", data: ""),
                Crafted(name: ".wh..wh.plnk/a-folder/.wh..wh..opq", data: "its data is kept, then removed"),
                Crafted(name: "usr/bin/first", hardlink: ".wh..wh.plnk/260.1234"),
                Crafted(name: "usr/bin/second", hardlink: ".wh..wh.plnk/260.1234"),
                Crafted(name: "etc/.wh.gone", data: ""),
                Crafted(name: ".wh..wh..opq", data: ""),
            ], at: blob, zstd: true)
        let reference = try ImageReference(parsing: "\(registry.host)/steve/aufs:v1")
        try Self.pushImage(layers: [blob], to: reference)
        let other = try Harness.temporaryDirectory("share-aufs-store")
        let pulled = try Harness.run(["pull", reference.description, "--store", other])
        #expect(pulled.status == 0, "\(pulled.stderr)")
        let store = try Store(root: other)
        let key = try #require(try store.ref("aufs"))
        let tree = store.tree(key)
        let names = try FileManager.default.contentsOfDirectory(atPath: tree).sorted()
        #expect(names == ["etc", "usr"], "\(names)")
        #expect(FileManager.default.fileExists(atPath: work + "/canary/file"))
        #expect(try String(contentsOfFile: tree + "/usr/bin/first", encoding: .utf8) == "linked across layers")
        var first = stat(), second = stat()
        #expect(lstat(tree + "/usr/bin/first", &first) == 0 && lstat(tree + "/usr/bin/second", &second) == 0)
        #expect(first.st_ino == second.st_ino && first.st_nlink == 2, "one file of two names, as aufs had it")
        // Its attributes too: the confined unpack hands `trusted.*` back by name, the file's name.
        #expect(ExtendedAttributes.value(tree + "/usr/bin/first", "trusted.note") == Array("t".utf8))
        // A whiteout that hides nothing (the image has no layer below) is left out.
        #expect(access(tree + "/etc/gone", F_OK) != 0)
        // The root's own `.wh..wh..opq` is no bookkeeping: the layer hides everything below it.
        #expect(ExtendedAttributes.value(tree, "trusted.overlay.opaque") == Array("y".utf8))
        // An unpack in one process makes the same tree, to its folders' times.
        let oracle = work + "/oracle"
        try OCILayerReader(blob: blob).unpack(into: oracle)
        #expect(try TreeScan.scan(oracle).digest == store.record(key).treeDigest)
    }
}

extension ShareTests {
    /// layerctl decompresses a blob and the confined child parses the tar: when the compressed
    /// stream is what is wrong, the child only sees the tar end early, and the message must name
    /// the decompression, not the child's short tar.
    @Test("a blob whose compressed stream is cut short is refused as such, in one line, and nothing of it is kept")
    func truncatedBlob() throws {
        let registry = try RegistryServer()
        defer { registry.stop() }
        let work = try Harness.temporaryDirectory("share-truncated")
        let blob = work + "/layer.tar.zst"
        try OCILayerTests.craft((0..<200).map { OCILayerTests.Crafted(name: "f\($0)", data: String(repeating: "\($0) ", count: 500)) }, at: blob, zstd: true)
        let whole = try Data(contentsOf: URL(fileURLWithPath: blob))
        try whole.prefix(whole.count * 2 / 3).write(to: URL(fileURLWithPath: blob))
        let reference = try ImageReference(parsing: "\(registry.host)/steve/truncated:v1")
        try Self.pushImage(layers: [blob], to: reference, claimedDiffIDs: ["sha256:" + String(repeating: "0", count: 64)])
        let other = try Harness.temporaryDirectory("share-truncated-store")
        let pulled = try Harness.run(["pull", reference.description, "--store", other])
        #expect(pulled.status == 3, "\(pulled.stderr)")
        let errors = pulled.stderr.split(separator: "\n").filter { $0.hasPrefix("layerctl:") }
        #expect(errors.count == 1 && errors[0].contains("decompressing the layer blob failed"), "\(pulled.stderr)")
        #expect(try Store(root: other).keys().isEmpty)
        #expect(try FileManager.default.contentsOfDirectory(atPath: other + "/tmp").isEmpty)
    }
}

extension ShareTests {
    /// A stranger's image was built against the repositories of its day. A layer over it that
    /// installs what needs newer packages than the image holds upgrades those alone, and the rest
    /// of the image stays as built: what Arch calls a partial upgrade. `upgrade: true` is
    /// `pacman -Syu` in the layer.
    @Test("over an older image: a package that needs newer ones below warns of a partial upgrade; upgrade: true upgrades every package below in the layer, ignore: holds some back, and its lock says so")
    func upgradeOverImage() throws {
        let registry = try RegistryServer()
        defer { registry.stop() }
        let repo = try Harness.temporaryDirectory("moving-repo")
        try BootMachine.shell("cp -a '\(Harness.demoOut)/repo/demo' '\(repo)/demo'")
        let work = try Harness.temporaryDirectory("upgrade")
        let store = try Harness.temporaryDirectory("store")
        let repos = "repos:\n  - name: demo\n    servers: [\(repo)/$repo]\n    siglevel: Never\n"
        let image = "\(registry.host)/steve/old:1"
        for (name, text) in [
            ("old", "from: scratch\narch: x86_64\n" + repos + "packages: [filesystem, busybox, game]\n"),
            ("addon", "from: \(image)\n" + repos + "packages: [game-addon]\n"),
            ("upgraded", "from: \(image)\n" + repos + "packages: [game-addon]\nupgrade: true\n"),
            ("current", "from: \(image)\n" + repos + "upgrade: true\n"),
            ("held", "from: \(image)\n" + repos + "upgrade: true\nignore: [\"ga*\"]\n"),
            ("needed", "from: \(image)\n" + repos + "packages: [game-addon]\nupgrade: true\nignore: [\"gam?\"]\n"),
        ] {
            try text.write(toFile: "\(work)/\(name).yaml", atomically: false, encoding: .utf8)
        }
        #expect(try Harness.run(["build", work + "/old.yaml", "--store", store]).status == 0)
        #expect(try Harness.run(["push", "old", image, "--store", store]).status == 0)
        // Later: the repository moved on (game 1.1-1, and game-addon, which needs it).
        try BootMachine.shell("rm -r '\(repo)/demo' && cp -a '\(Harness.demoOut)/repo-next/demo' '\(repo)/demo'")

        let addon = try Harness.run(["build", work + "/addon.yaml", "--store", store])
        #expect(addon.status == 0, "\(addon.stderr)")
        #expect(
            addon.stderr.contains(
                "addon: warning: this layer installs game 1.1-1 over 1.0-1 of the layers below, while the rest of them stay as "
                    + "they were built: pacman calls this a partial upgrade, which Arch does not support; `upgrade: true` in this "
                    + "layer upgrades them all, as pacman -Syu does"), "\(addon.stderr)")
        for name in ["upgraded", "current"] {
            let build = try Harness.run(["build", "\(work)/\(name).yaml", "--store", store])
            #expect(build.status == 0 && !build.stderr.contains("warning"), "\(name): \(build.stderr)")
            #expect(build.stderr.contains("\(name): upgrade game 1.1-1"), "\(name): \(build.stderr)")
            let game = try Harness.run(["shell", name, "--store", store, "--", "game"])
            #expect(game.stdout == "game 1.1-1\n", "\(name): \(game.stdout) \(game.stderr)")
        }
        // The same packages with and without the upgrade are two layers.
        let keys = try ["addon", "upgraded"].map { try Store(root: store).ref($0) }
        #expect(keys[0] != keys[1])
        // ignore: (a pattern, as IgnorePkg takes them) keeps game as the image has it, and says so
        // once (libalpm's own line, at the download and again at the transaction, is not shown);
        // built again, it is cached and says nothing.
        let held = try Harness.run(["build", work + "/held.yaml", "--store", store])
        #expect(held.status == 0, "\(held.stderr)")
        let heldWarning =
            "held: warning: game stays at 1.0-1, as `ignore:` asks, while the repositories hold 1.1-1: the rest is upgraded "
            + "around it, a partial upgrade, which Arch does not support\n"
        #expect(held.stderr.components(separatedBy: "warning").count == 2 && held.stderr.contains(heldWarning), "\(held.stderr)")
        #expect(try Harness.run(["shell", "held", "--store", store, "--", "game"]).stdout == "game 1.0-1\n")
        let again = try Harness.run(["build", work + "/held.yaml", "--store", store])
        #expect(again.status == 0 && !again.stderr.contains("warning"), "\(again.stderr)")
        #expect(try Store(root: store).ref("held") != Store(root: store).ref("current"))
        // What needs the newer one is not installed over the hold, as pacman installs none: the
        // build stops at the `ignore:` item.
        let needed = try Harness.run(["build", work + "/needed.yaml", "--store", store])
        #expect(needed.status == 5, "\(needed.stderr)")
        #expect(
            needed.stderr == "layerctl: \(work)/needed.yaml:8:10: game-addon needs a newer game than the layers below hold, and "
                + "`ignore:` keeps theirs (game-addon: requires game>=1.1-1): take gam? out of ignore:, or leave out what needs it\n",
            "\(needed.stderr)")
        #expect(try Store(root: store).ref("needed") == nil)
        // The lock writes ignore:, and a lock without it is stale.
        #expect(try Harness.run(["lock", work + "/held.yaml", "--store", store]).status == 0)
        let heldLock = try String(contentsOfFile: work + "/held.lock", encoding: .utf8)
        #expect(heldLock.contains("\nupgrade\nignore ga*\n") && !heldLock.contains("package demo game "), "\(heldLock)")
        #expect(try Harness.run(["build", "--locked", work + "/held.yaml", "--store", store]).status == 0)
        try Harness.edit(work + "/held.yaml") { $0.replacingOccurrences(of: "ignore: [\"ga*\"]\n", with: "") }
        let unheld = try Harness.run(["build", "--locked", work + "/held.yaml", "--store", store])
        #expect(unheld.status == 3 && unheld.stderr.contains("the lock of layer held is stale: ignore: changed"), "\(unheld.stderr)")
        // A lock writes the line, and without it the lock is stale.
        #expect(try Harness.run(["lock", work + "/current.yaml", "--store", store]).status == 0)
        let lock = try String(contentsOfFile: work + "/current.lock", encoding: .utf8)
        #expect(lock.contains("\nupgrade\n") && lock.contains("package demo game 1.1-1 "), "\(lock)")
        try Harness.edit(work + "/current.yaml") { $0.replacingOccurrences(of: "upgrade: true\n", with: "") }
        let stale = try Harness.run(["build", "--locked", work + "/current.yaml", "--store", store])
        #expect(stale.status == 3 && stale.stderr.contains("the lock of layer current is stale: upgrade: changed"), "\(stale.stderr)")
        try Harness.expectValidStore(store)
    }
}
