import Foundation
import Glibc
import LayerStore
import Testing

/// Store files cut short or edited by hand, a full disk or a bad copy: each command that meets one
/// says so in one line that names the file and what to do, exits 7 (damaged), and never writes a wrong
/// image; `gc` removes what is damaged, and a build or export makes it again.
@Suite("Damaged store files", .serialized, .enabled(if: Harness.canBuild, Harness.cannotBuildReason))
struct DamagedStoreTests {
    func expectOneLine(
        _ result: Harness.Result, naming path: String, saying words: String,
        sourceLocation: SourceLocation = #_sourceLocation
    ) {
        #expect(result.status == 7, "exit \(result.status): \(result.stderr)", sourceLocation: sourceLocation)
        let lines = result.stderr.split(separator: "\n")
        #expect(lines.count == 1, "\(result.stderr)", sourceLocation: sourceLocation)
        #expect(
            result.stderr.contains(path) && result.stderr.contains(words), "\(result.stderr)",
            sourceLocation: sourceLocation)
    }

    @Test("A layer.json cut short or edited, a ref that holds no key or a missing one, a damaged manifest")
    func damagedFiles() throws {
        let layers = try Harness.demoLayers()
        let root = try Harness.temporaryDirectory("store")
        #expect(try Harness.run(["build", layers + "/gaming.yaml", "--store", root]).status == 0)
        let store = try Store(root: root)
        let out = try Harness.temporaryDirectory("images")
        let good = try Harness.run([
            "export", "gaming", "--store", root, "-o", out + "/good", "--compression", "zstd:1",
        ])
        #expect(good.status == 0, "\(good.stderr)")
        let nvidia = try #require(try store.ref("nvidia"))
        let record = store.layerDirectory(nvidia) + "/layer.json"
        let pristine = try Data(contentsOf: URL(fileURLWithPath: record))

        // A record cut short, then one that names another layer: export, ls and inspect say so.
        let edited = String(decoding: pristine, as: UTF8.self).replacingOccurrences(
            of: nvidia, with: String(repeating: "0", count: 64))
        for (damage, words) in [
            (pristine.prefix(pristine.count / 2), "not a layer record (cut short or edited)"),
            (Data(edited.utf8), "it records layer 0000"),
        ] {
            try damage.write(to: URL(fileURLWithPath: record))
            let export = try Harness.run(["export", "gaming", "--store", root, "-o", out + "/bad"])
            expectOneLine(export, naming: record, saying: words)
            #expect(export.stderr.contains("run `layerctl gc`"), "\(export.stderr)")
            #expect(!FileManager.default.fileExists(atPath: out + "/bad"))
            let list = try Harness.run(["ls", "--store", root])
            expectOneLine(list, naming: record, saying: words)
            #expect(list.stdout.contains("base"), "the undamaged layers are still listed: \(list.stdout)")
        }
        // gc removes the damaged layer and the refs that stood on it; a build makes them again.
        let gc = try Harness.run(["gc", "--store", root])
        #expect(gc.status == 0 && gc.stdout.contains("repaired: \(record) is damaged"), "\(gc.stdout)\(gc.stderr)")
        try Harness.expectValidStore(root)
        #expect(try store.ref("base") != nil)
        let rebuilt = try Harness.run(["build", layers + "/gaming.yaml", "--store", root, "--json"])
        #expect(rebuilt.status == 0 && rebuilt.built == ["nvidia", "gaming"], "\(rebuilt.stderr)")

        // A ref cut short, and a ref to a layer the store does not hold; a build writes it again.
        let ref = root + "/refs/gaming"
        let key = try #require(try store.ref("gaming"))
        for (content, words) in [
            (String(key.prefix(30)), "it holds no layer key"),
            (
                String(repeating: "a", count: 64),
                "it names layer \(String(repeating: "a", count: 64)), which the store does not hold"
            ),
        ] {
            try (content + "\n").write(toFile: ref, atomically: false, encoding: .utf8)
            let export = try Harness.run(["export", "gaming", "--store", root, "-o", out + "/bad"])
            expectOneLine(export, naming: ref, saying: words)
            #expect(export.stderr.contains("build gaming again"), "\(export.stderr)")
            let build = try Harness.run(["build", layers + "/gaming.yaml", "--store", root])
            #expect(build.status == 0, "\(build.stderr)")
            #expect(try store.ref("gaming") == key)
        }

        // A layer removed by hand under its children: gc drops the refs that stood on it.
        let nvidiaKey = try #require(try store.ref("nvidia"))
        try FileManager.default.removeItem(atPath: store.layerDirectory(nvidiaKey))
        let orphaned = try Harness.run(["gc", "--store", root])
        #expect(orphaned.status == 0, "\(orphaned.stderr)")
        #expect(orphaned.stdout.contains("refs/gaming is damaged: its layer stands on layer \(nvidiaKey)"), "\(orphaned.stdout)")
        try Harness.expectValidStore(root)
        #expect(try Harness.run(["build", layers + "/gaming.yaml", "--store", root]).status == 0)

        // A manifest cut short: export refuses it; gc removes it; export makes it again.
        let manifest = store.manifestPath(key)
        let bytes = try Data(contentsOf: URL(fileURLWithPath: manifest))
        try bytes.prefix(bytes.count - 5).write(to: URL(fileURLWithPath: manifest))
        let export = try Harness.run(["export", "gaming", "--store", root, "-o", out + "/bad"])
        expectOneLine(export, naming: manifest, saying: "not a layer manifest (cut short or edited); run `layerctl gc`")
        #expect(!FileManager.default.fileExists(atPath: out + "/bad"))
        // A count of 4 billion entries after the magic: refused the same way, without first
        // asking for the memory they would take (which killed layerctl).
        var huge = bytes
        huge.replaceSubrange(8..<12, with: [0xFF, 0xFF, 0xFF, 0xFF])
        try huge.write(to: URL(fileURLWithPath: manifest))
        let hugeExport = try Harness.run(["export", "gaming", "--store", root, "-o", out + "/bad"])
        expectOneLine(hugeExport, naming: manifest, saying: "not a layer manifest (cut short or edited); run `layerctl gc`")
        let repair = try Harness.run(["gc", "--store", root])
        #expect(repair.stdout.contains("repaired: \(manifest) is damaged"), "\(repair.stdout)\(repair.stderr)")
        let again = try Harness.run([
            "export", "gaming", "--store", root, "-o", out + "/again", "--compression", "zstd:1",
        ])
        #expect(again.status == 0, "\(again.stderr)")
        #expect(try Data(contentsOf: URL(fileURLWithPath: manifest)) == bytes)
        #expect(
            FileManager.default.contents(atPath: out + "/again") == FileManager.default.contents(atPath: out + "/good"))
        try Harness.expectValidStore(root)
    }

    @Test("A tree that lost its files' data (a power cut before layers were synced): gc --verify removes it and the layers on it; a build makes them again")
    func damagedTree() throws {
        let layers = try Harness.demoLayers()
        let root = try Harness.temporaryDirectory("store")
        #expect(try Harness.run(["build", layers + "/gaming.yaml", "--store", root]).status == 0)
        let store = try Store(root: root)
        let base = try #require(try store.ref("base"))
        let nvidia = try #require(try store.ref("nvidia"))
        let gaming = try #require(try store.ref("gaming"))
        // What the power cut left: names and sizes recorded, the data gone.
        #expect(truncate(store.tree(nvidia) + "/usr/lib/nvidia/README", 0) == 0)

        let plain = try Harness.run(["gc", "--store", root])
        #expect(plain.status == 0 && !plain.stdout.contains("repaired"), "gc without --verify reads no tree: \(plain.stdout)")
        let out = try Harness.temporaryDirectory("images")
        let export = try Harness.run(["export", "gaming", "--store", root, "-o", out + "/image"])
        #expect(export.status != 0 && export.stderr.contains("gc --verify"), "\(export.stderr)")
        #expect(!FileManager.default.fileExists(atPath: out + "/image"))

        // A dry run finds the same, and leaves the refs and layers.
        let dry = try Harness.run(["gc", "--verify", "--dry-run", "--store", root])
        #expect(dry.stdout.contains("would repair: \(store.tree(nvidia)) (nvidia) is damaged"), "\(dry.stdout)")
        #expect(dry.stdout.contains("would remove \(nvidia)\n") && dry.stdout.contains("would remove \(gaming)\n"), "\(dry.stdout)")
        #expect(try store.refNames() == ["base", "gaming", "nvidia"] && store.contains(nvidia) && store.contains(gaming))
        let verify = try Harness.run(["gc", "--verify", "--store", root])
        #expect(verify.status == 0, "\(verify.stderr)")
        #expect(verify.stdout.contains("repaired: \(store.tree(nvidia)) (nvidia) is damaged"), "\(verify.stdout)")
        #expect(!verify.stdout.contains("(base)"), "base is whole: \(verify.stdout)")
        #expect(try store.refNames() == ["base"])
        #expect(store.contains(base) && !store.contains(nvidia) && !store.contains(gaming))
        try Harness.expectValidStore(root)

        let rebuild = try Harness.run(["build", layers + "/gaming.yaml", "--store", root, "--json"])
        #expect(rebuild.status == 0, "\(rebuild.stderr)")
        #expect(rebuild.built == ["nvidia", "gaming"] && rebuild.cached == ["base"])
        #expect(try Harness.run(["export", "gaming", "--store", root, "-o", out + "/image"]).status == 0)
        let again = try Harness.run(["gc", "--verify", "--store", root])
        #expect(!again.stdout.contains("repaired"), "\(again.stdout)")
    }
}
