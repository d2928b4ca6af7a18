import ArgumentParser
import Foundation
import LayerFS

@main
struct LayerCtl: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "layerctl",
        abstract: "Builds Arch Linux systems from layer files, caches each layer by its content, and boots them read-only.",
        discussion: """
            A system is a chain of layer files: base.yaml, then nvidia.yaml with `from: base`, then gaming.yaml \
            with `from: nvidia`. `layerctl build gaming.yaml` builds each layer with libalpm in its own mount \
            namespace and keeps it in the store, so the next build reuses every layer that did not change.
            """,
        subcommands: [Build.self, List.self, Inspect.self, Shell.self, GC.self, BuildLayer.self, ShellChild.self])

    /// Exit statuses: 0 success, 1 "differences" (diff), 2 usage, 3 and above errors.
    static func main() {
        do {
            var command = try parseAsRoot()
            try command.run()
        } catch let error as ExitCode {
            Foundation.exit(error.rawValue)
        } catch let error as CleanExit {
            exit(withError: error)
        } catch let error where isUsageError(error) {
            FileHandle.standardError.write(Data((fullMessage(for: error) + "\n").utf8))
            Foundation.exit(2)
        } catch {
            FileHandle.standardError.write(Data("layerctl: error: \(error)\n".utf8))
            Foundation.exit(3)
        }
    }

    private static func isUsageError(_ error: Error) -> Bool {
        exitCode(for: error) == .validationFailure && !(error is LayerFileError) && !(error is BuildFailure)
            && !(error is StoreError)
    }
}

/// The store option every command shares.
struct StoreOptions: ParsableArguments {
    @Option(
        name: .long,
        help: "The store that holds built layers. It defaults to $LAYERCTL_STORE, or /var/lib/layerctl when that is unset.")
    var store: String?

    func open() throws -> Store { try Store(root: Store.locate(store)) }
}
