import ArgumentParser
import Foundation
import LayerBuilder

extension LayerCtl {
    struct Shell: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "shell",
            abstract: "Opens a shell in a layer without changing it.",
            discussion: "The layer's stack is mounted under a tmpfs upper directory in private namespaces, so a user can try things in it. Everything written there is thrown away when the shell exits. With a command after --, it runs that command instead of an interactive /bin/sh and exits with its status: 127 when the layer has no such command, 126 when it cannot be run, as a shell does.")

        @Argument(help: "A layer file name, a full key, or a unique prefix of a key.")
        var layer: String

        @Argument(parsing: .postTerminator, help: "The command to run instead of an interactive shell.")
        var command: [String] = []

        @OptionGroup var storeOptions: StoreOptions

        @OptionGroup(title: "Limits") var limits: LimitArguments

        func run() throws {
            try NamespacedWork.requireHost("layerctl shell")
            let store = try storeOptions.openExisting()
            let status = try LayerShell.run(
                store: store, key: try store.resolve(layer), asked: layer, command: command, processes: limits.processes,
                memory: limits.memoryLimit
            ) { printNote("warning: \($0)") } notRun: { printNote($0) }
            throw ExitCode(status)
        }
    }
}
