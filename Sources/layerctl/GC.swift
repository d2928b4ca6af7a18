import ArgumentParser
import LayerFS

extension LayerCtl {
    struct GC: ParsableCommand {
        func run() throws {}
    }
}
