import Alpm
import CLayerSupport
import Foundation
import Glibc
import LayerRecipe
import LayerEntries
import LayerStore
import LayerSupport

extension StackBuilder {
    /// Builds one layer in a builder child and commits it into the store.
    func buildLayer(
        _ layer: LayerFile, key: String, parent: String?, spec: LayerSpec, boot: Located<BootFlavour>?,
        resolution: Resolution,
        request: TransactionRequest, resolver: PackageResolver, downloads: PackageWork.Child, parentTrees: [String], repositories: [Repository], snapshot: String,
        arch: String, environment: [String: String], started: Date, signatures: SignatureProof,
        repositoryLocations: [String: FileLocation], syncDatabases: String?
    ) throws {
        let store = options.store
        let buildDirectory = try store.makeTemporary("build")
        defer { try? FileSystem.removeTree(buildDirectory) }
        try store.requireTreeFileSystem(in: buildDirectory)
        // What the build leaves free on the store's filesystem: a layer file's steps may try to
        // fill it. Looked at before the packages come, while the steps run and after.
        let reserve = try DiskReserve(for: store.root)
        func checkReserve(at location: String) throws {
            do { try reserve.check("layer \(layer.name)") } catch let reached as DiskReserve.Reached {
                throw BuildFailure(reached.message, at: location, code: .system)
            }
        }
        try checkReserve(at: layer.path)
        // The place of a package's repository, for the messages below.
        let place = { @Sendable [layerPath = layer.path] (package: PackageFile?) in
            package.flatMap { repositoryLocations[$0.repository]?.description } ?? layerPath
        }
        // A package is downloaded from its repository's servers, which a layer file names: a
        // file:// one may be any folder of the host's. Only a file whose sha256 the database
        // names can be kept in the cache (libalpm deletes one that differs), so no host file the
        // layer file's author did not already know reaches the cache, or the builds that read it.
        // The size bounds the download (DownloadLimit): a source need not end.
        for package in resolution.install where package.sha256.isEmpty || package.downloadSize <= 0 {
            throw BuildFailure(
                "package \(package.name) of repository \(package.repository) has no \(package.sha256.isEmpty ? "sha256" : "size") in its database: "
                    + "layerctl installs no package it cannot check (repo-add writes both)",
                at: place(package), code: .input)
        }
        // The build has no network, and no keyring: its packages enter the cache, checked, now.
        // Signatures and the keyring's trust database are written too: never less than 1 MiB.
        let largest = max(resolution.install.map(\.downloadSize).max() ?? 0, 1 << 20)
        var tooLarge = false
        // The downloads' child has the network, and gets a cache of this layer's packages alone:
        // the store's holds every other layer's too, some perhaps from private repositories. What
        // the store has of them is linked in, and a download to go on from (`.part`) moved in;
        // once checked, the packages are linked into the store's cache, and a `.part` left by a
        // failed download goes back there.
        let fetchCache = try downloads.makeScratch("packages")
        let fetched = resolution.install.flatMap { [$0.filename, $0.filename + ".sig"] }
        func identity(_ path: String) -> (dev_t, ino_t)? {
            var st = stat()
            return lstat(path, &st) == 0 ? (st.st_dev, st.st_ino) : nil
        }
        var linkedIn: [String: (dev_t, ino_t)] = [:]
        for name in fetched where FileSystem.exists(store.packageCache + "/" + name) {
            try FileSystem.linkOrCopy(store.packageCache + "/" + name, to: fetchCache + "/" + name)
            linkedIn[name] = identity(fetchCache + "/" + name)
        }
        if let host = options.hostCache {
            let taken = host.copy(resolution.install.filter { !FileSystem.exists(fetchCache + "/" + $0.filename) }, into: fetchCache)
            if !taken.isEmpty {
                observer(BuildEvent(
                    .step, layer: layer.name,
                    message: "took \(taken.count) package\(taken.count == 1 ? "" : "s") "
                        + "(\(formatBytes(taken.reduce(0) { $0 + $1.downloadSize }))) from the host's cache \(host.folder)"))
            }
        }
        for name in fetched { rename(store.packageCache + "/" + name + ".part", fetchCache + "/" + name + ".part") }
        defer {
            for name in fetched { rename(fetchCache + "/" + name + ".part", store.packageCache + "/" + name + ".part") }
            // A cached package that libalpm found to differ from its database, and removed, goes
            // from the store's cache too, as it went when libalpm fetched into that cache: the
            // next build downloads it again.
            for (name, linked) in linkedIn where identity(fetchCache + "/" + name).map({ $0 != linked }) ?? true {
                if let kept = identity(store.packageCache + "/" + name), kept == linked { unlink(store.packageCache + "/" + name) }
            }
        }
        let parts = DownloadLimit.PartialFiles(
            resolution.install.flatMap { package in
                [".part", ".sig.part"].map { fetchCache + "/" + package.filename + $0 }
            })
        let download = { @Sendable (package: PackageFile?) in
            "the download of " + (package.map { "package \($0.name) of repository \($0.repository)" } ?? "a package")
        }
        // libalpm names each file it failed to download ("failed retrieving file 'NAME' from …").
        let named = { (error: AlpmError) in
            resolution.install.first { package in error.details.contains { $0.contains("'\(package.filename)'") } }
        }
        let servers = repositories.map(\.servers.count).max() ?? 1
        let stalls = { [cache = fetchCache, install = resolution.install] (pid: pid_t) in
            DownloadLimit.watchStalls(pid: pid, parts: parts, servers: servers) { stalled, seconds in
                let package = install.first { stalled.contains(cache + "/" + $0.filename + ".part") }
                return BuildFailure(
                    download(package) + " brought less than \(formatBytes(DownloadFloor.bytes)) in \(seconds) s; it was stopped",
                    at: place(package), code: .packages)
            }
        }
        let outcome: PackageWork.Outcome
        do {
            outcome = try resolver.fetch(
                request, layer: layer.name, in: downloads, cache: fetchCache, keyring: options.keyring,
                largest: largest, expected: resolution.install, offline: options.offline, reached: &tooLarge, watch: stalls)
        } catch let error as AlpmError where !error.missingKeys.isEmpty {
            throw BuildFailure(missingKeys: error, keyring: options.keyring) { name in
                repositoryLocations[name]?.description ?? layer.path
            }
        } catch let error as AlpmError where DownloadLimit.isStall(error) {
            let package = named(error)
            throw BuildFailure(
                download(package) + " \(DownloadLimit.stalled); it was stopped (list a faster server)", at: place(package),
                code: .packages)
        } catch let error as AlpmError {
            // A `.sig` the server lacks fails a download only where the repository requires package
            // signatures (libalpm lets an optional one fail): pacman's default level, which a
            // repository of one's own unsigned packages (makepkg's, the AUR's) meets first.
            if !tooLarge, let line = error.retrievalFailure,
                let package = resolution.install.first(where: { package in
                    error.details.contains { $0.contains("'\(package.filename).sig'") }
                })
            {
                throw BuildFailure(
                    BuildFailure.missingSignature(
                        of: "package \(package.name) of repository \(package.repository)", line: line,
                        level: repositories.first { $0.name == package.repository }?.signatureLevel,
                        sign: "sign its packages (`makepkg --sign`)"),
                    at: place(package), code: .packages)
            }
            // A file the server lacks, a host that is not there: libalpm's line says which and why.
            if !tooLarge, let line = error.retrievalFailure, let package = named(error) {
                throw BuildFailure(download(package) + " failed: " + line, at: place(package), code: .packages)
            }
            guard tooLarge else { throw locate(error, in: layer, repositories: repositoryLocations) }
            // libalpm keeps what it got of a failed download, to go on from there next time; a
            // download cut at the limit would be gone on from, and fail again.
            for package in resolution.install {
                for suffix in [".part", ".sig.part"] { unlink(fetchCache + "/" + package.filename + suffix) }
            }
            let package = named(error)
            let what =
                package.map {
                    download($0) + " passed \(formatBytes(largest)), more than its database gives it (\(formatBytes($0.downloadSize)))"
                } ?? "a package's download passed \(formatBytes(largest)), more than its database gives any package"
            throw BuildFailure(what + "; it was stopped", at: place(package), code: .input)
        }
        // --offline: a package that only a download would bring, or its signature.
        if let lack = outcome.offlineLack {
            throw OfflineShortfall(what: lack.what, at: place(resolution.install.first { $0.filename == lack.package }))
        }
        // A package matches its database's sha256, but the builder's libalpm opens it as a tar
        // alone (archive_readers.c), and would say it failed to at the builder's own path. Said
        // here, at the repository that served it; and not kept, as a database that is no tar is not.
        let notTar = outcome.notTar ?? []
        for package in resolution.install where notTar.contains(package.filename) {
            for cache in [fetchCache, store.packageCache] {
                unlink(cache + "/" + package.filename)
                unlink(cache + "/" + package.filename + ".sig")
            }
            throw BuildFailure(
                "package \(package.name) of repository \(package.repository) (\(package.filename)) is no tar archive, "
                    + "\(AlpmHandle.tarCompressions); it was removed from the cache",
                at: place(package), code: .packages)
        }
        // Checked: the store's cache keeps them for the next build, in place of a copy there that
        // differed (libalpm removed that one's link here, and downloaded the package again).
        for name in fetched {
            guard let checked = identity(fetchCache + "/" + name), identity(store.packageCache + "/" + name).map({ $0 != checked }) ?? true
            else { continue }
            let incoming = store.packageCache + "/" + Store.incomingPackagePrefix + "\(getpid())-" + name
            unlink(incoming)
            try FileSystem.linkOrCopy(fetchCache + "/" + name, to: incoming)
            try sys("rename", store.packageCache + "/" + name) { rename(incoming, store.packageCache + "/" + name) }
            // Written to disk while the transaction runs, not at the commit's sync, which then
            // waits for less.
            FileSystem.startWriteback(of: store.packageCache + "/" + name)
        }
        var job = BuildJob(
            layerName: layer.name, buildDirectory: buildDirectory, lowerTrees: parentTrees, arch: arch,
            repos: repositories.map { BuildJob.Repo(name: $0.name, servers: $0.expandedServers(arch: arch)) },
            // The build sees the packages it installs, and not the store's whole cache: other
            // layers' packages, from other repositories, some perhaps private, which a stranger's
            // `run:` could copy into its layer or, with the network, send away. Hard links, so a
            // package is the file checked here even if another build replaces the cache's copy.
            syncDirectory: snapshot, packageCache: fetchCache, install: request.install, remove: request.remove,
            sysupgrade: request.sysupgrade ? true : nil,
            expected: resolution.install,
            files: try layer.files.flatMap { file in
                try jobFiles(file, digest: spec.files.first { $0.path == file.path }?.sha256 ?? "")
            },
            run: layer.run.map { BuildJob.Command(command: $0.value, location: $0.location.description) },
            env: environment.sorted { $0.key < $1.key }.map { EnvVariable(name: $0.key, value: $0.value) },
            sourceDateEpoch: options.sourceDateEpoch, network: layer.network?.value ?? false,
            boot: boot?.value, bootLocation: boot?.location.description,
            separateSteps: options.recordWriters ? true : nil)
        job.noExtract = spec.noExtract
        job.ignore = request.ignore.isEmpty ? nil : request.ignore
        let made = BuildCgroup.make(processes: options.maxProcesses, memory: options.memoryLimit)
        let cgroup = made.cgroup
        defer { cgroup?.remove() }
        job.cgroups = cgroup?.folders
        job.memoryLimit = options.memoryLimit
        for (controller, why) in made.unlimited {
            let what = controller == .pids ? "processes are" : "memory is"
            observer(BuildEvent(.warning, layer: layer.name, message: "the build's \(what) not limited: \(why)"))
        }
        try FileSystem.makeDirectories(job.upperDirectory)
        // Scratch files, gone with the build's folder: nothing to sync.
        try FileSystem.writeFile(Data(), to: job.pacmanLog)
        let jobPath = buildDirectory + "/job.json"
        try FileSystem.writeFile(try JSONEncoder().encode(job), to: jobPath)

        let packages: (result: ChildResult, mountPoints: [String])
        var stepStarts: [(step: Int, at: Double)] = []
        // The layer's time limit covers reading the tree its steps made too: a sparse file of an
        // exabyte takes no disk and would take years to read.
        let deadline = options.layerTimeLimit.map { Deadline(seconds: $0) }
        do {
            defer { appendLog(job.pacmanLog, to: store.pacmanLog) }
            try checkReserve(at: layer.path)
            packages = try runChild(
                jobPath: jobPath, layer: layer, network: job.network, reserve: reserve, cgroup: cgroup
            ) { event in
                if event.kind == .step, let at = event.at, let step = event.current { stepStarts.append((Int(step), at)) }
            }
        }
        if let note = memoryNote(cgroup) {
            observer(BuildEvent(.warning, layer: layer.name, message: "the build " + note + ", and its steps went on"))
        }
        // A last step may have written past the reserve and ended before the watchdog looked.
        try checkReserve(at: layer.path)
        // The child is gone, and its mounts with it: what it made only to mount on goes too.
        for relative in packages.mountPoints.reversed() { BuildRoot.removeMountPoint(relative, in: job.upperDirectory) }
        // The disk writes the tree while it is normalised and scanned (both read the page cache),
        // so the sync at the commit waits only for what they changed.
        let upper = job.upperDirectory
        let writeback = Background { try FileSystem.syncFileSystem(of: upper) }
        defer { _ = try? writeback.value() }
        let normaliser = Normaliser(tree: job.upperDirectory, epoch: job.sourceDateEpoch, lowerTrees: parentTrees)
        let scan: TreeScan
        do {
            if options.recordWriters {
                writers[layer.name] = try Self.lastWriters(of: job.upperDirectory, steps: stepStarts) { step in
                    guard step <= layer.run.count else { return "the boot support of `boot:` (the initramfs generator)" }
                    let command = layer.run[step - 1]
                    return "run \(step) `\(command.value)` at \(command.location)"
                }
            }
            observer(BuildEvent(.step, layer: layer.name, message: "normalise"))
            for note in try normaliser.run() {
                observer(BuildEvent(.step, layer: layer.name, message: note))
            }
            scan = try TreeScan.scan(
                job.upperDirectory, settle: normaliser.settle, sockets: parentTrees.isEmpty ? .removed : .whitedOut,
                deadline: deadline)
        } catch let error as PathTooLong {
            throw BuildFailure("the tree its steps made is refused: \(error.message)", at: layer.path, code: .build)
        } catch let passed as Deadline.Passed {
            throw BuildFailure(
                "layer \(layer.name) did not finish within \(Self.shown(seconds: passed.seconds)) s "
                    + "(at: \(passed.doing.replacingOccurrences(of: upper, with: ""))); "
                    + "it was stopped. Give it longer with --timeout",
                at: layer.path, code: .build)
        }
        if let first = scan.droppedSockets.first {
            let more = scan.droppedSockets.count > 1 ? " and \(scan.droppedSockets.count - 1) more" : ""
            observer(BuildEvent(
                .step, layer: layer.name,
                message: "removed the sockets the build left (tar and OCI have no type for them): \(PathLimit.shortened(first))\(more)"))
        }
        let record = LayerRecord(
            formatVersion: LayerSpec.formatVersion, key: key, parent: parent, name: layer.name,
            specDigest: spec.digest, added: packages.result.added, removed: packages.result.removed,
            installed: packages.result.installed,
            treeBytes: scan.bytes, fileCount: scan.fileCount, treeDigest: scan.digest,
            opaqueDirectories: scan.opaqueDirectories, signatures: signatures, network: job.network ? true : nil,
            image: spec.image, syncDatabases: syncDatabases, rules: BuilderRules.version,
            sourceDateEpoch: options.sourceDateEpoch, buildSeconds: Date().timeIntervalSince(started), builtAt: Date())
        // Unsynced, as the tree: the commit puts the whole folder on disk before it moves it.
        try FileSystem.writeFile(Data(scan.manifest.encoded()), to: buildDirectory + "/layer/" + LayerManifest.fileName)
        try FileSystem.writeFile(try record.encoded(), to: buildDirectory + "/layer/layer.json")
        if try !store.commit(buildDirectory + "/layer", as: key) {
            // --no-cache, a stricter signature policy or other builder rules rebuilt a stored
            // layer: keep the stored tree if equal (with the record of this build, which proves
            // this policy and these rules), else replace it.
            let stored = try store.record(key)
            if stored.treeDigest == record.treeDigest {
                var kept = stored
                kept.signatures = signatures
                kept.syncDatabases = syncDatabases
                kept.rules = record.rules
                try FileSystem.writeAtomically(try kept.encoded(), to: store.layerDirectory(key) + "/layer.json")
            } else {
                observer(BuildEvent(
                    .warning, layer: layer.name,
                    message: "the rebuilt tree differs from the stored one (\(stored.treeDigest.prefix(12)) → \(record.treeDigest.prefix(12))); replacing it"))
                let old = buildDirectory + "/replaced"
                try sys("move aside", store.layerDirectory(key)) { rename(store.layerDirectory(key), old) }
                _ = try store.commit(buildDirectory + "/layer", as: key)
            }
        }
    }

