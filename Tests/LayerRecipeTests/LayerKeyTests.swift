import Alpm
import Foundation
import LayerRecipe
import Testing

@Suite("Layer keys")
struct LayerKeyTests {
    func spec(packages: [String] = ["a", "b"], run: [String] = ["x", "y"]) -> LayerSpec {
        LayerSpec(arch: "x86_64", packages: packages.sorted(), remove: [], files: [], run: run, env: [], sourceDateEpoch: 0)
    }

    func package(_ name: String, _ version: String, _ sha: String) -> PackageFile {
        PackageFile(name: name, version: version, repository: "core", filename: "\(name).pkg", sha256: sha,
                    downloadSize: 1, installedSize: 1)
    }

    @Test("the key depends on the parent, the spec, the run order and the exact package files")
    func inputs() {
        let files = [package("a", "1-1", "aa"), package("b", "1-1", "bb")]
        let key = LayerKey.compute(parent: nil, spec: spec(), resolved: files)
        #expect(key.count == 64)
        #expect(key == LayerKey.compute(parent: nil, spec: spec(packages: ["b", "a"]), resolved: files.reversed()))
        #expect(key != LayerKey.compute(parent: "p", spec: spec(), resolved: files))
        #expect(key != LayerKey.compute(parent: nil, spec: spec(run: ["y", "x"]), resolved: files))
        #expect(key != LayerKey.compute(parent: nil, spec: spec(), resolved: [files[0], package("b", "1-1", "cc")]))
        #expect(key != LayerKey.compute(parent: nil, spec: spec(), resolved: [files[0], package("b", "2-1", "bb")]))
    }

    @Test("ignore: is in the key, in any order; a spec without it keeps the key it had before ignore: existed")
    func ignore() {
        func spec(ignore: [String]) -> LayerSpec {
            LayerSpec(arch: "x86_64", packages: [], remove: [], files: [], run: [], env: [], sourceDateEpoch: 0, upgrade: true, ignore: ignore)
        }
        let held = LayerKey.compute(parent: "p", spec: spec(ignore: ["linux", "nano"]), resolved: [])
        #expect(held == LayerKey.compute(parent: "p", spec: spec(ignore: ["nano", "linux"]), resolved: []))
        #expect(held != LayerKey.compute(parent: "p", spec: spec(ignore: ["linux"]), resolved: []))
        #expect(spec(ignore: []).ignore == nil)
    }

    /// A dependency update or a refactoring that changes the canonical encoding would silently
    /// change every key, and every store would build everything again: this value must not move.
    @Test("a known input gives a known key")
    func pinned() {
        let files = [package("a", "1-1", "aa"), package("b", "1-1", "bb")]
        let key = LayerKey.compute(parent: nil, spec: spec(), resolved: files)
        #expect(key == "5ca2d54d4e1be870a66b04795f644e938223fac6116725ffd047fbc308f32705")
    }
}
