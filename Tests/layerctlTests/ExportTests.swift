import Foundation
import Glibc
import LayerStore
import Testing

/// `layerctl export` and `build -o`: the same bytes every time, an image that appears whole or not
/// at all, the block cache, the tar and dir formats, and clear errors.
@Suite("Exporting images", .serialized, .enabled(if: Harness.canBuild, Harness.cannotBuildReason))
struct ExportTests {
    /// Builds the demo gaming stack into a new store and returns the store.
    func demoStore(_ name: String = "store", layers: String? = nil) throws -> String {
        let folder = try layers ?? Harness.demoLayers()
        let store = try Harness.temporaryDirectory(name)
        let build = try Harness.run(["build", folder + "/gaming.yaml", "--store", store])
        #expect(build.status == 0, "\(build.stderr)")
        return store
    }

    func export(
        _ layer: String, store: String, to output: String, _ extra: [String] = [],
        sourceLocation: SourceLocation = #_sourceLocation
    ) throws -> Harness.Result {
        let result = try Harness.run(["export", layer, "--store", store, "-o", output] + extra)
        #expect(result.status == 0, "\(result.stderr)", sourceLocation: sourceLocation)
        return result
    }

    func bytes(_ path: String) -> Data { FileManager.default.contents(atPath: path) ?? Data() }

    /// Runs layerctl with `arguments` and sends it SIGKILL after `microseconds`, while it still runs.
    func killed(_ arguments: [String], after microseconds: UInt32, sourceLocation: SourceLocation = #_sourceLocation)
        throws
    {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: Harness.executable)
        process.arguments = arguments
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        usleep(microseconds)
        #expect(process.isRunning, "the export finished before it could be killed", sourceLocation: sourceLocation)
        kill(process.processIdentifier, SIGKILL)
        process.waitUntilExit()
    }

