import Foundation
import Glibc
import LayerShare
import LayerSupport
import Testing

/// A pulled image is a stranger's: its registry may send any manifest, index, config or blob. A
/// registry that serves whatever bytes a folder holds (scripts/registry-files.py) sends mutants of
/// a small two-layer image: every value of its manifest, config and index replaced in turn by a
/// hostile one, then random mutants of each part, blobs with their digests made to match, so the
/// tar reader meets them. Whatever a mutant is, `pull` ends of itself, not by a signal; a failure
/// is one line that starts with `layerctl: ` and quotes nothing long; and the store keeps no half
/// layer (its `tmp/` is empty) and no mount. The mutants come from a fixed seed.
@Suite(
    "Mutated images from a registry", .serialized,
    .enabled(
        if: Harness.isRoot && FileManager.default.isExecutableFile(atPath: "/usr/bin/python3"),
        "needs root (a pull unpacks in a confined child) and python3 (scripts/install-deps.sh)"))
struct ImageMutationTests {
    /// How many random mutants a run pulls, after the systematic ones.
    static let mutants = 150

    /// A two-layer image: the first a plain tar, the second zstd; every part as JSON values.
    struct ImageParts {
        static let manifestType = "application/vnd.oci.image.manifest.v1+json"
        static let indexType = "application/vnd.oci.image.index.v1+json"
        var tars: [Data]
        var blobs: [Data]
        var config: [String: Any]
        var layers: [[String: Any]]

        init(tars: [Data], blobs: [Data], diffIDs: [String]) {
            self.tars = tars
            self.blobs = blobs
            config = [
                "architecture": "amd64", "os": "linux", "created": "2024-01-01T00:00:00Z",
                "rootfs": ["type": "layers", "diff_ids": diffIDs],
                "history": [["created": "2024-01-01T00:00:00Z", "created_by": "hand"]],
            ]
            layers = zip(blobs, ["application/vnd.oci.image.layer.v1.tar", "application/vnd.oci.image.layer.v1.tar+zstd"])
                .enumerated().map { index, pair in
                    [
                        "mediaType": pair.1, "digest": "sha256:" + Digest.sha256(pair.0), "size": pair.0.count,
                        "annotations": ["org.layerctl.layer.name": "part\(index)", "org.opencontainers.image.title": "t"],
                    ]
                }
        }

        /// The manifest naming `config` (served by `registry`) and `layers`.
        static func manifest(config: Data, layers: [[String: Any]], registry: FilesRegistry) throws -> [String: Any] {
            [
                "schemaVersion": 2, "mediaType": manifestType,
                "config": [
                    "mediaType": "application/vnd.oci.image.config.v1+json", "digest": try registry.blob(config), "size": config.count,
                ],
                "layers": layers, "annotations": ["org.opencontainers.image.created": "2024-01-01T00:00:00Z"],
            ]
        }

        /// An index naming `manifest` for linux/amd64 and linux/arm64.
        static func index(manifest: Data, registry: FilesRegistry) throws -> [String: Any] {
            let digest = "sha256:" + Digest.sha256(manifest)
            try registry.manifest(digest, manifest)
            return [
                "schemaVersion": 2, "mediaType": indexType,
                "manifests": ["amd64", "arm64"].map {
                    [
                        "mediaType": manifestType, "digest": digest, "size": manifest.count,
                        "platform": ["os": "linux", "architecture": $0],
                    ] as [String: Any]
                },
            ]
        }
    }

