import ArgumentParser
import Foundation
import LayerBuilder
import LayerStore
import LayerSupport

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
        version: versionText,
        subcommands: [Build.self, Lock.self, Export.self, SBOM.self, Push.self, Pull.self, Diff.self, VM.self, Stage.self, Boot.self, Staged.self, Unstage.self, Changes.self, List.self, Inspect.self, Shell.self, Remove.self, GC.self])

    /// Exit statuses: 0 success, 1 "differences" (diff), 2 a usage mistake, and from 3 each kind of
    /// error (the README lists them).
    static func exitStatus(_ code: ErrorCode) -> Int32 {
        switch code {
        case .input: 3
        case .privilege: 4
        case .packages: 5
        case .build: 6
        case .damaged: 7
        case .system: 8
        }
    }

    static func main() {
        SignalForwarding.unblockStopSignals()
        // A builder or a shell's root, when layerctl was started again to do namespaced work.
        NamespacedWork.runIfRequested()
        // A build starts its namespaced work from a copy of this process made while it has one
        // thread; anything else that starts such work (a shell, a pull's unpacking) execs.
        if CommandLine.arguments.dropFirst().first == "build" { NamespacedWork.makeStarter() }
        StandardOutput.lineBuffered()
        var command: ParsableCommand
        do {
            command = try parseAsRoot()
        } catch {
            if exitCode(for: error) == .validationFailure {
                FileHandle.standardError.write(Data((fullMessage(for: error) + "\n").utf8))
                Foundation.exit(2)
            }
            exit(withError: error)  // --help and --version print and exit 0
        }
        let json = (command as? JSONCommand)?.json == true
        do {
            try command.run()
        } catch let status as ExitCode {
            Foundation.exit(status.rawValue)
        } catch where exitCode(for: error) == .success {
            exit(withError: error)  // help is a command that "fails" with its text
        } catch {
            report(error, json: json)
            Foundation.exit(exitStatus(errorCode(of: error)))
        }
    }

    /// One line, whatever a name in it holds (a layer's file names are its author's), and the
    /// `--json` record.
    static func report(_ error: any Error, json: Bool) {
        let message = "\(error)" + (currentFolderIsGone ? " (the current folder was removed: a relative path finds nothing in it)" : "")
        FileHandle.standardError.write(Data("layerctl: \(RawPath.printable(message))\n".utf8))
        let code = errorCode(of: error)
        if json {
            let failure = JSONOutput.Failure(error: .init(code: code, exitStatus: exitStatus(code), message: message))
            try? JSONOutput.print(failure)
        }
    }
}

/// Whether the folder layerctl was started in has been removed. A relative path is then looked up
/// in that folder, empty for good, not in one made since under its name (a fresh clone), and "no
/// such layer file" alone would send a user looking for a file that is there.
private var currentFolderIsGone: Bool {
    guard let folder = getcwd(nil, 0) else { return errno == ENOENT }
    free(folder)
    return false
}

/// The store option every command shares.
struct StoreOptions: ParsableArguments {
    @Option(
        name: .long,
        help: "The store that holds built layers. It defaults to $LAYERCTL_STORE, or /var/lib/layerctl when that is unset.")
    var store: String?

    /// The store, made where there is none: for the commands that write one (`build`, `pull`, ...).
    func open() throws -> Store {
        var opened = try Store(root: Store.locate(store))
        opened.waiting = { printNote($0) }
        return opened
    }

    /// The store, which must be there: for the commands that read one.
    func openExisting() throws -> Store {
        var opened = try Store(existing: Store.locate(store))
        opened.waiting = { printNote($0) }
        return opened
    }
}

/// Writes `layerctl: TEXT` to stderr as one line, escaped (what a name in it holds is a stranger's).
func printNote(_ text: String) {
    FileHandle.standardError.write(Data((RawPath.printableLine("layerctl: \(text)") + "\n").utf8))
}
