import ArgumentParser
import Foundation
import LayerFS

extension LayerCtl {
    struct Inspect: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Shows what the store knows about one layer.",
            discussion: "It prints the layer's key and parent, the packages it installed and removed with their versions, the size and file count of its tree, and how long its build took.")

        @Argument(help: "A layer file name, a full key, or a unique prefix of a key.")
        var layer: String

        @OptionGroup var storeOptions: StoreOptions

        @Flag(name: .long, help: "Print the layer's full record as JSON.")
        var json = false

        func run() throws {
            let store = try storeOptions.open()
            let record = try store.record(try store.resolve(layer))
            if json {
                print(try jsonText(record))
                return
            }
            print("name:       \(record.name)")
            print("key:        \(record.key)")
            print("parent:     \(record.parent ?? "scratch")")
            print("tree:       \(formatBytes(record.treeBytes)) in \(record.fileCount) entries, digest \(record.treeDigest.prefix(16))")
            print("built in:   \(String(format: "%.2f", record.buildSeconds)) s")
            print("installed:  \(record.added.count) packages (\(record.installed.count) in the whole stack)")
            for package in record.added {
                print("  + \(package.name) \(package.version)  (\(package.repository), sha256 \(package.sha256.prefix(12)))")
            }
            if !record.removed.isEmpty {
                print("removed:    \(record.removed.count) packages")
                for package in record.removed { print("  - \(package.name) \(package.version)") }
            }
        }
    }
}
