import Foundation
import Glibc
import LayerBuilder
import LayerEntries
import LayerStore
import Testing

/// The rules of DESIGN.md's layer key: a layer is rebuilt exactly when something that can change
/// its tree changed.
@Suite("Layer keys decide what is rebuilt", .serialized, .enabled(if: Harness.canBuild, Harness.cannotBuildReason))
struct KeyRuleTests {
    let layers: String
    let store: String

    init() throws {
        layers = try Harness.demoLayers()
        store = try Harness.temporaryDirectory("store")
        let first = try build()
        #expect(first.built == ["base", "nvidia", "gaming"], "\(first.stderr)")
    }

    func build(_ file: String = "gaming.yaml") throws -> Harness.Result {
        try Harness.run(["build", layers + "/" + file, "--store", store, "--json"])
    }

    @Test("(a) comments, key order and package order rebuild nothing")
    func cosmetic() throws {
        try Harness.edit(layers + "/gaming.yaml") { text in
            "# a new comment\n" + text
                .replacingOccurrences(of: "description: The game on the NVIDIA base, without nano\n", with: "")
                .replacingOccurrences(of: "packages: [game]", with: "packages:\n  - game\ndescription: The game, reordered")
        }
        try Harness.edit(layers + "/base.yaml") {
            $0.replacingOccurrences(of: "[filesystem, busybox, glibc, perl, nano, greeter]",
                                    with: "[greeter, nano, perl, glibc, busybox, filesystem]  # reordered")
        }
        let result = try build()
        #expect(result.status == 0, "\(result.stderr)")
        #expect(result.built.isEmpty)
        #expect(result.cached == ["base", "nvidia", "gaming"])
    }

    @Test("(b) editing gaming.yaml rebuilds gaming only")
    func topLayer() throws {
        try Harness.edit(layers + "/gaming.yaml") { $0 + "  - echo more > /etc/more\n" }
        let result = try build()
        #expect(result.built == ["gaming"], "\(result.stderr)")
        #expect(result.cached == ["base", "nvidia"])
    }

    @Test("(c) changing base's packages rebuilds all three layers")
    func rootLayer() throws {
        try Harness.edit(layers + "/base.yaml") { $0.replacingOccurrences(of: "greeter]", with: "greeter, demo-data]") }
        let result = try build()
        #expect(result.built == ["base", "nvidia", "gaming"], "\(result.stderr)")
    }

    @Test("(d, e) a new version of gaming's package rebuilds gaming; the repository change keeps base and nvidia")
    func repositoryUpgrade() throws {
        try Harness.setRepository(in: layers, to: "repo-next")
        let result = try build()
        #expect(result.built == ["gaming"], "\(result.stderr)")
        #expect(result.cached == ["base", "nvidia"])
        let storeHandle = try Store(root: store)
        let record = try storeHandle.record(try #require(try storeHandle.ref("gaming")))
        #expect(record.added.map(\.version) == ["1.1-1"])
    }

    @Test("(f) a changed source: file rebuilds its layer and the layers above it")
    func sourceFile() throws {
        try "options nvidia-drm modeset=0\n".write(toFile: layers + "/files/nvidia.conf", atomically: false, encoding: .utf8)
        let result = try build()
        #expect(result.built == ["nvidia", "gaming"], "\(result.stderr)")
        #expect(result.cached == ["base"])
    }

    /// A store that an older layerctl filled: records without the rules' version, and one tree
    /// that the older rules made otherwise (here a file this layerctl would not leave).
    @Test("(g) layers made under other builder rules are built again with the layers above them: a tree that comes out the same is kept, another replaced; keys stay")
    func builderRules() throws {
        let handle = try Store(root: store)
        let keys = try ["base", "nvidia", "gaming"].map { try #require(try handle.ref($0)) }
        func rewrite(_ key: String, _ change: (inout LayerRecord) throws -> Void) throws {
            var record = try handle.record(key)
            try change(&record)
            try record.encoded().write(to: URL(fileURLWithPath: handle.layerDirectory(key) + "/layer.json"))
        }
        for key in keys { try rewrite(key) { $0.rules = nil } }
        let older = handle.tree(keys[1]) + "/etc/older-rules"
        try FileManager.default.createDirectory(atPath: handle.tree(keys[1]) + "/etc", withIntermediateDirectories: true)
        try "left by older rules\n".write(toFile: older, atomically: false, encoding: .utf8)
        try FileManager.default.removeItem(atPath: handle.manifestPath(keys[1]))
        try rewrite(keys[1]) { record in
            let scan = try TreeScan.scan(handle.tree(keys[1]))
            (record.treeDigest, record.fileCount, record.treeBytes) = (scan.digest, scan.fileCount, scan.bytes)
        }
        var before = stat()
        #expect(stat(handle.tree(keys[0]), &before) == 0)

        let result = try build()
        #expect(result.status == 0 && result.built == ["base", "nvidia", "gaming"], "\(result.stdout)\(result.stderr)")
        let said = "made by another layerctl, under builder rules 1; this one's rules, \(BuilderRules.version), make some trees otherwise"
        #expect(result.stdout.components(separatedBy: said).count == 4, "\(result.stdout)")
        #expect(result.stdout.components(separatedBy: "the rebuilt tree differs from the stored one").count == 2, "\(result.stdout)")
        // The keys stay; base's tree, the same, is the one the store had; nvidia's is made anew.
        #expect(try ["base", "nvidia", "gaming"].map { try handle.ref($0) } == keys)
        var after = stat()
        #expect(stat(handle.tree(keys[0]), &after) == 0 && after.st_ino == before.st_ino)
        #expect(!FileManager.default.fileExists(atPath: older))
        for key in keys {
            let record = try handle.record(key)
            #expect(record.rules == BuilderRules.version)
            #expect(try TreeScan.scan(handle.tree(key)).digest == record.treeDigest)
        }
        #expect(try build().cached == ["base", "nvidia", "gaming"])

        // A layer a later layerctl made (a store shared with it) is built again too, alone.
        try rewrite(keys[2]) { $0.rules = BuilderRules.version + 1 }
        let downgrade = try build()
        #expect(downgrade.built == ["gaming"] && downgrade.cached == ["base", "nvidia"], "\(downgrade.stdout)")
        #expect(downgrade.stdout.contains("under builder rules \(BuilderRules.version + 1); this one's rules"), "\(downgrade.stdout)")
        try Harness.expectValidStore(store)
    }

    @Test("a sibling reuses its parents: development after gaming builds development only")
    func sibling() throws {
        let result = try build("development.yaml")
        #expect(result.built == ["development"], "\(result.stderr)")
    }
}
