import ArgumentParser
import Foundation
import LayerSupport

extension LayerCtl {
    struct Remove: ParsableCommand, JSONCommand {
        static let configuration = CommandConfiguration(
            commandName: "rm",
            abstract: "Removes names; gc then removes the layers no name reaches.",
            discussion: "A name is a layer file's (or a pulled image's) ref: `layerctl ls` lists them. Removing one leaves its layers in the store, where another name, a layer on them or the next build of the name may still use them; `layerctl gc` removes those no name reaches. A name that is not in the store is an error, and then none is removed. Staged images are apart: `layerctl unstage` removes them.")

        @Argument(help: "The names to remove.")
        var names: [String]

        @OptionGroup var storeOptions: StoreOptions

        @Flag(name: .long, help: "Print the names removed, each with the key it held, as JSON.")
        var json = false

        func run() throws {
            let removed = try storeOptions.openExisting().removeRefs(names)
            if json {
                struct Removed: Encodable {
                    var name: String
                    var key: String?
                }
                return try JSONOutput.print(["removed": removed.map { Removed(name: $0.name, key: $0.key) }])
            }
            for (name, key) in removed {
                print("removed \(name)" + (key.map { " (\($0.prefix(12)))" } ?? " (a damaged ref)"))
            }
            print("`layerctl gc` removes the layers no name reaches now")
        }
    }
}
