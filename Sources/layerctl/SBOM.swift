import ArgumentParser
import Foundation
import LayerSBOM
import LayerSupport

extension LayerCtl {
    struct SBOM: ParsableCommand, JSONCommand {
        static let configuration = CommandConfiguration(
            commandName: "sbom",
            abstract: "Writes a bill of materials of a stack, in SPDX or CycloneDX.",
            discussion: """
                It lists the stack's layers with their keys, and every package installed at its top with its \
                version, licence, URL, packager, the sha256 of its package file and the layer that installed it. \
                It is read from the store alone, and the same stack gives the same bytes: its time is the stack's \
                SOURCE_DATE_EPOCH.
                """)

        @Argument(help: "A layer file name, a full key, or a unique prefix of a key: the top of the stack.")
        var layer: String

        @Option(help: "spdx (SPDX 2.3) or cyclonedx (CycloneDX 1.5).")
        var format: Format = .spdx

        @Option(name: .shortAndLong, help: "Write the document to this file (replaced in one rename) instead of standard output.")
        var output: String?

        @OptionGroup var storeOptions: StoreOptions

        @Flag(name: .long, help: "Write the document on one line, and a failure as {\"error\": …} on standard output, as every --json does.")
        var json = false

        enum Format: String, ExpressibleByArgument, CaseIterable {
            case spdx, cyclonedx
        }

        func run() throws {
            let inventory = try StackInventory.read(layer, store: try storeOptions.openExisting())
            let document = format == .spdx ? try SPDXDocument.write(inventory, compact: json) : try CycloneDXDocument.write(inventory, compact: json)
            if let output {
                try FileSystem.writeOutput(document, to: output)
            } else {
                FileHandle.standardOutput.write(document)
            }
        }
    }
}