    /// What an `--offline` build of a layer lacks, which only a download would bring (`what`: a
    /// package, or a signature) of the repository at `location`. A failure, but where the store
    /// holds the layer made by other builder rules, which then serves the build.
    struct OfflineShortfall: Error {
        let what: String
        let location: String

        init(what: String, at location: String) {
            self.what = what
            self.location = location
        }

        var failure: BuildFailure {
            BuildFailure(
                "--offline downloads nothing, and the store's cache lacks \(what): build once without --offline", at: location,
                code: .packages)
        }
    }

    /// A time limit as the user gave it: "3", "2.5".
    static func shown(seconds: Double) -> String { seconds.rounded() == seconds ? "\(Int(seconds))" : "\(seconds)" }

    /// What the kernel did at the build's memory limit, if it did anything.
    private func memoryNote(_ cgroup: BuildCgroup?) -> String? {
        cgroup?.memoryNote(limit: options.memoryLimit)
    }

    /// Runs the namespaced builder of the job at `jobPath`, forwards its events, and returns what it
    /// built, and the mount points it made in the tree.
    private func runChild(
        jobPath: String, layer: LayerFile, network: Bool, reserve: DiskReserve, cgroup: BuildCgroup?,
        also: (BuildEvent) -> Void = { _ in }
    ) throws -> (result: ChildResult, mountPoints: [String]) {
        var result: ChildResult?
        var mountPoints: [String]?
        var lastStep: BuildEvent?
        let status: Int32
        // Where the work was when it was stopped: a run: step has its line; anything else the
        // layer file.
        func stoppedAt() -> (location: String, doing: String) {
            if let step = lastStep, step.kind == .step, let current = step.current, step.message?.hasPrefix("run ") == true,
                current >= 1, Int(current) <= layer.run.count
            {
                return (layer.run[Int(current) - 1].location.description, "run \(current) `\(layer.run[Int(current) - 1].value)`")
            }
            return (layer.path, lastStep?.message ?? "starting")
        }
        do {
            status = try NamespacedWork.run(
                .build, jobPath: jobPath, network: network, timeLimit: options.layerTimeLimit, reserve: reserve
            ) { event in
                if event.kind == .mountPoints {
                    // The first word only: it comes before anything of the layer runs. Whatever
                    // it names, only empty folders and files of the tree are removed.
                    if mountPoints == nil { mountPoints = event.paths ?? [] }
                } else if event.kind == .finished {
                    result = event.result
                } else {
                    if event.kind == .step || event.kind == .package || event.kind == .hook { lastStep = event }
                    also(event)
                    observer(event)
                }
            }
        } catch let exceeded as NamespacedWork.TimeLimitExceeded {
            let (location, doing) = stoppedAt()
            throw BuildFailure(
                "layer \(layer.name) did not finish within \(Self.shown(seconds: exceeded.seconds)) s (at: \(doing)); it was stopped, with everything it ran. Give it longer with --timeout",
                at: location, code: .build)
        } catch let reached as DiskReserve.Reached {
            let (location, doing) = stoppedAt()
            throw BuildFailure("layer \(layer.name) was stopped, with everything it ran (at: \(doing)): \(reached.why)", at: location, code: .system)
        } catch let failure as BuildFailure {
            // A process the kernel ended at the memory limit fails with a bare "Killed": say why.
            guard let note = memoryNote(cgroup) else { throw failure }
            throw BuildFailure(
                failure.message + "; the build " + note, at: failure.location, code: failure.code, cause: failure.cause,
                packages: failure.packages)
        }
        guard status == 0, let result else {
            // The kernel's choice at the limit may be the builder itself, with everything it ran.
            if let note = memoryNote(cgroup) {
                let (location, doing) = stoppedAt()
                throw BuildFailure("layer \(layer.name) was stopped, with everything it ran (at: \(doing)): it \(note)", at: location, code: .build)
            }
            throw BuildFailure("the builder of layer \(layer.name) stopped with status \(status)")
        }
        return (result, mountPoints ?? [])
    }