    /// The two layers: files, folders, a hard link and a symlink; then a whiteout, an opaque
    /// folder and a file over them.
    static func parts(in work: String) throws -> ImageParts {
        typealias Crafted = OCILayerTests.Crafted
        try OCILayerTests.craft(
            [
                Crafted(name: "etc", type: Glibc.S_IFDIR), Crafted(name: "etc/hello", data: String(repeating: "hello\n", count: 50)),
                Crafted(name: "usr", type: Glibc.S_IFDIR), Crafted(name: "usr/bin", type: Glibc.S_IFDIR),
                Crafted(name: "usr/bin/tool", data: String(repeating: "tool", count: 3000)),
                Crafted(name: "usr/bin/tool2", hardlink: "usr/bin/tool"), Crafted(name: "bin", type: Glibc.S_IFLNK, symlink: "usr/bin"),
                Crafted(name: "var", type: Glibc.S_IFDIR), Crafted(name: "var/x"),
            ], at: work + "/layer0.tar")
        try OCILayerTests.craft(
            [
                Crafted(name: "etc", type: Glibc.S_IFDIR), Crafted(name: "etc/.wh.hello", data: ""),
                Crafted(name: "etc/world", data: "world\n"), Crafted(name: "var", type: Glibc.S_IFDIR),
                Crafted(name: "var/.wh..wh..opq", data: ""), Crafted(name: "var/y"),
            ], at: work + "/layer1.tar")
        let tars = try [0, 1].map { try Data(contentsOf: URL(fileURLWithPath: work + "/layer\($0).tar")) }
        let zstd = try KernelMount.run("/usr/bin/zstd", ["-q", "-f", work + "/layer1.tar", "-o", work + "/layer1.tar.zst"])
        #expect(zstd.status == 0, "\(zstd.output)")
        let blobs = [tars[0], try Data(contentsOf: URL(fileURLWithPath: work + "/layer1.tar.zst"))]
        return ImageParts(tars: tars, blobs: blobs, diffIDs: tars.map { "sha256:" + Digest.sha256($0) })
    }

    /// One step into a JSON value: a key or an index.
    enum Step {
        case key(String)
        case index(Int)
    }

    /// Every path into `value`, itself excluded, parents before children.
    static func paths(_ value: Any, _ prefix: [Step] = []) -> [[Step]] {
        if let object = value as? [String: Any] {
            return object.keys.sorted().flatMap { key in [prefix + [.key(key)]] + paths(object[key]!, prefix + [.key(key)]) }
        }
        if let array = value as? [Any] {
            return array.indices.flatMap { index in [prefix + [.index(index)]] + paths(array[index], prefix + [.index(index)]) }
        }
        return []
    }

    /// `value` with what `path` leads to replaced by `new`.
    static func replacing(_ value: Any, at path: ArraySlice<Step>, with new: Any) -> Any {
        guard let step = path.first else { return new }
        switch step {
        case .key(let key):
            var object = value as! [String: Any]
            object[key] = replacing(object[key]!, at: path.dropFirst(), with: new)
            return object
        case .index(let index):
            var array = value as! [Any]
            array[index] = replacing(array[index], at: path.dropFirst(), with: new)
            return array
        }
    }

    static func json(_ value: Any) throws -> Data { try JSONSerialization.data(withJSONObject: value, options: [.sortedKeys]) }

    /// What takes a value's place in the systematic mutants: long, with control characters, and
    /// of each other JSON kind.
    static var hostileValues: [Any] { [
        String(repeating: "a", count: 100_000), String(repeating: "\u{1B}[31m\n", count: 3000), NSNull(), -1, Int.max, 1e300,
        [Any](), [String(repeating: "k", count: 100_000): "v"],
    ] }

    /// Pulls the image `tag` of `registry` into a new store, which is gone once `check` has seen
    /// how the pull ended.
    static func pulling<T>(
        _ tag: String, from registry: FilesRegistry, environment: [String: String] = [:],
        _ check: (Harness.Result, _ store: String) throws -> T
    ) throws -> T {
        let store = try Harness.temporaryDirectory("mutation-pull")
        defer { try? FileManager.default.removeItem(atPath: store) }
        return try check(
            try Harness.run(["pull", "\(registry.host)/stranger/image:\(tag)", "--store", store], environment: environment), store)
    }

    /// A registry serving the two layers' blobs, and the parts of their image.
    static func served(in work: String) throws -> (registry: FilesRegistry, parts: ImageParts) {
        let registry = try FilesRegistry()
        let parts = try Self.parts(in: work)
        for blob in parts.blobs { try registry.blob(blob) }
        return (registry, parts)
    }

