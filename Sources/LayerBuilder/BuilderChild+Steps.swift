import Alpm
import Foundation
import Glibc
import LayerRecipe

extension BuilderChild {
    /// The libalpm transaction, on the merged root, checked against what the key was made from.
    static func install(_ job: BuildJob, events: EventPipe) throws -> ChildResult {
        let merged = job.root.merged
        let handle = try AlpmHandle(root: merged, dbPath: merged + "/var/lib/pacman")
        try handle.addCacheDir(job.packageCache)
        try handle.setLogFile(job.pacmanLog)
        try handle.setGPGDir(job.gpgDirectory)
        try handle.setArchitectures([job.arch])
        try handle.setParallelDownloads(5)
        try handle.addHookDir(merged + "/usr/share/libalpm/hooks")
        try handle.addHookDir(merged + "/etc/pacman.d/hooks")
        for repo in job.repos {
            try handle.register(
                Repository(
                    name: repo.name, servers: repo.servers,
                    signatureLevel: SignatureLevel(rawValue: repo.signatureLevel)),
                arch: job.arch)
        }
        handle.observer = { event in events.send(BuildEvent(alpm: event, layer: job.layerName)) }
        var added: [PackageFile] = []
        var removed: [InstalledPackage] = []
        if !job.install.isEmpty || !job.remove.isEmpty {
            events.send(.step, "transaction")
            let resolution: Resolution
            do {
                resolution = try handle.commit(TransactionRequest(install: job.install, remove: job.remove))
            } catch let error as AlpmError where !error.missingKeys.isEmpty {
                throw BuildFailure(missingKeys: error, keyring: job.gpgDirectory) { name in
                    job.repos.first { $0.name == name }?.location ?? job.layerName
                }
            }
            let expected = job.expected.map(ResolvedPackage.init).sorted { $0.name < $1.name }
            let actual = resolution.install.map(ResolvedPackage.init).sorted { $0.name < $1.name }
            guard expected == actual else {
                throw BuildFailure("the repositories changed while the layer was built; build again", code: .packages)
            }
            added = resolution.install
            removed = resolution.remove
        }
        return ChildResult(
            installed: handle.installedPackages(), added: added, removed: removed, treeBytes: 0, fileCount: 0,
            treeDigest: "")
    }

    static func writeFiles(_ job: BuildJob, into merged: String) throws {
        let files = RootedFiles(root: merged)
        for file in job.files {
            let data: Data
            if let inline = file.inline {
                data = Data(inline.utf8)
            } else if let source = file.source, let contents = FileManager.default.contents(atPath: source) {
                data = contents
            } else {
                throw BuildFailure("reading source \(file.source ?? "") failed", at: file.location, code: .input)
            }
            do {
                let (uid, gid) = try files.owner(file.owner)
                try files.write(data, to: file.path, mode: file.mode, uid: uid, gid: gid)
            } catch {
                throw BuildFailure("writing \(file.path) failed", at: file.location, cause: error)
            }
        }
    }

    static func runCommands(_ job: BuildJob, in merged: String, events: EventPipe) throws {
        let runner = commandRunner(job, in: merged, events: events)
        for (index, command) in job.run.enumerated() {
            events.send(
                BuildEvent(
                    .step, layer: job.layerName, message: "run \(index + 1)/\(job.run.count): \(command.command)"))
            let status = try runner.run(command.command)
            if status != 0 {
                throw BuildFailure("run command `\(command.command)` exited with status \(status)", at: command.location)
            }
        }
    }

    /// Installs and enables the initramfs hook of `boot:`, and makes the initramfs again when this
    /// layer changed what it is made from.
    static func addBootSupport(_ flavour: BootFlavour, _ job: BuildJob, in merged: String, events: EventPipe) throws {
        let support = BootSupport(
            flavour: flavour, job: job, merged: merged, runner: commandRunner(job, in: merged, events: events))
        try support.apply { events.send(BuildEvent(.output, layer: job.layerName, message: "boot: \($0)")) }
    }

    /// Runs commands chrooted into the layer, with the environment `run:` commands get.
    static func commandRunner(_ job: BuildJob, in merged: String, events: EventPipe) -> CommandRunner {
        CommandRunner(
            root: merged, environment: job.commandEnvironment.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" },
            output: { events.send(BuildEvent(.output, layer: job.layerName, message: $0)) })
    }
}

extension BuildEvent {
    /// libalpm's events as build events; debug chatter is dropped.
    init(alpm event: AlpmEvent, layer: String) {
        switch event {
        case .downloadStarted(let file):
            self.init(.downloadStarted, layer: layer, file: file)
        case .downloadProgress(let file, let downloaded, let total):
            self.init(.downloadProgress, layer: layer, file: file, current: downloaded, total: total)
        case .downloadCompleted(let file, let succeeded, _):
            self.init(.downloadDone, layer: layer, message: succeeded ? nil : "failed", file: file)
        case .progress(let step, let package, let percent, let current, let total):
            self.init(
                .progress, layer: layer, message: step.rawValue, file: package, current: Int64(current),
                total: Int64(total), percent: percent)
        case .packageStarted(let operation, let name, let version):
            self.init(.package, layer: layer, message: "\(operation.rawValue) \(name) \(version)")
        case .packageFinished(let operation, let name, _):
            self.init(.progress, layer: layer, message: operation.rawValue, file: name, percent: 100)
        case .scriptletOutput(let line):
            self.init(.output, layer: layer, message: line)
        case .log(let level, let message):
            self.init(level == .error ? .error : .warning, layer: layer, message: message)
        }
    }
}
