import ArgumentParser
import LayerFS

extension LayerCtl {
    struct Inspect: ParsableCommand {
        func run() throws {}
    }
}