    /// One to four byte mutations of `data`: a byte set, a cut, an insertion, a stretch doubled.
    static func mutate(_ data: Data, _ random: inout MutationTests.Random) -> Data {
        var bytes = [UInt8](data)
        let insertions: [[UInt8]] = [[0], [0xFF, 0xFE], Array(String(repeating: "[", count: 5000).utf8), Array("\"{\\u0000\\ud800".utf8)]
        for _ in 0...random.below(4) {
            let at = random.below(bytes.count + 1)
            switch random.below(5) {
            case 0 where !bytes.isEmpty: bytes[min(at, bytes.count - 1)] = UInt8(random.below(256))
            case 1: bytes.removeSubrange(at...)
            case 2: bytes.insert(contentsOf: random.pick(insertions), at: at)
            case 3 where !bytes.isEmpty:
                let from = random.below(bytes.count)
                bytes.insert(contentsOf: bytes[from..<min(bytes.count, from + 1 + random.below(200))], at: at)
            default: bytes.insert(contentsOf: [UInt8](repeating: 0x39, count: 400), at: at)
            }
        }
        return Data(bytes)
    }

    @Test("every mutant of an image's manifest, index, config and blobs ends in one short line of its own, or pulls")
    func images() throws {
        let (registry, parts) = try Self.served(in: try Harness.temporaryDirectory("mutation-image"))
        defer { registry.stop() }
        let config = try Self.json(parts.config)
        let manifest = try ImageParts.manifest(config: config, layers: parts.layers, registry: registry)
        let index = try ImageParts.index(manifest: try Self.json(manifest), registry: registry)

        // The image as it is pulls, through its index too: the mutants start from what works.
        try registry.manifest("whole", try Self.json(manifest))
        try registry.manifest("indexed", try Self.json(index), mediaType: ImageParts.indexType)
        for tag in ["whole", "indexed"] {
            let pulled = try Self.pulling(tag, from: registry) { result, _ in result }
            #expect(pulled.status == 0, "\(pulled.stderr)")
        }

        // Each mutant: the tag it is served as, and its manifest (or index) with its type.
        var mutants: [(data: Data, type: String)] = []
        for path in Self.paths(manifest) {
            for value in Self.hostileValues {
                mutants.append((try Self.json(Self.replacing(manifest, at: path[...], with: value)), ImageParts.manifestType))
            }
        }
        for path in Self.paths(parts.config) {
            for value in Self.hostileValues {
                let changed = try Self.json(Self.replacing(parts.config, at: path[...], with: value))
                let named = try ImageParts.manifest(config: changed, layers: parts.layers, registry: registry)
                mutants.append((try Self.json(named), ImageParts.manifestType))
            }
        }
        for path in Self.paths(index) {
            for value in Self.hostileValues {
                mutants.append((try Self.json(Self.replacing(index, at: path[...], with: value)), ImageParts.indexType))
            }
        }
        var random = MutationTests.Random(state: 56)
        for _ in 0..<Self.mutants {
            switch random.below(5) {
            case 0: mutants.append((Self.mutate(try Self.json(manifest), &random), ImageParts.manifestType))
            case 1: mutants.append((Self.mutate(try Self.json(index), &random), ImageParts.indexType))
            case 2:
                let named = try ImageParts.manifest(config: Self.mutate(config, &random), layers: parts.layers, registry: registry)
                mutants.append((try Self.json(named), ImageParts.manifestType))
            case 3:
                // A tar mutated, its blob's digest and diff_id made to match: the tar reader meets it.
                let layer = random.below(2)
                var tars = parts.tars
                tars[layer] = Self.mutate(tars[layer], &random)
                var layers = parts.layers
                layers[0] = layers[0].merging(["digest": try registry.blob(tars[0]), "size": tars[0].count]) { $1 }
                var changed = parts.config
                changed["rootfs"] = ["type": "layers", "diff_ids": tars.map { "sha256:" + Digest.sha256($0) }]
                if layer == 1 {
                    // Sent plain, as the first: a zstd of the mutant would need the zstd tool per mutant.
                    layers[1] = layers[1].merging([
                        "digest": try registry.blob(tars[1]), "size": tars[1].count, "mediaType": "application/vnd.oci.image.layer.v1.tar",
                    ]) { $1 }
                }
                let named = try ImageParts.manifest(config: try Self.json(changed), layers: layers, registry: registry)
                mutants.append((try Self.json(named), ImageParts.manifestType))
            default:
                // The zstd blob mutated, or a descriptor's size a lie: the digest or size check
                // or the decompressor meets it.
                var layers = parts.layers
                if random.below(2) == 0 {
                    let blob = Self.mutate(parts.blobs[1], &random)
                    layers[1] = layers[1].merging(["digest": try registry.blob(blob), "size": blob.count]) { $1 }
                } else {
                    let layer = random.below(2)
                    let size = parts.blobs[layer].count
                    layers[layer]["size"] = random.pick([0, 1, size - 1, size + 1, 1 << 40, Int.max])
                }
                let named = try ImageParts.manifest(config: config, layers: layers, registry: registry)
                mutants.append((try Self.json(named), ImageParts.manifestType))
            }
        }
        var faults: [String] = []
        for (number, mutant) in mutants.enumerated() {
            try registry.manifest("m\(number)", mutant.data, mediaType: mutant.type)
            if let fault = try Self.pulling("m\(number)", from: registry, { try MutationTests.fault(of: $0, store: $1) }) {
                faults.append("mutant \(number) (kept in \(registry.folder)/manifests/m\(number)): \(fault)")
            }
        }
        #expect(faults.isEmpty, "\(faults.count) of \(mutants.count) mutants:\n\(faults.prefix(5).joined(separator: "\n"))")
    }

