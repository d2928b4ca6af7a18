import Foundation
import Glibc
import LayerExport
import LayerStore
import SquashfsImage
import Testing

/// The block cache, as exports meet it: reuse after a change, another file system, damage, its
/// bounds, and a killed export. Part of the serialized "Exporting images" suite.
extension ExportTests {
    @Test("A re-export after a change to the top layer reuses the cache and equals a cold export")
    func incremental() throws {
        let layers = try Harness.demoLayers()
        let store = try demoStore(layers: layers)
        let out = try Harness.temporaryDirectory("images")
        let warm = try export("gaming", store: store, to: out + "/before", ["--json-result"])
        let before = try JSONSerialization.jsonObject(with: Data(warm.stdout.utf8)) as? [String: Any]
        #expect((before?["cacheMisses"] as? Int ?? 0) > 100)

        // The top layer deletes (perl, about 2,500 files), adds and changes files.
        try Harness.edit(layers + "/gaming.yaml") {
            $0.replacingOccurrences(of: "remove: [nano]", with: "remove: [nano, perl]")
                .replacingOccurrences(of: #"content: "gaming\n""#, with: #"content: "gaming, edited\n""#)
                + "  - echo added > /etc/added\n"
        }
        let rebuild = try Harness.run(["build", layers + "/gaming.yaml", "--store", store])
        #expect(rebuild.status == 0, "\(rebuild.stderr)")
        let again = try export("gaming", store: store, to: out + "/after", ["--json-result"])
        let after = try JSONSerialization.jsonObject(with: Data(again.stdout.utf8)) as? [String: Any]
        let hits = after?["cacheHits"] as? Int ?? 0
        let misses = after?["cacheMisses"] as? Int ?? -1
        // Deleting perl empties many fragment blocks; still at most a quarter of the blocks are new.
        #expect(
            misses >= 1 && 4 * misses <= hits + misses, "the re-export compressed \(misses) blocks and reused \(hits)")
        _ = try export("gaming", store: store, to: out + "/cold", ["--no-block-cache"])
        #expect(bytes(out + "/after") == bytes(out + "/cold"), "the incremental export differs from a cold one")
        #expect(bytes(out + "/after") != bytes(out + "/before"))

        // The same stack again: every block is found by what it is made of, none compressed.
        let repeated = try export("gaming", store: store, to: out + "/repeated", ["--json-result"])
        let third = try JSONSerialization.jsonObject(with: Data(repeated.stdout.utf8)) as? [String: Any]
        #expect(third?["cacheMisses"] as? Int == 0, "\(repeated.stdout)")
        #expect(bytes(out + "/repeated") == bytes(out + "/cold"))

        let mounted = try KernelMount.squashfs(out + "/after")
        defer { KernelMount.unmount(mounted) }
        #expect(try String(contentsOfFile: mounted + "/etc/added", encoding: .utf8) == "added\n")
        #expect(try String(contentsOfFile: mounted + "/etc/hostname", encoding: .utf8) == "gaming, edited\n")
        #expect(!FileManager.default.fileExists(atPath: mounted + "/usr/bin/perl"))

        // gc --blocks drops the cache; the next export compresses everything again, to the same bytes.
        let gc = try Harness.run(["gc", "--store", store, "--blocks"])
        #expect(gc.status == 0, "\(gc.stderr)")
        #expect(!FileManager.default.fileExists(atPath: store + "/cache/blocks"))
        let refilled = try export("gaming", store: store, to: out + "/refilled", ["--json-result"])
        let counts = try JSONSerialization.jsonObject(with: Data(refilled.stdout.utf8)) as? [String: Any]
        #expect(counts?["cacheHits"] as? Int == 0)
        #expect(bytes(out + "/refilled") == bytes(out + "/cold"))
    }

