import ArgumentParser
import LayerFS

extension LayerCtl {
    struct List: ParsableCommand {
        func run() throws {}
    }
}