    /// Each path of the tree at `upper` whose change time is at or after a step's start, with the
    /// last such step, as `describe` names it. Nothing of the build runs any more, and nothing is
    /// followed: entries are looked at with lstat.
    static func lastWriters(
        of upper: String, steps: [(step: Int, at: Double)], describe: (Int) -> String
    ) throws -> [String: String] {
        guard !steps.isEmpty else { return [:] }
        var writers: [String: String] = [:]
        // The folders still to read are a list, not calls: a step may nest them without end, and
        // PathLimit stops the walk where a layer's paths must end.
        var folders: [(path: [UInt8], relative: String)] = [(Array(upper.utf8), "")]
        while let (path, relative) = folders.popLast() {
            for name in try FileSystem.listDirectory(path) {
                let above = path.dropFirst(upper.utf8.count)
                try PathLimit.check(above.count, adding: name, to: Array(above))
                let child = RawPath.join(path, name)
                let inside = relative + "/" + RawPath.string(name)
                var st = stat()
                guard RawPath.with(child, { lstat($0, &st) }) == 0 else { continue }
                let changed = Double(st.st_ctim.tv_sec) + Double(st.st_ctim.tv_nsec) / 1e9
                if let step = steps.last(where: { $0.at <= changed }) { writers[inside] = describe(step.step) }
                if st.st_mode & S_IFMT == S_IFDIR { folders.append((child, inside)) }
            }
        }
        return writers
    }

