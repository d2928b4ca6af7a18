import Foundation
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

    @Test("a sibling reuses its parents: development after gaming builds development only")
    func sibling() throws {
        let result = try build("development.yaml")
        #expect(result.built == ["development"], "\(result.stderr)")
    }
}
