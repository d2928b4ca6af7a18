import ArgumentParser
import Foundation
import LayerSupport

extension LayerCtl {
    struct Inspect: ParsableCommand, JSONCommand {
        static let configuration = CommandConfiguration(
            commandName: "inspect",
            abstract: "Shows what the store knows about one layer.",
            discussion: "It prints the layer's key and parent, the packages it installed and removed with their versions, the size and file count of its tree, how long its build took, and whether its run: commands had the network.")

        @Argument(help: "A layer file name, a full key, or a unique prefix of a key.")
        var layer: String

        @OptionGroup var storeOptions: StoreOptions

        @Flag(name: .long, help: "Print the layer's full record as JSON.")
        var json = false

        /// A line of the record, which a pulled layer's image wrote: with no control character
        /// left to forge a line or drive the terminal.
        private func show(_ line: String) { print(RawPath.printable(line)) }

        func run() throws {
            let store = try storeOptions.openExisting()
            let key = try store.resolve(layer)
            let record = try store.record(key)
            if json {
                try JSONOutput.print(record)
                return
            }
            // Layer files with the same content share a key: the names are the refs that point at
            // it, the one asked for first; the record's name is the first one it was built for.
            // Another ref that is damaged is no reason to fail here: `ls` and `gc` report it.
            var names = try store.refNames().filter { (try? store.ref($0)) == key }
            if let asked = names.firstIndex(of: layer) { names.insert(names.remove(at: asked), at: 0) }
            if names.isEmpty { names = [record.name] }
            show("name:       \(names[0])" + (names.count > 1 ? " (also " + names.dropFirst().joined(separator: ", ") + ")" : ""))
            show("key:        \(record.key)")
            show("parent:     \(record.parent ?? "scratch")")
            if let image = record.image { show("from image: \(image)") }
            show("tree:       \(formatBytes(record.treeBytes)) in \(counted(record.fileCount, "entry", plural: "entries")), digest \(record.treeDigest.prefix(16))")
            if let origin = record.origin {
                show("pulled from: \(origin.reference)")
                show("blob:       \(origin.blobDigest) (diff_id \(origin.diffID))")
                // An image's layer says no more; a build cache's layer is stored under its key, with
                // the record of the build that made it.
                guard origin.claimedKey == key else {
                    if let claimed = origin.claimedKey { show("claims key: \(claimed) (unchecked)") }
                    return
                }
            } else {
                // Records written before the rules' version was kept were made under the first.
                show("built in:   \(String(format: "%.2f", record.buildSeconds)) s, under builder rules \(record.rules ?? 1)")
            }
            show("network:    " + (record.network == true ? "the host's, for run: (network: true)" : "none: loopback only"))
            show("installed:  \(counted(record.added.count, "package")) (\(record.installed.count) in the whole stack)")
            for package in record.added {
                show("  + \(package.name) \(package.version)  (\(package.repository), sha256 \(package.sha256.prefix(12)))")
            }
            if !record.removed.isEmpty {
                show("removed:    \(counted(record.removed.count, "package"))")
                for package in record.removed { show("  - \(package.name) \(package.version)") }
            }
        }
    }
}