    /// A store on read-only media (a disk mounted ro, a store shipped on one): export said "0 blocks
    /// compressed, 0 from cache" after the warning that it could not make the cache.
    @Test("A read-only store exports, warning that it has no block cache, and counts the blocks it compressed; ls, inspect, diff and sbom read it, and shell opens it")
    func readOnlyStore() throws {
        let store = try demoStore()
        let out = try Harness.temporaryDirectory("images")
        _ = try export("gaming", store: store, to: out + "/cold", ["--no-block-cache"])
        #expect(!FileManager.default.fileExists(atPath: store + "/cache/blocks"))
        let readOnly = try Harness.temporaryDirectory("read-only") + "/store"
        try FileManager.default.createDirectory(atPath: readOnly, withIntermediateDirectories: false)
        let bound = try KernelMount.run("/bin/sh", ["-c", "mount --bind \"$1\" \"$2\" && mount -o remount,bind,ro \"$2\"", "sh", store, readOnly])
        #expect(bound.status == 0, "\(bound.output)")
        defer { KernelMount.unmount(readOnly) }

        let exported = try export("gaming", store: readOnly, to: out + "/read-only")
        #expect(exported.stderr.contains("warning: exporting without the block cache: create directory \(readOnly)/cache/blocks failed: Read-only file system"), "\(exported.stderr)")
        let compressed = exported.stdout.firstMatch(of: /, (\d+) blocks compressed, 0 from cache\n$/).flatMap { Int($0.1) } ?? 0
        #expect(compressed > 100, "\(exported.stdout)")
        #expect(bytes(out + "/read-only") == bytes(out + "/cold"))
        for arguments in [["ls"], ["inspect", "gaming"], ["diff", "base", "gaming"], ["sbom", "gaming", "-o", out + "/sbom.json"]] {
            let result = try Harness.run(arguments + ["--store", readOnly])
            #expect(result.status == (arguments[0] == "diff" ? 1 : 0) && result.stderr.isEmpty, "\(arguments): \(result.stderr)")
        }
        // A shell writes nothing of its own in the store: its folder goes to /run, and goes.
        let before = try FileManager.default.contentsOfDirectory(atPath: "/run").filter { $0.hasPrefix("layerctl-shell-") }
        let shell = try Harness.run(["shell", "gaming", "--store", readOnly, "--", "cat", "/etc/hostname"])
        #expect(shell.status == 0 && shell.stdout == "gaming\n", "\(shell.stdout) \(shell.stderr)")
        let after = try FileManager.default.contentsOfDirectory(atPath: "/run").filter { $0.hasPrefix("layerctl-shell-") }
        #expect(after == before)
    }