    /// What the builder writes for `file:`: one file or link, or a source folder's tree, its
    /// folder first, which must all still be what the key was made from (`digest`).
    private func jobFiles(_ file: FileSpec, digest: String) throws -> [BuildJob.File] {
        let location = file.location.description
        switch file.content {
        case .link(let target):
            return [BuildJob.File(path: file.path, mode: file.mode, owner: file.owner, contents: Data(), link: target, location: location)]
        case .tree(let path):
            let tree = try Self.sourceTree(path, of: file)
            guard tree.digest == digest else {
                throw BuildFailure("source folder \(path) changed while the layer was built; build again", at: location, code: .input)
            }
            let top = BuildJob.File(path: file.path, mode: 0o755, owner: file.owner, contents: Data(), folder: true, location: location)
            return [top] + tree.entries.map { entry in
                let path = file.path + "/" + entry.path
                switch entry.kind {
                case .folder:
                    return BuildJob.File(path: path, mode: 0o755, owner: file.owner, contents: Data(), folder: true, location: location)
                case .file(let data, let executable):
                    return BuildJob.File(path: path, mode: executable ? 0o755 : 0o644, owner: file.owner, contents: data, location: location)
                case .link(let target):
                    return BuildJob.File(path: path, mode: 0o777, owner: file.owner, contents: Data(), link: target, location: location)
                }
            }
        case .inline(let text):
            return [BuildJob.File(path: file.path, mode: file.mode, owner: file.owner, contents: Data(text.utf8), location: location)]
        case .source(let path):
            let data: Data
            do { data = try FileSystem.readRegularFile(path, atMost: ReadLimit.fileSource) } catch {
                throw BuildFailure("reading source \(path) failed", at: location, code: .input, cause: error)
            }
            guard Digest.sha256(data) == digest else {
                throw BuildFailure("source \(path) changed while the layer was built; build again", at: location, code: .input)
            }
            return [BuildJob.File(path: file.path, mode: file.mode, owner: file.owner, contents: data, location: location)]
        }
    }

