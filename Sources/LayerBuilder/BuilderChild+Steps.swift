import Alpm
import CLayerSupport
import Foundation
import Glibc
import LayerRecipe
import LayerSupport

extension BuilderChild {
    /// The libalpm transaction, on the root ("/" in the confinement), checked against what the key
    /// was made from. Every package is in the read-only cache already, checked by the parent with the
    /// keyring; here libalpm checks each file against its database's sha256, with no keyring. It
    /// logs to `log`.
    static func install(_ job: BuildJob, log: String, events: EventPipe) throws -> ChildResult {
        let handle = try AlpmHandle(root: "/", dbPath: "/var/lib/pacman")
        try handle.addCacheDir(packageCache)
        // A writable cache after it, which stays empty, keeps libalpm from warning that it has none.
        let spare = BuildRoot.buildOwnFolder + "/downloads"
        try FileSystem.makeDirectories(spare)
        try handle.addCacheDir(spare)
        try handle.setLogFile(log)
        try handle.setArchitectures([job.arch])
        try handle.addHookDir("/usr/share/libalpm/hooks")
        try handle.addHookDir("/etc/pacman.d/hooks")
        if let boot = job.boot, !boot.packageHooks.isEmpty {
            // The last folder's hook of a name is the one that runs, and a link to /dev/null runs
            // nothing (alpm-hooks(5)). /run is the build's own tmpfs, never part of the layer.
            let masks = BuildRoot.buildOwnFolder + "/hooks"
            try FileSystem.makeDirectories(masks)
            for name in boot.packageHooks where symlink("/dev/null", masks + "/" + name) != 0 {
                throw SystemError("symlink", masks + "/" + name)
            }
            try handle.addHookDir(masks)
        }
        for repo in job.repos {
            try handle.register(Repository(name: repo.name, servers: repo.servers, signatureLevel: .never), arch: job.arch)
        }
        for pattern in job.noExtract ?? [] { try handle.addNoExtract(pattern) }
        // A scriptlet's or a hook's output is clipped as a run: step's is, for each package and
        // each hook: each line costs an event, and the terminal a line.
        var clip = LineClip()
        func flush() { for line in clip.finish() { events.send(BuildEvent(.output, layer: job.layerName, message: line)) } }
        handle.observer = { event in
            switch event {
            case .scriptletOutput(let line):
                for line in clip.take(line) { events.send(BuildEvent(.output, layer: job.layerName, message: line)) }
                return
            case .packageStarted, .packageFinished, .hookStarted: flush()
            default: if BuildEvent.repeatsResolution(event) { return }
            }
            events.send(BuildEvent(alpm: event, layer: job.layerName))
        }
        defer { flush() }
        handle.beforePostTransactionHooks = { settleFolderTimes(epoch: job.sourceDateEpoch) }
        // Each package file gets its time in the layer as it is extracted, not by a call of its own
        // after the build; what the hooks and steps read of it is that time.
        lc_clamp_extracted_times(job.sourceDateEpoch)
        // libarchive's walk of each file's path for symlinks, in two calls where there is none.
        lc_check_extracted_paths_quickly()
        var added: [PackageFile] = []
        var removed: [InstalledPackage] = []
        if !job.install.isEmpty || !job.remove.isEmpty || job.sysupgrade == true {
            events.send(.step, "transaction")
            let resolution: Resolution
            do {
                resolution = try handle.commit(
                    TransactionRequest(
                        install: job.install, remove: job.remove, sysupgrade: job.sysupgrade ?? false, ignore: job.ignore ?? []))
            } catch let error as AlpmError where !error.unownedFiles.isEmpty {
                let file = LayerSupport.clip(error.unownedFiles[0], to: 200)
                // A layer below removed pacman's database (a slim image's last step), or was made
                // without pacman: every package is new to libalpm, and its files are in the way.
                if handle.installedPackages().isEmpty {
                    throw BuildFailure(
                        error, at: nil,
                        advice: "the layers below hold \(file) and the rest, but no package database (/var/lib/pacman/local "
                            + "is empty or gone: a step removed it, or their image was made without pacman), so pacman takes "
                            + "every package for one to install, and will not write over their files; install packages in a "
                            + "layer below the one that removes pacman's database")
                }
                // Most often a layer below wrote a package's file (its configuration, in base's
                // files:) before a layer above installed the package.
                throw BuildFailure(
                    error, at: nil,
                    advice: "no package owns \(file): a layer below made it (its files: or run:), and pacman overwrites "
                        + "no such file; write it in the files: of the layer that installs the package, which come after its packages")
            }
            let expected = job.expected.map(ResolvedPackage.init).sorted { $0.name < $1.name }
            let actual = resolution.install.map(ResolvedPackage.init).sorted { $0.name < $1.name }
            guard expected == actual else {
                throw BuildFailure("the repositories changed while the layer was built; build again", code: .packages)
            }
            added = resolution.install
            removed = resolution.remove
        }
        return ChildResult(installed: handle.installedPackages(), added: added, removed: removed)
    }