    @Test("An image on another file system than the store is copied from the cache all the same")
    func otherFileSystem() throws {
        let store = try demoStore()
        let out = try Harness.temporaryDirectory("images")
        _ = try export("gaming", store: store, to: out + "/cold", ["--no-block-cache"])
        _ = try export("gaming", store: store, to: out + "/warm")
        // /dev/shm is a tmpfs: the kernel does not copy between it and the store's file system.
        let elsewhere = "/dev/shm/layerctl-test-\(getpid())"
        try FileManager.default.createDirectory(atPath: elsewhere, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: elsewhere) }
        let result = try export("gaming", store: store, to: elsewhere + "/image", ["--json-result"])
        let counts = try JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as? [String: Any]
        #expect(counts?["cacheMisses"] as? Int == 0, "\(result.stdout)")
        #expect(bytes(elsewhere + "/image") == bytes(out + "/cold"))
    }

    @Test("A damaged block cache (a pack cut short, an index cut short or edited) is reported, removed, and the image is right")
    func damagedCache() throws {
        let store = try demoStore()
        let out = try Harness.temporaryDirectory("images")
        let fast = ["--compression", "zstd:1"]
        _ = try export("gaming", store: store, to: out + "/cold", fast + ["--no-block-cache"])
        let first = try export("gaming", store: store, to: out + "/first", fast + ["--json-result"])
        let blocks = store + "/cache/blocks"
        let tag = try #require(try FileManager.default.contentsOfDirectory(atPath: blocks).first)
        let folder = blocks + "/" + tag
        let index = try #require(
            try FileManager.default.contentsOfDirectory(atPath: folder).first { $0.hasSuffix(".index") })
        let indexPath = folder + "/" + index
        let packPath = folder + "/" + index.dropLast(6) + ".pack"
        let pristine = (index: bytes(indexPath), pack: bytes(packPath))
        let damages: [(String, () throws -> Void)] = [
            ("its pack is shorter than the index says", { _ = truncate(packPath, off_t(pristine.pack.count / 2)) }),
            ("cut short", { _ = truncate(indexPath, off_t(pristine.index.count - 7)) }),
            // One record's offset, moved by one byte: the blocks would be read from the wrong place.
            ("its checksum does not match", {
                var edited = pristine.index
                edited[8 + 32] ^= 1
                try edited.write(to: URL(fileURLWithPath: indexPath))
            }),
        ]
        let hits = { (result: Harness.Result) in
            (try? JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as? [String: Any])?["cacheHits"] as? Int
        }
        for (why, damage) in damages {
            for file in try FileManager.default.contentsOfDirectory(atPath: folder) {
                try FileManager.default.removeItem(atPath: folder + "/" + file)
            }
            try pristine.index.write(to: URL(fileURLWithPath: indexPath))
            try pristine.pack.write(to: URL(fileURLWithPath: packPath))
            try damage()
            let again = try export("gaming", store: store, to: out + "/again", fast + ["--json-result"])
            #expect(again.stderr.contains("block cache: \(indexPath): \(why); removed it"), "\(again.stderr)")
            #expect(again.stderr.split(separator: "\n").count == 1, "\(again.stderr)")
            // Its counts are those of an export into an empty cache (which finds repeated blocks only).
            #expect(hits(again) != nil && hits(again) == hits(first), "\(again.stdout) vs \(first.stdout)")
            #expect(bytes(out + "/again") == bytes(out + "/cold"))
            #expect(!FileManager.default.fileExists(atPath: indexPath) && !FileManager.default.fileExists(atPath: packPath))
            try FileManager.default.removeItem(atPath: out + "/again")
        }
    }

    /// The files of a store's block cache: how many packs, and their bytes with their indexes.
    func cacheFiles(_ store: String) throws -> (packs: Int, bytes: Int) {
        let blocks = store + "/cache/blocks"
        var packs = 0
        var total = 0
        for tag in try FileManager.default.contentsOfDirectory(atPath: blocks) {
            for file in try FileManager.default.contentsOfDirectory(atPath: blocks + "/" + tag) {
                if file.hasSuffix(".pack") { packs += 1 }
                total += bytes(blocks + "/" + tag + "/" + file).count
            }
        }
        return (packs, total)
    }

    @Test("The block cache stays within its size and pack count, the least recently used go first, and re-exports equal cold ones")
    func boundedCache() throws {
        // Random, so incompressible. Each stack is the base and one top layer of its own: the first
        // export packs 448 KiB, every later one 192 KiB of its own top.
        var state: UInt64 = 0x2545_F491_4F6C_DD1D
        func random(_ count: Int) -> [UInt8] {
            (0..<count).map { _ in
                state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
                return UInt8(truncatingIfNeeded: state >> 33)
            }
        }
        let stack = try CraftedStack("bounded")
        try stack.layer("base") { t in
            try t.directory("data")
            try t.file(Array("data/base".utf8), random(256 << 10))
        }
        for i in 0..<40 {
            try stack.layer("top\(i)", on: 0) { t in
                try t.directory("data")
                try t.file(Array("data/top\(i)".utf8), random(192 << 10))
            }
        }
        let out = try Harness.temporaryDirectory("images")
        let fast = ["--compression", "zstd:1"]
        // The pack count: at most 32 packs, whatever their size.
        for i in 0..<40 {
            _ = try export("top\(i)", store: stack.store, to: out + "/top\(i)", fast)
        }
        #expect(try cacheFiles(stack.store).packs == 32)

        // The size: 1 MiB holds the base's pack and a few more; every export reads the base's
        // blocks, so its pack is always among the most recently used and stays.
        #expect(try Harness.run(["gc", "--blocks", "--store", stack.store]).status == 0)
        let limit = ["--block-cache-size", "1M"]
        for i in 0..<12 {
            _ = try export("top\(i)", store: stack.store, to: out + "/small\(i)", fast + limit)
            #expect(try cacheFiles(stack.store).bytes <= 1 << 20, "after top\(i)")
        }
        let again = try export("top11", store: stack.store, to: out + "/again11", fast + limit + ["--json-result"])
        #expect(again.stdout.contains("\"cacheMisses\":0,"), "the last stack is all cached: \(again.stdout)")
        let evicted = try export("top1", store: stack.store, to: out + "/again1", fast + limit + ["--json-result"])
        #expect(!evicted.stdout.contains("\"cacheMisses\":0,"), "top1's own blocks were evicted: \(evicted.stdout)")
        for name in ["top11", "top1"] {
            _ = try export(name, store: stack.store, to: out + "/cold-" + name, fast + ["--no-block-cache"])
        }
        #expect(bytes(out + "/again11") == bytes(out + "/cold-top11"))
        #expect(bytes(out + "/again1") == bytes(out + "/cold-top1"))

        let bad = try Harness.run(["export", "top1", "--store", stack.store, "-o", out + "/x", "--block-cache-size", "4Q"])
        #expect(bad.status == 2 && bad.stderr.contains("block cache size '4Q' is not a size"), "\(bad.stderr)")
    }

    @Test("A killed export leaves no block the cache would use, and the next export sweeps its pack away")
    func killedExportAndCache() throws {
        let store = try demoStore()
        let out = try Harness.temporaryDirectory("images")
        let arguments = ["export", "gaming", "--store", store, "--compression", "gzip:9", "--jobs", "1"]
        try killed(arguments + ["-o", out + "/killed"], after: 1_000_000)
        let blocks = store + "/cache/blocks"
        let tag = try #require(try FileManager.default.contentsOfDirectory(atPath: blocks).first)
        let left = try FileManager.default.contentsOfDirectory(atPath: blocks + "/" + tag)
        #expect(left.count == 1 && left[0].hasSuffix(".pack"), "\(left)")

        let finished = try Harness.run(arguments + ["-o", out + "/finished", "--json-result"])
        #expect(finished.status == 0, "\(finished.stderr)")
        // It reuses nothing of the killed export: its counts are those of an export into an empty cache.
        let counts = { (text: String) in
            text.split(separator: ",").filter { $0.contains("cacheHits") || $0.contains("cacheMisses") }
        }
        let now = try FileManager.default.contentsOfDirectory(atPath: blocks + "/" + tag)
        #expect(!now.contains(left[0]), "the killed export's pack is still there")
        #expect(now.filter { $0.hasSuffix(".index") }.count == 1, "\(now)")
        #expect(try Harness.run(["gc", "--blocks", "--store", store]).status == 0)
        let fresh = try Harness.run(arguments + ["-o", out + "/fresh", "--json-result"])
        #expect(
            fresh.status == 0 && counts(fresh.stdout) == counts(finished.stdout),
            "\(fresh.stdout) vs \(finished.stdout)")
        #expect(bytes(out + "/finished") == bytes(out + "/fresh"))
    }

    /// A build that makes a stored layer again (other builder rules, `--no-cache`) and gets
    /// another tree moves it into the layer's place while an export may be reading the old one.
    /// Bytes of two trees must reach neither the image nor the block cache, whose recipe keys
    /// would give them to every later image with a file of the old content.
    @Test("a layer that takes another directory's place while an export reads it: one error, no image, no block cache update; then the export completes")
    func layerReplacedDuringExport() throws {
        let store = try demoStore()
        let handle = try Store(root: store)
        let key = try #require(try handle.ref("nvidia"))
        let out = try Harness.temporaryDirectory("images")
        func indexes() throws -> [String] {
            guard FileSystemProbe.exists(handle.blockCacheDirectory) else { return [] }
            return try FileManager.default.subpathsOfDirectory(atPath: handle.blockCacheDirectory).filter { $0.hasSuffix(".index") }.sorted()
        }
        let published = try indexes()
        for format in Exporter.Format.allCases {
            var request = Exporter.Request(format: format, output: "\(out)/\(format)", options: ImageOptions())
            // Once the manifests are read and before any file is: what such a build does, by rename(2).
            request.check = { _ in Harness.replaceLayerDirectory(key, in: handle) }
            #expect {
                _ = try Exporter(store: handle).export(try #require(try handle.ref("gaming")), request)
            } throws: { error in
                "\(error)".contains("layer \(key.prefix(12)) was built again by another layerctl while this one read it")
            }
            #expect(!FileSystemProbe.exists("\(out)/\(format)"), "\(format)")
        }
        #expect(try indexes() == published)
        // Nothing of it stays: the next export writes what a store with an empty cache writes.
        _ = try export("gaming", store: store, to: out + "/after")
        _ = try export("gaming", store: store, to: out + "/uncached", ["--no-block-cache"])
        #expect(bytes(out + "/after") == bytes(out + "/uncached"))
        try Harness.expectValidStore(store)
    }
}
