import ArgumentParser
import LayerFS

@main
struct LayerCtl: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "layerctl",
        abstract: "Builds Linux systems from layer files, caches each layer by its content, and boots them read-only.")
}
