import ArgumentParser
import Foundation
import LayerBuilder
import LayerRecipe

extension LayerCtl {
    struct Build: ParsableCommand, JSONCommand {
        static let configuration = CommandConfiguration(
            abstract: "Builds a layer file and every layer it comes from.",
            discussion: """
                The layers are built root first. Each one is resolved with libalpm against its parent's packages, \
                and its key is the hash of its parent's key, its parsed content and the exact package files it \
                installs. A layer whose key is already in the store is reused; any other layer is built in a \
                private mount namespace and stored under its key. The ref of each layer file name is set to \
                the key just built, so `layerctl inspect NAME` finds it. With -o, the merged stack is then written \
                as an image, exactly as `layerctl export` writes it.
                """)

        @Argument(help: "The layer file to build, for example layers/gaming.yaml.")
        var file: String

        @OptionGroup var storeOptions: StoreOptions

        @Flag(name: .long, help: "Build every layer again, even the ones the store already holds.")
        var noCache = false

        @Flag(name: .long, help: "Fetch nothing: use the repository databases already in the store's cache.")
        var offline = false

        @Flag(name: .long, help: "Print one JSON object per event, and a summary at the end, instead of text.")
        var json = false

        @OptionGroup(title: "Image") var image: ImageArguments

        @Option(name: .long, help: "The GnuPG home with the keys that sign packages. It defaults to /etc/pacman.d/gnupg, as for pacman.")
        var keyring: String?

        func run() throws {
            let recipe = try Recipe.load(file)
            var options = BuildOptions(store: try storeOptions.open())
            options.noCache = noCache
            options.offline = offline
            if let keyring { options.keyring = URL(fileURLWithPath: keyring).standardizedFileURL.path }
            let reporter = BuildReporter(json: json)
            let built = try StackBuilder(options: options, observer: reporter.report).build(recipe)
            reporter.finish(built)
            if let output = image.output, let top = built.last {
                try image.export(store: options.store, key: top.key, output: output, json: json, inside: true)
            }
        }
    }
}