    @Test("what the mutants found: a damaged tar header, an index naming a tag, a long value, a count of one")
    func found() throws {
        let (registry, parts) = try Self.served(in: try Harness.temporaryDirectory("mutation-found"))
        defer { registry.stop() }
        let config = try Self.json(parts.config)
        let manifest = try Self.json(try ImageParts.manifest(config: config, layers: parts.layers, registry: registry))
        try registry.manifest("whole", manifest)
        func pull(_ tag: String) throws -> Harness.Result { try Self.pulling(tag, from: registry) { result, _ in result } }

        // A header whose checksum does not check out: libarchive's "retry" is no entry (it was
        // taken for one with no name).
        var tar = [UInt8](parts.tars[0])
        tar[512 + 148] = tar[512 + 148] == 0x30 ? 0x31 : 0x30
        var layers = parts.layers
        layers[0] = layers[0].merging(["digest": try registry.blob(Data(tar)), "size": tar.count]) { $1 }
        var changed = parts.config
        changed["rootfs"] = ["type": "layers", "diff_ids": ["sha256:" + Digest.sha256(Data(tar)), "sha256:" + Digest.sha256(parts.tars[1])]]
        try registry.manifest(
            "damaged", try Self.json(try ImageParts.manifest(config: try Self.json(changed), layers: layers, registry: registry)))
        let damaged = try pull("damaged")
        #expect(damaged.status == 3, "\(damaged.stderr)")
        #expect(damaged.stderr.contains("does not unpack: Damaged tar archive (reading its next entry)"), "\(damaged.stderr)")

        // An index that names a tag where a digest belongs: not fetched.
        var index = try ImageParts.index(manifest: manifest, registry: registry)
        index = Self.replacing(index, at: [.key("manifests"), .index(0), .key("digest")], with: "whole") as! [String: Any]
        try registry.manifest("tagged", try Self.json(index), mediaType: ImageParts.indexType)
        let tagged = try pull("tagged")
        #expect(tagged.status == 3, "\(tagged.stderr)")
        #expect(tagged.stderr.contains("the index names manifest `whole`, which is no sha256 digest"), "\(tagged.stderr)")

        // A long value with escape sequences in it, quoted short and escaped.
        changed = parts.config
        changed["os"] = "\u{1B}]0;owned\u{7}" + String(repeating: "a", count: 100_000)
        try registry.manifest(
            "long", try Self.json(try ImageParts.manifest(config: try Self.json(changed), layers: parts.layers, registry: registry)))
        let long = try pull("long")
        #expect(long.status == 3, "\(long.stderr)")
        #expect(long.stderr.contains("is an image for `\\x1B]0;owned\\x07aaaa"), "\(long.stderr)")
        #expect(long.stderr.utf8.count < 300, "\(long.stderr.prefix(300))")

        // One diff_id for two layers, said in the singular.
        changed = parts.config
        changed["rootfs"] = ["type": "layers", "diff_ids": ["sha256:" + Digest.sha256(parts.tars[0])]]
        try registry.manifest(
            "short", try Self.json(try ImageParts.manifest(config: try Self.json(changed), layers: parts.layers, registry: registry)))
        let short = try pull("short")
        #expect(short.status == 3, "\(short.stderr)")
        #expect(short.stderr.contains("the config lists 1 diff_id for the manifest's 2 layers"), "\(short.stderr)")
    }