    @Test("The same stack gives the same bytes at 1 and 2 workers, on every run, in any store, under any umask")
    func reproducible() throws {
        let first = try demoStore("store-one")
        let second = try demoStore("store-two")
        let out = try Harness.temporaryDirectory("images")
        _ = try export("gaming", store: first, to: out + "/one-job", ["--jobs", "1", "--no-block-cache"])
        _ = try export("gaming", store: first, to: out + "/two-jobs", ["--jobs", "2", "--no-block-cache"])
        _ = try export("gaming", store: first, to: out + "/cached", ["--jobs", "2"])
        _ = try export("gaming", store: first, to: out + "/from-cache", ["--jobs", "2"])
        let masked = try KernelMount.run(
            "/bin/sh",
            [
                "-c",
                "umask 077 && exec '\(Harness.executable)' export gaming --store '\(second)' -o '\(out)/other-store'",
            ])
        #expect(masked.status == 0, "\(masked.output)")
        let reference = bytes(out + "/one-job")
        #expect(reference.count > 1_000_000)
        for name in ["two-jobs", "cached", "from-cache", "other-store"] {
            #expect(bytes(out + "/" + name) == reference, "\(name) differs from the export with one worker")
        }
        var st = stat()
        #expect(
            stat(out + "/other-store", &st) == 0 && st.st_mode & 0o777 == 0o644, "the umask changed the image's mode")
        _ = try export("gaming", store: first, to: out + "/one.tar", ["--format", "tar"])
        _ = try export("gaming", store: second, to: out + "/two.tar", ["--format", "tar"])
        #expect(bytes(out + "/one.tar") == bytes(out + "/two.tar"))
    }

    @Test("build -o writes the image of the stack it built, the same as export")
    func buildWritesTheImage() throws {
        let layers = try Harness.demoLayers()
        let store = try Harness.temporaryDirectory("store")
        let out = try Harness.temporaryDirectory("images")
        let build = try Harness.run(["build", layers + "/gaming.yaml", "--store", store, "-o", out + "/built.squashfs"])
        #expect(build.status == 0, "\(build.stderr)")
        _ = try export("gaming", store: store, to: out + "/exported.squashfs", ["--no-block-cache"])
        // Builds record their opaque directories, so the merge needs no privilege to find them.
        let records = try Store(root: store)
        for name in ["base", "nvidia", "gaming"] {
            #expect(try records.record(try #require(try records.ref(name))).opaqueDirectories != nil, "\(name)")
        }
        #expect(bytes(out + "/built.squashfs") == bytes(out + "/exported.squashfs"))
        let mounted = try KernelMount.squashfs(out + "/built.squashfs")
        defer { KernelMount.unmount(mounted) }
        #expect(try String(contentsOfFile: mounted + "/etc/greeting", encoding: .utf8) == "hello from gaming\n")
        #expect(!FileManager.default.fileExists(atPath: mounted + "/usr/bin/nano"))

        // The oracle on real built layers: the image is the kernel's overlay of the three trees.
        let lowerdir = try ["gaming", "nvidia", "base"].map { records.tree(try #require(try records.ref($0))) }
            .joined(separator: ":")
        let overlay = try KernelMount.overlay(lowerdir: lowerdir)
        defer { KernelMount.unmount(overlay) }
        let differences = try TreeSnapshot(overlay).differences(from: try TreeSnapshot(mounted))
        #expect(differences.isEmpty, "overlay (-) and image (+) differ:\n\(differences.joined(separator: "\n"))")

        // A build that fails leaves the last good image in place.
        let good = bytes(out + "/built.squashfs")
        try Harness.edit(layers + "/gaming.yaml") { $0 + "  - exit 7\n" }
        let failed = try Harness.run([
            "build", layers + "/gaming.yaml", "--store", store, "-o", out + "/built.squashfs",
        ])
        #expect(failed.status == 6, "\(failed.stderr)")  // a build step failed
        #expect(bytes(out + "/built.squashfs") == good)
        #expect(
            try FileManager.default.contentsOfDirectory(atPath: out).sorted() == [
                "built.squashfs", "exported.squashfs",
            ])
    }

    @Test("A built layer with hard links in any order and removed packages exports in every format")
    func builtHardLinks() throws {
        let layers = try Harness.demoLayers()
        // The link's first name depth-first (/x/a/f) is not its first breadth-first (/x/z); removing
        // perl leaves many whiteouts, which overlayfs makes hard links of one another.
        try """
        from: base
        remove: [perl, nano]
        run:
          - mkdir -p /x/a && echo hi > /x/a/f && ln /x/a/f /x/z
        """.write(toFile: layers + "/links.yaml", atomically: true, encoding: .utf8)
        let store = try Harness.temporaryDirectory("store")
        let out = try Harness.temporaryDirectory("images")
        let build = try Harness.run(["build", layers + "/links.yaml", "--store", store, "-o", out + "/links.squashfs"])
        #expect(build.status == 0, "\(build.stderr)")
        _ = try export("links", store: store, to: out + "/links.tar", ["--format", "tar"])
        _ = try export("links", store: store, to: out + "/tree", ["--format", "dir"])
        let records = try Store(root: store)
        let lowerdir = try ["links", "base"].map { records.tree(try #require(try records.ref($0))) }
        var whiteoutLinks = 0
        for path in ["/usr/bin/perl", "/usr/bin/nano"] {
            var st = stat()
            #expect(lstat(lowerdir[0] + path, &st) == 0 && (st.st_mode & S_IFMT) == S_IFCHR, "\(path)")
            whiteoutLinks = max(whiteoutLinks, Int(st.st_nlink))
        }
        #expect(whiteoutLinks >= 3, "the whiteouts of removed files share an inode")
        let overlay = try KernelMount.overlay(lowerdir: lowerdir.joined(separator: ":"))
        defer { KernelMount.unmount(overlay) }
        let mounted = try KernelMount.squashfs(out + "/links.squashfs")
        defer { KernelMount.unmount(mounted) }
        let expected = try TreeSnapshot(overlay)
        #expect(expected.entries["/x/z"]?.contains("links=/x/a/f") == true, "\(expected.entries["/x/z"] ?? "")")
        for (what, tree) in [("image", mounted), ("dir", out + "/tree")] {
            let actual = try TreeSnapshot(tree)
            let differences = expected.differences(from: actual)
            #expect(differences.isEmpty, "overlay (-) and \(what) (+):\n\(differences.joined(separator: "\n"))")
            #expect(actual.linkCountMismatches.isEmpty, "\(what): \(actual.linkCountMismatches)")
        }
        let listing = try KernelMount.run("/bin/tar", ["-tvf", out + "/links.tar", "x/z", "x/a/f"])
        #expect(listing.output.contains("x/z link to x/a/f"), "\(listing.output)")
    }

    @Test("A file name that is not UTF-8 survives the build, the image, and gc")
    func nonUTF8Names() throws {
        let layers = try Harness.demoLayers()
        let original = try String(contentsOfFile: layers + "/gaming.yaml", encoding: .utf8)
        try Harness.edit(layers + "/gaming.yaml") { $0 + "  - touch \"/etc/latin1-$(printf '\\351')\"\n" }
        let store = try Harness.temporaryDirectory("store")
        let out = try Harness.temporaryDirectory("images")
        let build = try Harness.run(["build", layers + "/gaming.yaml", "--store", store, "-o", out + "/image"])
        #expect(build.status == 0, "\(build.stderr)")
        let oddKey = try #require(try Store(root: store).ref("gaming"))
        let mounted = try KernelMount.squashfs(out + "/image")
        let names = try TreeSnapshot(mounted).entries.keys
        KernelMount.unmount(mounted)
        #expect(names.contains("/etc/latin1-\\xe9"), "\(names.filter { $0.hasPrefix("/etc/latin") })")

        // Built again without it, the old gaming layer is garbage, and gc removes its odd name too.
        try original.write(toFile: layers + "/gaming.yaml", atomically: true, encoding: .utf8)
        #expect(try Harness.run(["build", layers + "/gaming.yaml", "--store", store]).status == 0)
        let gc = try Harness.run(["gc", "--store", store])
        #expect(gc.status == 0, "\(gc.stderr)")
        #expect(!FileManager.default.fileExists(atPath: store + "/layers/" + oddKey))
    }

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

    @Test("Each built layer has a manifest; a damaged one is an error naming it, a missing one is made again")
    func manifests() throws {
        let store = try demoStore()
        let out = try Harness.temporaryDirectory("images")
        let keys = try Store(root: store).chain(try #require(try Store(root: store).ref("gaming")))
        for key in keys {
            #expect(FileManager.default.fileExists(atPath: store + "/layers/" + key + "/manifest"), "\(key)")
        }
        _ = try export("gaming", store: store, to: out + "/first", ["--no-block-cache"])

        let manifest = store + "/layers/" + keys[1] + "/manifest"
        let original = bytes(manifest)
        try original.prefix(original.count / 2).write(to: URL(fileURLWithPath: manifest))
        let damaged = try Harness.run(["export", "gaming", "--store", store, "-o", out + "/damaged"])
        #expect(damaged.status == 7)  // damaged
        #expect(damaged.stderr.contains(manifest) && damaged.stderr.contains("damaged"), "\(damaged.stderr)")
        #expect(!FileManager.default.fileExists(atPath: out + "/damaged"))

        // A layer stored before manifests were kept: its first export walks the tree and keeps one.
        try FileManager.default.removeItem(atPath: manifest)
        _ = try export("gaming", store: store, to: out + "/again", ["--no-block-cache"])
        #expect(bytes(manifest) == original)
        #expect(bytes(out + "/again") == bytes(out + "/first"))
    }

    @Test("Peak memory does not grow with the size of the file data")
    func boundedMemory() throws {
        // The peak RSS of exporting a stack of one file of `megabytes` of random data, in KiB.
        func peak(_ megabytes: Int) throws -> Int {
            let stack = try CraftedStack("memory-\(megabytes)")
            try stack.layer("data") { t in
                try t.file("random")
                let made = try KernelMount.run(
                    "/bin/sh", ["-c", "head -c \(megabytes)M /dev/urandom > '\(t.root)/random'"])
                #expect(made.status == 0, "\(made.output)")
            }
            let out = try Harness.temporaryDirectory("memory")
            let run = try KernelMount.run(
                "/usr/bin/time",
                [
                    "-f", "%M", "-o", out + "/rss", Harness.executable, "export", "data", "--store", stack.store, "-o",
                    out + "/image", "--compression", "lz4", "--jobs", "2",
                ])
            #expect(run.status == 0, "\(run.output)")
            let text = try String(contentsOfFile: out + "/rss", encoding: .utf8)
            return try #require(Int(text.trimmingCharacters(in: .whitespacesAndNewlines)))
        }
        // From a few hundred MiB on, the peak is the same (60 MB here, about 14 MB of it the window of
        // units in flight); below that, the heaps are still growing to it.
        let small = try peak(256)
        let large = try peak(1024)
        #expect(large < small + 16 * 1024, "peak RSS: \(small) KiB for 256 MiB of data, \(large) KiB for 1 GiB")
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

    @Test("kill -9 during an export leaves no file at the output path, and an older image there stays")
    func killedExport() throws {
        let store = try demoStore()
        let out = try Harness.temporaryDirectory("images")
        for existing in [false, true] {
            let target = out + (existing ? "/existing.squashfs" : "/new.squashfs")
            if existing { _ = try export("gaming", store: store, to: target, ["--compression", "lz4"]) }
            let before = bytes(target)
            try killed(
                [
                    "export", "gaming", "--store", store, "-o", target, "--compression", "xz:9", "--jobs", "1",
                    "--no-block-cache",
                ], after: 1_500_000)
            #expect(
                bytes(target) == before, existing ? "the older image changed" : "a file appeared at the output path")
            let names = try FileManager.default.contentsOfDirectory(atPath: out).sorted()
            #expect(names == (existing ? ["existing.squashfs"] : []), "left behind: \(names)")
        }
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

    @Test("The dir and tar formats hold the same tree as the kernel's overlay of the stack")
    func directoryAndTar() throws {
        let stack = try CraftedStack("formats")
        try stack.layer("bottom") { t in
            try t.directory("data")
            try t.file("data/linked", "two names\n", mode: 0o640, owner: (12, 34))
            try t.hardLink("data/linked-2", to: "data/linked")
            try t.file("data/hidden", "whited out\n")
            try t.xattr("data/linked", "user.tag", Array("kept".utf8))
        }
        try stack.layer("top") { t in
            try t.directory("data", mode: 0o750)
            try t.whiteout("data/hidden")
            try t.directory("dev")
            try t.device("dev/null", character: true, major: 1, minor: 3, mode: 0o666)
            try t.fifo("dev/fifo")
            try t.socket("dev/socket")
            try t.symlink("data/link", to: "linked")
            try t.sparse("data/sparse", size: 3 << 20, data: "middle", at: 1 << 20)
            try t.file(Array("data/odd-".utf8) + [0xFF], Array("not UTF-8\n".utf8))
        }
        let out = try Harness.temporaryDirectory("formats")
        _ = try export("top", store: stack.store, to: out + "/tree", ["--format", "dir"])
        let tar = try export("top", store: stack.store, to: out + "/tree.tar", ["--format", "tar"])
        #expect(tar.stderr.contains("tar cannot store sockets: left out 1, first /dev/socket"), "\(tar.stderr)")
        try FileManager.default.createDirectory(atPath: out + "/extracted", withIntermediateDirectories: false)
        let extract = try KernelMount.run(
            "/bin/tar",
            ["--xattrs", "--xattrs-include=*", "--numeric-owner", "-xpf", out + "/tree.tar", "-C", out + "/extracted"])
        #expect(extract.status == 0, "\(extract.output)")

        let overlay = try KernelMount.overlay(lowerdir: stack.lowerdir())
        defer { KernelMount.unmount(overlay) }
        let expected = try TreeSnapshot(overlay)
        let directory = try TreeSnapshot(out + "/tree")
        #expect(
            expected.differences(from: directory).isEmpty,
            "\(expected.differences(from: directory).joined(separator: "\n"))")
        var withoutSocket = expected
        withoutSocket.entries["/dev/socket"] = nil
        // The tar's `./` entry carries the root's mode, owner and time.
        let extracted = try TreeSnapshot(out + "/extracted")
        #expect(
            withoutSocket.differences(from: extracted).isEmpty,
            "\(withoutSocket.differences(from: extracted).joined(separator: "\n"))")

        // A sparse file stays sparse: 3 MiB long, one block of data.
        var sparse = stat()
        #expect(lstat(out + "/tree/data/sparse", &sparse) == 0 && sparse.st_size == 3 << 20)
        #expect(sparse.st_blocks * 512 <= 64 << 10, "\(sparse.st_blocks) blocks allocated")

        let again = try Harness.run(["export", "top", "--store", stack.store, "-o", out + "/tree", "--format", "dir"])
        #expect(again.status == 3 && again.stderr.contains("File exists"), "\(again.stderr)")
    }

    @Test("Timestamps are clamped to SOURCE_DATE_EPOCH, which is also the superblock's time")
    func clampedTimes() throws {
        let stack = try CraftedStack("epoch")
        try stack.layer("only") { t in
            try t.directory("etc", mtime: 1_650_000_000)
            try t.file("etc/old", "old\n", mtime: 1_500_000_000)
            try t.file("etc/new", "new\n", mtime: 1_700_000_000)
        }
        let out = try Harness.temporaryDirectory("images")
        let epoch = 1_600_000_000
        let result = try Harness.run(
            ["export", "only", "--store", stack.store, "-o", out + "/image"],
            environment: ["SOURCE_DATE_EPOCH": "\(epoch)"])
        #expect(result.status == 0, "\(result.stderr)")
        let image = bytes(out + "/image")
        let superblockTime =
            image.count > 12 ? image[8..<12].enumerated().reduce(0) { $0 | Int($1.element) << (8 * $1.offset) } : 0
        #expect(superblockTime == epoch)
        let mounted = try KernelMount.squashfs(out + "/image")
        defer { KernelMount.unmount(mounted) }
        let snapshot = try TreeSnapshot(mounted)
        #expect(snapshot.entries["/etc/old"]?.contains("mtime=1500000000") == true)
        #expect(snapshot.entries["/etc/new"]?.contains("mtime=\(epoch)") == true)
        #expect(snapshot.entries["/etc"]?.contains("mtime=\(epoch)") == true)
    }

    @Test("Bad arguments and outputs each give one clear error")
    func badInput() throws {
        let stack = try CraftedStack("errors")
        try stack.layer("only") { t in try t.file("file", "content\n") }
        let out = try Harness.temporaryDirectory("images")
        let cases: [([String], Int32, String)] = [
            (["export", "nosuch", "-o", out + "/x"], 3, "nosuch"),
            (["export", "only", "-o", out + "/missing/dir/image"], 3, out + "/missing/dir"),
            (["export", "only"], 2, "-o"),
            (["export", "only", "-o", out + "/x", "--compression", "brotli"], 2, "unknown compressor 'brotli'"),
            (["export", "only", "-o", out + "/x", "--compression", "zstd:99"], 2, "out of range"),
            (["export", "only", "-o", out + "/x", "--block-size", "3K"], 2, "power of two"),
            (["export", "only", "-o", out + "/x", "--format", "zip"], 2, "unknown format 'zip'"),
            (["export", "only", "-o", out], 3, "Is a directory"),
        ]
        for (arguments, status, message) in cases {
            let result = try Harness.run(arguments + ["--store", stack.store])
            #expect(result.status == status, "\(arguments): \(result.stderr)")
            #expect(result.stderr.contains(message), "\(arguments): \(result.stderr)")
            #expect(result.stderr.split(separator: "\n").count <= 3, "\(arguments): \(result.stderr)")
        }
        #expect(try FileManager.default.contentsOfDirectory(atPath: out).isEmpty)
    }
}
