import ArgumentParser
import LayerFS

extension LayerCtl {
    struct Shell: ParsableCommand {
        func run() throws {}
    }
}
