import Foundation
import LayerSupport

/// A CycloneDX 1.5 JSON document of a stack: the top layer is the document's component, each
/// layer a `container` component and each pacman package a `library` component, with the key of
/// the layer that installed it as the property `layerctl:layer`; dependencies follow the layers.
public enum CycloneDXDocument {
    public static func write(_ inventory: StackInventory, compact: Bool = false) throws -> Data {
        let top = inventory.top
        var components: [Component] = inventory.layers.dropLast().map(layerComponent)
        components += inventory.packages.map { package in
            Component(
                type: "library", bomRef: "package:" + package.name, name: package.name, version: package.version,
                description: package.about.description, publisher: package.about.packager,
                licenses: package.about.licenses.isEmpty ? nil : package.about.licenses.map { LicenseChoice(license: License(name: $0)) },
                hashes: package.sha256.map { [Hash(alg: "SHA-256", content: $0)] }, purl: StackInventory.purl(package),
                externalReferences: package.about.url.map { [ExternalReference(type: "website", url: $0)] },
                properties: [Property(name: "layerctl:layer", value: package.layer)]
                    + (package.filename.map { [Property(name: "layerctl:file", value: $0)] } ?? [])
                    + (package.repository.map { [Property(name: "layerctl:repository", value: $0)] } ?? []))
        }
        // A layer depends on its parent and on the packages it installed.
        let dependencies = inventory.layers.map { layer in
            let installed = inventory.packages.filter { $0.layer == layer.key }.map { "package:" + $0.name }
            return Dependency(ref: "layer:" + layer.key, dependsOn: (layer.parent.map { ["layer:" + $0] } ?? []) + installed)
        }.sorted { $0.ref < $1.ref }
        // A serial number of the top key: the same stack, the same document.
        let hex = Array(top.key.prefix(32))
        let uuid = [0..<8, 8..<12, 12..<16, 16..<20, 20..<32].map { String(hex[$0]) }.joined(separator: "-")
        let document = Document(
            serialNumber: "urn:uuid:" + uuid,
            metadata: Metadata(
                timestamp: inventory.created, tools: Tools(components: [Component(type: "application", bomRef: "tool:layerctl", name: "layerctl")]),
                component: layerComponent(top)),
            components: components, dependencies: dependencies)
        return try StackInventory.encode(document, compact: compact)
    }

    static func layerComponent(_ layer: StackInventory.Layer) -> Component {
        Component(
            type: "container", bomRef: "layer:" + layer.key, name: layer.name, version: layer.key,
            properties: [Property(name: "layerctl:key", value: layer.key)]
                + (layer.pulledFrom.map { [Property(name: "layerctl:pulled-from", value: $0)] } ?? []))
    }

    struct Document: Encodable {
        var bomFormat = "CycloneDX"
        var specVersion = "1.5"
        var serialNumber: String
        var version = 1
        var metadata: Metadata
        var components: [Component]
        var dependencies: [Dependency]
    }

    struct Metadata: Encodable {
        var timestamp: String
        var tools: Tools
        var component: Component
    }

    struct Tools: Encodable {
        var components: [Component]
    }

    struct Component: Encodable {
        var type: String
        var bomRef: String
        var name: String
        var version: String?
        var description: String?
        var publisher: String?
        var licenses: [LicenseChoice]?
        var hashes: [Hash]?
        var purl: String?
        var externalReferences: [ExternalReference]?
        var properties: [Property]?

        enum CodingKeys: String, CodingKey {
            case type, name, version, description, publisher, licenses, hashes, purl, externalReferences, properties
            case bomRef = "bom-ref"
        }
    }

    struct LicenseChoice: Encodable { var license: License }
    struct License: Encodable { var name: String }
    struct Hash: Encodable {
        var alg: String
        var content: String
    }
    struct ExternalReference: Encodable {
        var type: String
        var url: String
    }
    struct Property: Encodable {
        var name: String
        var value: String
    }
    struct Dependency: Encodable {
        var ref: String
        var dependsOn: [String]
    }
}