    static func writeFiles(_ job: BuildJob) throws {
        let files = RootedFiles(root: "/")
        // A source folder's entries share their owner: the layer's passwd and group are read once.
        var owners: [String: (uid_t, gid_t)] = [:]
        for file in job.files {
            do {
                let (uid, gid) = try owners[file.owner] ?? files.owner(file.owner)
                owners[file.owner] = (uid, gid)
                if let target = file.link {
                    try files.link(to: target, at: file.path, uid: uid, gid: gid)
                } else if file.folder == true {
                    try files.makeFolder(file.path, mode: file.mode, uid: uid, gid: gid)
                } else {
                    try files.write(file.contents, to: file.path, mode: file.mode, uid: uid, gid: gid)
                }
            } catch {
                throw BuildFailure("writing \(file.path) failed", at: file.location, cause: error)
            }
        }
    }

    /// For a build that records who wrote what: a clock tick (the kernel's file times are coarse)
    /// before the step, then its start, so that each file's change time falls at or after the start
    /// of the step that wrote it last.
    static func stamp(_ event: inout BuildEvent, _ job: BuildJob) {
        guard job.separateSteps == true else { return }
        usleep(20_000)
        var now = timespec()
        clock_gettime(CLOCK_REALTIME_COARSE, &now)
        event.at = Double(now.tv_sec) + Double(now.tv_nsec) / 1e9
    }

    static func runCommands(_ job: BuildJob, events: EventPipe) throws {
        let runner = commandRunner(job, events: events)
        for (index, command) in job.run.enumerated() {
            var event = BuildEvent(
                .step, layer: job.layerName, message: "run \(index + 1)/\(job.run.count): \(command.command)",
                current: Int64(index + 1), total: Int64(job.run.count))
            stamp(&event, job)
            events.send(event)
            let status: Int32
            do {
                status = try runner.run(command.command)
            } catch let failure as BuildFailure where failure.location == nil {
                throw BuildFailure(failure, at: command.location)  // no /bin/sh: at the command that needs it
            }
            if status != 0 {
                throw BuildFailure("run command `\(command.command)` exited with status \(status)", at: command.location)
            }
        }
    }

    /// Installs and enables the initramfs hook of `boot:`, and makes the initramfs again when this
    /// layer changed what it is made from.
    static func addBootSupport(_ flavour: BootFlavour, _ job: BuildJob, events: EventPipe) throws {
        let support = BootSupport(flavour: flavour, job: job, runner: commandRunner(job, events: events))
        try support.apply { events.send(BuildEvent(.output, layer: job.layerName, message: "boot: \($0)")) }
    }

    /// Runs commands in the layer, with the environment `run:` commands get.
    static func commandRunner(_ job: BuildJob, events: EventPipe) -> CommandRunner {
        CommandRunner(
            environment: job.commandEnvironment.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" },
            output: { events.send(BuildEvent(.output, layer: job.layerName, message: $0)) })
    }
}

extension BuildEvent {
    /// Whether `event` is libalpm's line for a package a layer's `ignore:` holds ("game: ignoring
    /// package upgrade (1.0-1 => 1.1-1)"): the build says so once, from its resolution, and the
    /// download and the transaction do not say it again.
    static func repeatsResolution(_ event: AlpmEvent) -> Bool {
        if case .log(.warning, let message) = event { return message.contains(": ignoring package upgrade (") }
        return false
    }

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
        case .hookStarted(let name, let description, let position, let total):
            // A stranger's package wrote both: the description is clipped as a name is.
            let described = description.map { ": " + clip($0, to: 200) } ?? ""
            self.init(
                .hook, layer: layer, message: "hook \(clip(name, to: 200))\(described)", current: Int64(position),
                total: Int64(total))
        case .scriptletOutput(let line):
            self.init(.output, layer: layer, message: line)
        case .log(let level, let message):
            self.init(level == .error ? .error : .warning, layer: layer, message: message)
        case .pacnewCreated(let file, let package, let version):
            // pacman's words, then what they mean for a layer: the file stays as the layers below
            // left it, and the image carries the package's beside it.
            let file = clip(RawPath.printable(file), to: 200)
            self.init(
                .warning, layer: layer,
                message: "\(file) installed as \(file).pacnew, as pacman does: the layers below changed it, so it stays as "
                    + "they left it, and \(clip(package, to: 100)) \(clip(version, to: 100)) brings its own beside it; "
                    + "compare the two (layerctl shell \(layer)) and write the one to keep in this layer's files:")
        case .optionalDependencyRemoved(let package, let dependency):
            // pacman's line (`:: confd optionally requires nano: to edit its configuration`).
            self.init(
                .warning, layer: layer,
                message: "\(clip(package, to: 100)) optionally requires \(clip(dependency, to: 200)), which this layer removes")
        case .pacsaveCreated(let file, let package):
            let file = clip(RawPath.printable(file), to: 200)
            self.init(
                .warning, layer: layer,
                message: "\(file) saved as \(file).pacsave, as pacman does: the layers below changed it, and removing "
                    + "\(clip(package, to: 100)) keeps it under that name, in the image")
        }
    }
}
