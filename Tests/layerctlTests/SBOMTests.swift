import Foundation
import LayerStore
import Testing

/// `layerctl sbom` writes SPDX 2.3 and CycloneDX 1.5 documents that their published JSON schemas
/// accept (kept in Fixtures/sbom-schemas), listing every package of the stack with the layer that
/// installed it, and the same bytes for the same stack.
@Suite("Bills of materials", .enabled(if: Harness.canBuild, Harness.cannotBuildReason))
struct SBOMTests {
    static let schemas = Harness.packageRoot + "/Tests/layerctlTests/Fixtures/sbom-schemas"

    /// Runs Debian's python3 (whose jsonschema install-deps.sh installs) on the validator.
    func validate(_ document: String, schema: String) throws -> (status: Int32, output: String) {
        try KernelMount.run("/usr/bin/python3", [Harness.packageRoot + "/scripts/validate-json-schema.py", Self.schemas + "/" + schema, document])
    }

    func object(_ path: String) throws -> [String: Any] {
        try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: path))) as? [String: Any] ?? [:]
    }

    @Test("SPDX and CycloneDX documents of the demo stack pass their schemas, name every package with its layer and file, and are the same bytes from another store")
    func documents() throws {
        let layers = try Harness.demoLayers()
        let store = try Harness.temporaryDirectory("sbom-store")
        let build = try Harness.run(["build", layers + "/gaming.yaml", "--store", store])
        #expect(build.status == 0, "\(build.stderr)")
        let work = try Harness.temporaryDirectory("sbom")
        let spdx = work + "/gaming.spdx.json"
        let cyclonedx = work + "/gaming.cdx.json"
        #expect(try Harness.run(["sbom", "gaming", "--store", store, "-o", spdx]).status == 0)
        #expect(try Harness.run(["sbom", "gaming", "--store", store, "--format", "cyclonedx", "-o", cyclonedx]).status == 0)
        let spdxCheck = try validate(spdx, schema: "spdx-2.3.schema.json")
        #expect(spdxCheck.status == 0, "\(spdxCheck.output)")
        let cyclonedxCheck = try validate(cyclonedx, schema: "bom-1.5.schema.json")
        #expect(cyclonedxCheck.status == 0, "\(cyclonedxCheck.output)")

        // What the store says: each layer's key, and the packages each one added.
        let records = try ["base", "nvidia", "gaming"].map { name -> LayerRecord in
            let inspect = try Harness.run(["inspect", name, "--store", store, "--json"])
            let decoder = JSONDecoder()
            decoder.dateDecodingStrategy = .iso8601
            return try decoder.decode(LayerRecord.self, from: Data(inspect.stdout.utf8))
        }
        let installed = records[2].installed
        #expect(installed.contains { $0.name == "game" } && !installed.contains { $0.name == "nano" })

        let document = try object(spdx)
        #expect(document["spdxVersion"] as? String == "SPDX-2.3")
        let packages = document["packages"] as? [[String: Any]] ?? []
        let relationships = (document["relationships"] as? [[String: String]] ?? []).map {
            "\($0["spdxElementId"] ?? "") \($0["relationshipType"] ?? "") \($0["relatedSpdxElement"] ?? "")"
        }
        for record in records {
            #expect(packages.contains { $0["SPDXID"] as? String == "SPDXRef-Layer-" + record.key && $0["name"] as? String == record.name })
            if let parent = record.parent {
                #expect(relationships.contains("SPDXRef-Layer-\(record.key) DESCENDANT_OF SPDXRef-Layer-\(parent)"))
            }
        }
        #expect(relationships.first == "SPDXRef-DOCUMENT DESCRIBES SPDXRef-Layer-\(records[2].key)")
        for package in installed {
            let entry = packages.first { $0["name"] as? String == package.name && $0["versionInfo"] as? String == package.version }
            #expect(entry != nil, "\(package.name)")
            // The layer that installed it CONTAINS it, and its file's sha256 is the one resolved.
            let owner = records.last { $0.added.contains { $0.name == package.name } }!
            let file = owner.added.first { $0.name == package.name }!
            #expect(relationships.contains("SPDXRef-Layer-\(owner.key) CONTAINS SPDXRef-Package-\(package.name)"), "\(package.name)")
            let checksums = entry?["checksums"] as? [[String: String]]
            #expect(checksums == [["algorithm": "SHA256", "checksumValue": file.sha256]], "\(package.name)")
            #expect(entry?["packageFileName"] as? String == file.filename)
            #expect(entry?["supplier"] as? String == "Person: layerctl demo (demo@layerctl.invalid)")
            #expect((entry?["homepage"] as? String)?.hasPrefix("https://") == true)
            #expect(entry?["licenseDeclared"] as? String == "LicenseRef-custom")
        }
        #expect(packages.count == installed.count + records.count)

        let bom = try object(cyclonedx)
        let components = bom["components"] as? [[String: Any]] ?? []
        for package in installed {
            let component = components.first { $0["bom-ref"] as? String == "package:" + package.name }
            let owner = records.last { $0.added.contains { $0.name == package.name } }!
            let properties = component?["properties"] as? [[String: String]] ?? []
            #expect(properties.contains(["name": "layerctl:layer", "value": owner.key]), "\(package.name)")
            #expect((component?["hashes"] as? [[String: String]])?.first?["content"] == owner.added.first { $0.name == package.name }?.sha256)
        }
        #expect(((bom["metadata"] as? [String: Any])?["component"] as? [String: Any])?["bom-ref"] as? String == "layer:" + records[2].key)

        // The same stack built in another store: the same documents, byte for byte.
        let other = try Harness.temporaryDirectory("sbom-other")
        #expect(try Harness.run(["build", layers + "/gaming.yaml", "--store", other]).status == 0)
        let again = try Harness.run(["sbom", "gaming", "--store", other])
        #expect(again.stdout == (try String(contentsOfFile: spdx, encoding: .utf8)))
        let againCycloneDX = try Harness.run(["sbom", "gaming", "--store", other, "--format", "cyclonedx"])
        #expect(againCycloneDX.stdout == (try String(contentsOfFile: cyclonedx, encoding: .utf8)))

        // The schemas can fail: a document without its version does not pass.
        var broken = document
        broken.removeValue(forKey: "spdxVersion")
        try JSONSerialization.data(withJSONObject: broken).write(to: URL(fileURLWithPath: work + "/broken.json"))
        let refused = try validate(work + "/broken.json", schema: "spdx-2.3.schema.json")
        #expect(refused.status == 1 && refused.output.contains("spdxVersion"), "\(refused.output)")

        let unknown = try Harness.run(["sbom", "nothing-here", "--store", store])
        #expect(unknown.status == 3 && unknown.stderr.split(separator: "\n").count == 1, "\(unknown.stderr)")
    }
}
