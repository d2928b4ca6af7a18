import ArgumentParser
import Foundation
import LayerBuilder
import LayerRecipe

extension LayerCtl {
    struct Lock: ParsableCommand, JSONCommand {
        static let configuration = CommandConfiguration(
            commandName: "lock",
            abstract: "Pins the packages of each layer of a chain in NAME.lock.",
            discussion: """
                A lock names the repositories (an Arch Linux Archive day, or servers), the architecture, what the layer \
                asks for, the parent it was resolved on, and one line per package the layer installs: repository, \
                name, version, file name and sha256. Each layer is resolved against the one below it, which is built \
                first when the store does not hold it.

                The packages a lock pins hold: when the repositories offer another version of one, lock fails and \
                names it. --update lets every package move to what the repositories offer now; `--update FILE PKG…` \
                moves the named packages and what they need. --snapshot DAY (with --update) locks the chain on that \
                Arch Linux Archive day, then writes the day into every `snapshot:` of its layer files, in place. \
                `layerctl build` follows the locks, and `build --locked` builds only what they pin.
                """)

        @Argument(help: "The layer file whose chain is locked, for example layers/gaming.yaml.")
        var file: String

        @Argument(help: "With --update: the packages to move, with what they need; without any, every package moves.")
        var packages: [String] = []

        @Flag(help: "Let packages move to the versions the repositories offer now.")
        var update = false

        @Option(help: "With --update: move every `snapshot:` repository of the chain to this Arch Linux Archive day (YYYY-MM-DD).")
        var snapshot: String?

        @OptionGroup(title: "Registry") var registryArguments: RegistryArguments

        @OptionGroup var storeOptions: StoreOptions

        @OptionGroup(title: "Packages") var packageArguments: PackageArguments

        @Flag(name: .long, help: "Print one JSON object per event, and a summary at the end, instead of text.")
        var json = false

        func run() throws {
            try NamespacedWork.requireHost("layerctl lock")
            let store = try storeOptions.open()
            var recipe = try Recipe.load(file)
            var options = try packageArguments.options(store: store)
            if let snapshot {
                guard update else {
                    throw ValidationError("--snapshot moves the whole chain: give it with --update")
                }
                // Built and locked on the new day first; the layer files say it once that stands.
                recipe = try recipe.withSnapshots(at: snapshot)
            }
            guard update || packages.isEmpty else { throw ValidationError("naming packages moves them: give them with --update") }
            options.locks = .write(update: !update ? .none : packages.isEmpty || snapshot != nil ? .all : .packages(Set(packages)))
            let reporter = BuildReporter(json: json)
            let builder = StackBuilder(options: options, observer: reporter.report)
            builder.pullImage = registryArguments.basePuller(store: store, json: json, offline: false)
            let built = try builder.build(recipe)
            // The chain stands on the new day: the layer files say so now.
            if let snapshot {
                for path in try recipe.moveSnapshots(to: snapshot) {
                    reporter.report(BuildEvent(.step, layer: built.last?.name ?? "", message: "\(path): snapshot \(snapshot)"))
                }
            }
            reporter.finish(built)
        }
    }
}
