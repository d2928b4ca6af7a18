import ArgumentParser
import Foundation
import LayerStore
import LayerSupport

extension LayerCtl {
    struct List: ParsableCommand, JSONCommand {
        static let configuration = CommandConfiguration(
            commandName: "ls",
            abstract: "Lists the layers the store knows by name.",
            discussion: "Each line shows a layer file name, the key last built (or pulled) for it, its parent's key, how many packages it installed and the size of its tree; a pulled layer also the image it came from.")

        @OptionGroup var storeOptions: StoreOptions

        @Flag(name: .long, help: "Print the list as a JSON array.")
        var json = false

        struct Row: Encodable {
            var name: String
            var key: String
            var parent: String?
            var packages: Int
            var treeBytes: Int64
            var fileCount: Int
            /// The image a pulled layer came from; nil for a layer built here.
            var pulledFrom: String?
        }

        func run() throws {
            let store = try storeOptions.openExisting()
            // A damaged ref or record is left out of the list and reported after it.
            var damaged: [String] = []
            let rows = try store.refNames().compactMap { name -> Row? in
                do {
                    guard let key = try store.ref(name) else { return nil }
                    let record = try store.record(try store.resolve(name))
                    return Row(name: name, key: key, parent: record.parent, packages: record.added.count,
                               treeBytes: record.treeBytes, fileCount: record.fileCount, pulledFrom: record.origin?.reference)
                } catch StoreError.privateLayers(let layers) {
                    // The user's, not the store's: said once, before anything is printed.
                    throw StoreError.privateLayers(layers)
                } catch {
                    damaged.append("\(error)")
                    return nil
                }
            }
            defer {
                for line in damaged { FileHandle.standardError.write(Data("layerctl: \(line)\n".utf8)) }
                if !damaged.isEmpty { Foundation.exit(LayerCtl.exitStatus(.damaged)) }
            }
            if json {
                try JSONOutput.print(rows)
                return
            }
            // The name column is as wide as the longest name, and two spaces more.
            let width = max(20, (rows.map(\.name.count).max() ?? 0) + 2)
            print("NAME".padding(toLength: width, withPad: " ", startingAt: 0) + "KEY           PARENT        PACKAGES  SIZE")
            for row in rows {
                print(
                    row.name.padding(toLength: width, withPad: " ", startingAt: 0)
                        + row.key.prefix(12) + "  " + (row.parent?.prefix(12) ?? "scratch     ") + "  "
                        + String(row.packages).padding(toLength: 10, withPad: " ", startingAt: 0)
                        + formatBytes(row.treeBytes) + (row.pulledFrom.map { "  pulled from \($0)" } ?? ""))
            }
        }
    }
}
