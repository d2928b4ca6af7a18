import ArgumentParser
import Foundation
import LayerBuilder

extension LayerCtl {
    /// The builder child; `layerctl build` starts it, a person never does.
    struct BuildLayer: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: BuilderChild.subcommand,
            abstract: "Builds one layer inside its own namespaces; layerctl build runs this itself.",
            shouldDisplay: false)

        @Flag(name: .customLong("inner"), help: "Run as the second stage, inside the new namespaces.")
        var inner = false

        @Argument(help: "The job file that describes the layer to build.")
        var job: String

        func run() throws {
            let status = inner ? BuilderChild.build(jobPath: job) : BuilderChild.enterNamespaces(jobPath: job)
            throw ExitCode(status)
        }
    }
}