    @Test("a registry's answers: a redirect to file: or round in a loop, a realm on file:, a token with a line break: one line, exit 3; credentials stay with their registry")
    func answers() throws {
        let work = try Harness.temporaryDirectory("mutation-answers")
        let (registry, parts) = try Self.served(in: work)
        defer { registry.stop() }
        let other = try FilesRegistry()
        defer { other.stop() }
        let manifest = try Self.json(
            try ImageParts.manifest(config: try Self.json(parts.config), layers: parts.layers, registry: registry))
        for tag in ["file", "loop", "realm", "token", "moved"] { try registry.manifest(tag, manifest) }
        func pull(_ tag: String, environment: [String: String] = [:]) throws -> Harness.Result {
            try Self.pulling(tag, from: registry, environment: environment) { result, _ in result }
        }
        func refused(_ result: Harness.Result, saying text: String, sourceLocation: SourceLocation = #_sourceLocation) {
            let lines = result.stderr.split(separator: "\n")
            #expect(result.status == 3, "\(result.stderr)", sourceLocation: sourceLocation)
            #expect(lines.count == 1 && lines[0].hasPrefix("layerctl: ") && lines[0].contains(text), "\(result.stderr)", sourceLocation: sourceLocation)
        }

        // Redirects: to a file of this machine, and to itself for ever. libcurl follows http and
        // https only, five times at most.
        try registry.beside("manifests/file", "status", "302")
        try registry.beside("manifests/file", "headers", "Location: file:///etc/passwd\n")
        let file = try pull("file")
        refused(file, saying: "Protocol \"file\" not supported")
        #expect(!file.stderr.contains("root:"))
        try registry.beside("manifests/loop", "status", "302")
        try registry.beside("manifests/loop", "headers", "Location: http://\(registry.host)/v2/stranger/image/manifests/loop\n")
        refused(try pull("loop"), saying: "Maximum (5) redirects followed")

        // Challenges: a token realm that is a file, and a token that would end its header line.
        try registry.beside("manifests/realm", "auth", #"Bearer realm="file:///etc/passwd",service="x""#)
        refused(try pull("realm"), saying: "names no usable token realm in its challenge: `Bearer realm=\"file:///etc/passwd\"")
        try registry.beside("manifests/token", "auth", #"Bearer realm="http://\#(registry.host)/token",service="x""#)
        try #"{"token":"abc\r\nX-Injected: 1"}"#.write(toFile: registry.folder + "/token", atomically: false, encoding: .utf8)
        refused(try pull("token"), saying: "/token` sent no token")
        #expect(try registry.requests().allSatisfy { $0.headers["X-Injected"] == nil })

        // A registry that sends its blobs from another host (as Docker Hub's from a CDN): the
        // credentials the user gave for the registry do not go with them.
        try registry.beside("manifests/moved", "auth", #"Basic realm="stranger""#)
        for (blob, layer) in zip(parts.blobs, parts.layers) {
            let digest = try #require(layer["digest"] as? String)
            try other.blob(blob)
            try registry.beside("blobs/" + digest, "status", "307")
            try registry.beside("blobs/" + digest, "headers", "Location: http://\(other.host)/v2/stranger/image/blobs/\(digest)\n")
        }
        let auth = work + "/auth.json"
        try #"{"auths":{"\#(registry.host)":{"auth":"\#(Data("user:secret".utf8).base64EncodedString())"}}}"#
            .write(toFile: auth, atomically: false, encoding: .utf8)
        let moved = try pull("moved", environment: ["REGISTRY_AUTH_FILE": auth])
        #expect(moved.status == 0, "\(moved.stderr)")
        #expect(try registry.requests().contains { $0.path.contains("/blobs/") && $0.headers["Authorization"] != nil })
        let sent = try other.requests()
        #expect(sent.count == 2 && sent.allSatisfy { $0.headers["Authorization"] == nil }, "\(sent)")
    }
}
