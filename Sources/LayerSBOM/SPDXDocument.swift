import Foundation
import LayerSupport

/// An SPDX 2.3 JSON document of a stack: one SPDX package per layer (its key as its version) and
/// one per pacman package, which the layer that installed it CONTAINS; each layer but the first
/// is a DESCENDANT_OF its parent, and the document DESCRIBES the top layer.
public enum SPDXDocument {
    public static func write(_ inventory: StackInventory, compact: Bool = false) throws -> Data {
        var packages: [Package] = []
        var relationships: [Relationship] = []
        var extracted: [String: ExtractedLicense] = [:]
        for layer in inventory.layers {
            packages.append(
                Package(
                    SPDXID: layerID(layer.key), name: layer.name, versionInfo: layer.key,
                    downloadLocation: layer.pulledFrom.map { "docker://" + $0 } ?? "NOASSERTION", primaryPackagePurpose: "CONTAINER",
                    comment: "A layerctl layer; its version is its key."))
            if let parent = layer.parent {
                relationships.append(Relationship(layerID(layer.key), "DESCENDANT_OF", layerID(parent)))
            }
        }
        for package in inventory.packages {
            let licence = licenceExpression(package.about.licenses, extracted: &extracted)
            packages.append(
                Package(
                    SPDXID: packageID(package.name), name: package.name, versionInfo: package.version,
                    downloadLocation: "NOASSERTION", primaryPackagePurpose: "LIBRARY",
                    homepage: package.about.url, licenseDeclared: licence, licenseConcluded: "NOASSERTION",
                    copyrightText: "NOASSERTION", supplier: supplier(package.about.packager), packageFileName: package.filename,
                    checksums: package.sha256.map { [Checksum(algorithm: "SHA256", checksumValue: $0)] },
                    summary: package.about.description,
                    sourceInfo: package.repository.map { "installed from the pacman repository \($0) by layer \(package.layer)" },
                    externalRefs: [ExternalRef(referenceCategory: "PACKAGE-MANAGER", referenceType: "purl", referenceLocator: StackInventory.purl(package))]))
            relationships.append(Relationship(layerID(package.layer), "CONTAINS", packageID(package.name)))
        }
        let top = inventory.top
        relationships.insert(Relationship("SPDXRef-DOCUMENT", "DESCRIBES", layerID(top.key)), at: 0)
        let document = Document(
            name: top.name, documentNamespace: "https://spdx.org/spdxdocs/layerctl-\(idPart(top.name))-\(top.key)",
            creationInfo: CreationInfo(created: inventory.created, creators: ["Tool: layerctl"]),
            packages: packages, relationships: relationships,
            hasExtractedLicensingInfos: extracted.isEmpty ? nil : extracted.values.sorted { $0.licenseId < $1.licenseId })
        return try StackInventory.encode(document, compact: compact)
    }

    static func layerID(_ key: String) -> String { "SPDXRef-Layer-" + key }

    /// A name that is not all identifier characters (`gtk+`) gets a digest of itself too, so two
    /// names never share an identifier.
    static func packageID(_ name: String) -> String {
        let part = idPart(name)
        return "SPDXRef-Package-" + part + (part == name ? "" : "-" + Digest.sha256(Data(name.utf8)).prefix(8))
    }

    /// An SPDX identifier is letters, digits, `.` and `-`.
    static func idPart(_ text: String) -> String {
        String(text.unicodeScalars.map { CharacterSet.alphanumerics.contains($0) && $0.isASCII || $0 == "." || $0 == "-" ? Character($0) : "-" })
    }

    /// Arch's licence words joined with AND. A word that is a licence identifier's shape stays
    /// (`MIT`, `GPL-2.0-or-later`); any other (`custom:foo`) becomes a LicenseRef with its text.
    static func licenceExpression(_ licences: [String], extracted: inout [String: ExtractedLicense]) -> String {
        guard !licences.isEmpty else { return "NOASSERTION" }
        let words = licences.map { licence -> String in
            // pacman's `custom` and `custom:NAME` name a licence of the package's own.
            if licence.wholeMatch(of: /[A-Za-z0-9][A-Za-z0-9.\-]*\+?/) != nil && licence != "custom" { return licence }
            let id = "LicenseRef-" + idPart(licence)
            extracted[id] = ExtractedLicense(licenseId: id, extractedText: "The licence the package names \"\(licence)\".", name: licence)
            return id
        }
        return words.count == 1 ? words[0] : words.map { $0.contains(" ") ? "(\($0))" : $0 }.joined(separator: " AND ")
    }

    /// pacman's `Name <mail>` as SPDX writes a person: `Person: Name (mail)`.
    static func supplier(_ packager: String?) -> String {
        guard let packager, !packager.isEmpty, packager != "Unknown Packager" else { return "NOASSERTION" }
        if let open = packager.lastIndex(of: "<"), packager.hasSuffix(">") {
            let name = packager[..<open].trimmingCharacters(in: .whitespaces)
            return "Person: \(name) (\(packager[packager.index(after: open)..<packager.index(before: packager.endIndex)]))"
        }
        return "Person: " + packager
    }

    struct Document: Encodable {
        var spdxVersion = "SPDX-2.3"
        var dataLicense = "CC0-1.0"
        var SPDXID = "SPDXRef-DOCUMENT"
        var name: String
        var documentNamespace: String
        var creationInfo: CreationInfo
        var packages: [Package]
        var relationships: [Relationship]
        var hasExtractedLicensingInfos: [ExtractedLicense]?
    }

    struct CreationInfo: Encodable {
        var created: String
        var creators: [String]
    }

    struct Package: Encodable {
        var SPDXID: String
        var name: String
        var versionInfo: String
        var downloadLocation: String
        var filesAnalyzed = false
        var primaryPackagePurpose: String
        var homepage: String?
        var licenseDeclared: String?
        var licenseConcluded: String?
        var copyrightText: String?
        var supplier: String?
        var packageFileName: String?
        var checksums: [Checksum]?
        var summary: String?
        var sourceInfo: String?
        var comment: String?
        var externalRefs: [ExternalRef]?
    }

    struct Checksum: Encodable {
        var algorithm: String
        var checksumValue: String
    }

    struct ExternalRef: Encodable {
        var referenceCategory: String
        var referenceType: String
        var referenceLocator: String
    }

    struct Relationship: Encodable {
        var spdxElementId: String
        var relationshipType: String
        var relatedSpdxElement: String

        init(_ element: String, _ type: String, _ related: String) {
            spdxElementId = element
            relationshipType = type
            relatedSpdxElement = related
        }
    }

    struct ExtractedLicense: Encodable {
        var licenseId: String
        var extractedText: String
        var name: String
    }
}