    /// Appends the log of one build to the store's pacman.log, as pacman keeps one log for a system.
    /// Package scriptlets write to it (through libalpm, which logs their output), so a flood is
    /// cut: past `Self.logLimit`, its first and last halves go in, with a line between that says
    /// how much was left out. Nothing of it is held in memory.
    private func appendLog(_ path: String, to log: String) {
        let input = open(path, O_RDONLY | O_CLOEXEC)
        guard input >= 0 else { return }
        defer { close(input) }
        var st = stat()
        guard fstat(input, &st) == 0, st.st_size > 0 else { return }
        let fd = open(log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o644)
        guard fd >= 0 else { return }
        defer { close(fd) }
        let size = Int64(st.st_size)
        let half: Int64 = Self.logLimit / 2
        var pieces: [(from: Int64, to: Int64)] = [(Int64(0), size)]
        if size > Self.logLimit { pieces = [(Int64(0), half), (size - half, size)] }
        for (index, piece) in pieces.enumerated() {
            if index == 1 {
                let note = "[layerctl] \(size - 2 * half) bytes of this build's log are left out here\n"
                guard (try? Array(note.utf8).withUnsafeBytes({ try FileSystem.writeAll(fd, $0, to: log) })) != nil else { return }
            }
            guard lc_copy_range(input, UInt64(piece.from), fd, 0, Int(piece.to - piece.from)) == 0 else { return }
        }
    }

    /// The most of one build's libalpm log that goes into the store's.
    static let logLimit: Int64 = 8 << 20
}
