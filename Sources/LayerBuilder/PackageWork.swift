import Alpm
import CLayerSupport
import Foundation
import Glibc
import LayerSupport

/// libalpm's work on data that strangers made, done in a confined child: the `packages` role of
/// `NamespacedWork`.
///
/// A layer file names its repositories, whose servers send the databases and packages, and the
/// layers below, built by strangers' steps or pulled, hold the local database a layer resolves
/// against. libalpm, libarchive and gpgme parse all of it. In layerctl's own process they would
/// parse it as root, on the host. So the refresh, the resolutions and the fetches run in two
/// children (`Child`), in new pid, mount, ipc and uts namespaces, the resolutions' in a network
/// namespace of its own too. A child sees a /proc of its own. It keeps no capability. Under
/// Landlock it reads only the system's programs, libraries and settings (`systemPaths`) and
/// what its first job names, and it writes only that job's folders; its gpg checks signatures
/// with a copy of the keyring (`keyringCopy`). The gpg daemons that gpgme starts die with it.
/// What it finds comes back as an event: the resolution, or the `AlpmError` libalpm gave, which
/// the parent words and places as before.
enum PackageWork {
    struct Job: Codable {
        enum Operation: String, Codable {
            /// Download the sync databases into `dbPath/sync`.
            case refresh
            /// Resolve `request`, and tell each package's relations.
            case resolve
            /// Download and check the packages `request` installs into `cache`, and tell which of
            /// them do not open as tar archives.
            case fetch
        }

        var operation: Operation
        /// The layer the work is for, named in its events.
        var layer: String
        var root: String
        var dbPath: String
        var arch: String
        var repositories: [Repository]
        var request = TransactionRequest()
        /// For `refresh`: download databases whether or not they changed.
        var force = false
        var keyring: String?
        var cache: String?
        /// For `refresh` and `fetch`: the most one download may write (`DownloadLimit`).
        var largestDownload: Int64 = 0
        /// What the child may read besides `systemPaths`, and what it may change.
        var readable: [String] = []
        var writable: [String] = []

        /// For `fetch`: `expected`, the packages the resolution installs; in an `--offline` build
        /// (`registerOffline`), no network, and each in `cache` or on a file:// server.
        var offline: Bool?
        var expected: [PackageFile]?

        /// Downloads need the host's network, but offline; a resolution needs none.
        var network: Bool { operation != .resolve && offline != true }
    }

    /// What a package's sync database entry says it depends on and provides, by name alone.
    struct Relations: Codable {
        var depends: [String]
        var provides: [String]
    }

    /// The child's answer.
    struct Outcome: Codable {
        var resolution: Resolution?
        /// For `resolve`: each package the resolution installs, by name.
        var relations: [String: Relations]?
        /// For `fetch`: the file names of the packages that do not open as tar archives.
        var notTar: [String]?
        /// For `resolve`: the dependencies libalpm chose a provider of.
        var providerChoices: [ProviderChoice]?
        /// For `resolve`: the packages the request ignores that the repositories hold newer.
        var newer: [NewerVersion]?
        /// For an `--offline` fetch: what only a download would bring, the first of it; nothing
        /// was fetched or checked.
        var offlineLack: OfflineLack?
    }

    /// A package file (`package`, its name in the cache) an `--offline` fetch lacks, and `what`
    /// of it, in words.
    struct OfflineLack: Codable {
        var package: String
        var what: String
    }

    /// The host's files the child reads whatever its job: programs, libraries, and what curl,
    /// the resolver and gpg read of /etc. Not the rest of /etc (shadow, ssh keys), and no home.
    /// A path that is not on this host is left out; a symlink counts for what it leads to.
    static let systemPaths = [
        "/usr", "/lib", "/lib64", "/lib32", "/libx32", "/bin", "/sbin",
        "/etc/ld.so.cache", "/etc/ssl", "/etc/ca-certificates", "/etc/ca-certificates.conf", "/etc/pki",
        "/etc/resolv.conf", "/etc/hosts", "/etc/nsswitch.conf", "/etc/host.conf", "/etc/gai.conf", "/etc/services",
        "/etc/protocols", "/etc/localtime", "/etc/passwd", "/etc/group", "/etc/gnupg", "/etc/gcrypt",
        "/proc", "/sys/devices/system/cpu",
    ]
    /// Devices anyone may read and write.
    static let devices = ["/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom"]

    // MARK: The parent's side

    /// A child that does one job after another (`NamespacedWork.Session`) under one confinement,
    /// for one process start (about 15 ms of CPU): a build has two. The resolutions' child has no
    /// network and writes only under the build's session folder, which holds every layer's sync
    /// snapshot and scratch folder. The downloads' child (the refresh, and each built layer's
    /// fetch) has the host's network, reads the `file://` servers of every repository of the
    /// build, and writes the session folder and the sync caches; it fetches a layer's packages
    /// into a cache of their own in the session folder, never the store's.
    final class Child {
        /// Every job's scratch folder is in it.
        let folder: String
        private let network: Bool
        private let readable: [String]
        private let writable: [String]
        /// Gets every event of every job but its answer: downloads, libalpm's warnings.
        private let observe: (BuildEvent) -> Void
        private var session: NamespacedWork.Session?

        init(
            folder: String, network: Bool, readable: [String] = [], writable: [String],
            observe: @escaping (BuildEvent) -> Void
        ) {
            self.folder = folder
            self.network = network
            self.readable = readable
            self.writable = writable
            self.observe = observe
        }

        deinit { end() }

        /// A new scratch folder for a job.
        func makeScratch(_ name: String) throws -> String {
            var template = Array("\(folder)/\(name)-XXXXXX".utf8CString)
            guard let made = mkdtemp(&template) else { throw SystemError("create a scratch folder in", folder) }
            return String(cString: made)
        }

        /// Does `job` (its scratch folder under `folder`) and returns its outcome. libalpm's
        /// failure is thrown as the `AlpmError` it was; `fileLimitReached` says whether a download
        /// passed `largestDownload`. `watch` may stop the child: what it found is thrown.
        func run(
            _ job: Job, scratch: String, fileLimitReached: inout Bool, watch: ((pid_t) -> LimitWatch<any Error>)? = nil
        ) throws -> Outcome {
            precondition(!job.network || network, "a job that needs the network, for a child without it")
            precondition(scratch.hasPrefix(folder + "/"))
            var job = job
            job.readable = readable
            job.writable = writable
            try FileSystem.makeDirectories(scratch)
            let jobPath = scratch + "/packages-job.json"
            try FileSystem.writeFile(try JSONEncoder().encode(job), to: jobPath)
            let answer: BuildEvent
            if let session {
                answer = try session.answer(jobPath, watch: watch, observe: observe)
            } else {
                let started = try NamespacedWork.Session(.packages, jobPath: jobPath, network: network)
                session = started
                answer = try started.answer(nil, watch: watch, observe: observe)
            }
            fileLimitReached = answer.fileLimitReached ?? false
            if answer.kind == .failed { throw answer.alpmError ?? answer.failure }
            guard let outcome = answer.packageWork else {
                throw BuildFailure("the package work of layer \(job.layer) answered without an outcome", code: .system)
            }
            return outcome
        }

        /// Ends the child.
        func end() {
            session?.end()
            session = nil
        }
    }

    /// What gpg reads of a keyring to check a signature: the keys, their trust, and the settings.
    static let keyringFiles = ["pubring.gpg", "pubring.kbx", "trustdb.gpg", "gpg.conf", "tofu.db"]

    /// A copy of keyring `home`'s `keyringFiles` in `scratch`, for the child's gpg. gpg writes in
    /// its home (the trust database, locks, its agent's sockets), and the child parses strangers'
    /// data: given the keyring itself, a flaw in that parsing could add a key and its trust to it,
    /// and every later build would take that key's signatures. Nothing the child does reaches
    /// the keyring now. A keyring that is not there gives an empty folder, which trusts nothing.
    static func keyringCopy(of home: String, in scratch: String) throws -> String {
        let copy = scratch + "/gnupg"
        try FileSystem.makeDirectories(copy, mode: 0o700)
        for name in keyringFiles where FileSystem.exists(home + "/" + name) {
            try FileSystem.writeFile(try FileSystem.readRegularFile(home + "/" + name), to: copy + "/" + name, mode: 0o600)
        }
        return copy
    }

    /// What the child reads of the folders of this host that the repositories' file:// servers
    /// name: each folder, and what each symlink in it leads to (a repository of links to packages
    /// kept elsewhere), as pacman would read them.
    static func serverPaths(of repositories: [Repository], arch: String) -> [String] {
        func found(_ path: String) -> String? {
            guard let resolved = realpath(path, nil) else { return nil }
            defer { free(resolved) }
            return String(cString: resolved)
        }
        var paths: [String] = []
        for folder in repositories.flatMap({ $0.fileServerFolders(arch: arch) }) {
            guard let real = found(folder) else { continue }
            paths.append(real)
            for name in (try? FileSystem.listDirectory(real)) ?? [] {
                let entry = real + "/" + name
                var st = stat()
                guard lstat(entry, &st) == 0, st.st_mode & S_IFMT == S_IFLNK, let target = found(entry) else { continue }
                paths.append(target)
            }
        }
        return paths
    }

    // MARK: The child's side

    /// The `packages` role: confines itself, does the job, and reports.
    static func work(_ request: NamespacedWork.Request) -> Int32 {
        var events = EventPipe(layer: "?")
        do {
            try NamespacedWork.dieWithParent(request)
            let job = try NamespacedWork.readJob(Job.self, at: request.jobPath)
            events = EventPipe(layer: job.layer)
            try NamespacedWork.settleNamespaces(hostname: "layerctl-packages", network: job.network)
            try confine(job, events: events)
            _ = fcntl(NamespacedWork.eventDescriptor, F_SETFD, FD_CLOEXEC)
            answer(job, events: events)
            // A session's further jobs (`NamespacedWork.Session`), under the first one's confinement.
            while let path = readLine() {
                guard let data = FileManager.default.contents(atPath: path),
                    let next = try? JSONDecoder().decode(Job.self, from: data)
                else {
                    events.send(BuildEvent(failure: SystemError("read", path, errno: EINVAL), layer: events.layer))
                    continue
                }
                answer(next, events: EventPipe(layer: next.layer))
            }
            return 0
        } catch {
            events.send(BuildEvent(failure: error, layer: events.layer))
            return 1
        }
    }

    /// Does `job` and sends its answer, `finished` or `failed`.
    private static func answer(_ job: Job, events: EventPipe) {
        var reached = false
        do {
            var finished = BuildEvent(.finished, layer: job.layer)
            finished.packageWork = try perform(job, events: events, reached: &reached)
            events.send(finished)
        } catch {
            var failed = BuildEvent(failure: error, layer: events.layer)
            failed.alpmError = error as? AlpmError
            failed.fileLimitReached = reached ? true : nil
            events.send(failed)
        }
    }

    private static func perform(_ job: Job, events: EventPipe, reached: inout Bool) throws -> Outcome {
        let handle = try AlpmHandle(root: job.root, dbPath: job.dbPath)
        if let keyring = job.keyring { try handle.setGPGDir(keyring) }
        switch job.operation {
        case .refresh:
            for repository in job.repositories { try handle.register(repository, arch: job.arch) }
            try DownloadLimit.files(atMost: job.largestDownload, reached: &reached) { try handle.refresh(force: job.force) }
            return Outcome()
        case .resolve:
            try handle.setArchitectures([job.arch])
            for repository in job.repositories { try handle.register(repository, arch: job.arch) }
            try handle.checkDatabasesValid()
            try handle.checkFileNames()
            let resolution = try handle.resolve(job.request)
            var relations: [String: Relations] = [:]
            for package in resolution.install {
                if let found = handle.relations(of: package.name, in: package.repository) {
                    relations[package.name] = Relations(depends: found.depends, provides: found.provides)
                }
            }
            return Outcome(
                resolution: resolution, relations: relations, providerChoices: handle.providerChoices,
                newer: handle.newerVersions(of: job.request.ignore))
        case .fetch:
            try handle.setArchitectures([job.arch])
            guard let cache = job.cache else { throw SystemError("fetch into", "no cache", errno: EINVAL) }
            if job.offline == true {
                if let lack = try registerOffline(handle, job, cache: cache) { return Outcome(offlineLack: lack) }
            } else {
                for repository in job.repositories { try handle.register(repository, arch: job.arch) }
                try keepCachedPackages(handle, job, cache: cache)
            }
            try handle.checkDatabasesValid()
            try handle.checkFileNames()
            try handle.addCacheDir(cache)
            try handle.setParallelDownloads(5)
            // libalpm's error lines, and its warnings that an error says again, wait for the outcome.
            // A fetch that fails is one error that quotes them (an `AlpmError`'s details) or says
            // what they mean (a download that failed, a key the keyring lacks); shown first, they
            // said it twice. A fetch that succeeds shows them, as pacman does: a server that failed
            // before another one served the file.
            var held: [BuildEvent] = []
            handle.observer = { event in
                if BuildEvent.repeatsResolution(event) { return }
                if case .log(let level, let message) = event, level == .error || Self.isHeldWarning(message) {
                    held.append(BuildEvent(alpm: event, layer: job.layer))
                } else {
                    events.send(BuildEvent(alpm: event, layer: job.layer))
                }
            }
            let resolution: Resolution
            do {
                resolution = try DownloadLimit.files(atMost: job.largestDownload, reached: &reached) {
                    try handle.commit(job.request, downloadOnly: true)
                }
            } catch let error as AlpmError {
                throw error
            } catch {
                for event in held { events.send(event) }
                throw error
            }
            for event in held { events.send(event) }
            // The builder's libalpm opens a package as a tar alone (archive_readers.c).
            let notTar = resolution.install.map(\.filename).filter { !AlpmHandle.opensAsTar(cache + "/" + $0) }
            return Outcome(resolution: resolution, notTar: notTar)
        }
    }

    /// Registers the repositories of an `--offline` fetch, which finds each package in `cache` or
    /// on a file:// server, and returns what it lacks. A repository keeps its file:// servers
    /// alone, and one with none gets a folder that is not there (libalpm refuses a repository
    /// without a server, even when it fetches nothing from it). libalpm fetches a cached package
    /// again when its repository checks package signatures and its `.sig` is not cached, though
    /// it checks the signature the database holds, where it holds one (repo-add writes it): that
    /// one is written as the `.sig`. A repository of unsigned packages under `Optional`
    /// (makepkg's, the AUR's) has none anywhere: with no file:// server it is registered again
    /// checking no package signature, when no package the fetch takes from it has one, and
    /// `Optional` passes each on the sha256 its database gives, as libalpm would have after
    /// fetching it again.
    private static func registerOffline(_ handle: AlpmHandle, _ job: Job, cache: String) throws -> OfflineLack? {
        let nowhere = "file://" + job.root + "/offline"
        let inCache = { (name: String) in FileSystem.exists(cache + "/" + name) }
        let named = { (package: PackageFile) in "package \(package.name) \(package.version) of repository \(package.repository)" }
        let remote = Set(job.repositories.filter { !$0.hasFileServer }.map(\.name))
        let expected = (job.expected ?? []).filter { remote.contains($0.repository) }
        for repository in job.repositories {
            var local = repository.withFileServersOnly
            if local.servers.isEmpty { local.servers = [nowhere] }
            try handle.register(local, arch: job.arch)
        }
        // A repository's file:// folders may lack what its other servers have (one that has
        // only file:// servers fails as it would online).
        let folders = Dictionary(job.repositories.map { ($0.name, $0.fileServerFolders(arch: job.arch)) }) { first, _ in first }
        let networked = Set(job.repositories.filter { $0.servers.contains { !$0.hasPrefix("file://") } }.map(\.name))
        let missing = (job.expected ?? []).filter { package in
            networked.contains(package.repository) && !inCache(package.filename)
                && !(folders[package.repository] ?? []).contains { FileSystem.exists($0 + "/" + package.filename) }
        }
        if let first = missing.first {
            return OfflineLack(package: first.filename, what: named(first) + (missing.count > 1 ? " (and \(missing.count - 1) more)" : ""))
        }
        for repository in job.repositories where remote.contains(repository.name) {
            let level = repository.signatureLevel ?? .pacmanDefault
            guard level.checksPackagesOptionally || level.requiresPackageSignatures else { continue }
            let (signed, unsigned) = try signatures(
                of: expected.filter { $0.repository == repository.name }, in: repository.name, handle, cache: cache)
            guard let first = unsigned.first else { continue }
            if level.requiresPackageSignatures {
                return OfflineLack(package: first.filename, what: "the signature (.sig) of \(named(first)), which its siglevel requires")
            }
            if signed > 0 {
                return OfflineLack(
                    package: first.filename, what: "the signature (.sig) of \(named(first)), whose repository's other packages have theirs")
            }
            try handle.unregister(repository.name)
            try handle.register(
                Repository(name: repository.name, servers: [nowhere], signatureLevel: level.checkingNoPackage), arch: job.arch)
        }
        return nil
    }

    /// Where `cache` lacks the `.sig` of a package of `packages` (all of `repository`), writes the
    /// signature its database holds, as repo-add wrote it there; returns how many have a `.sig`
    /// then, and those that have none.
    private static func signatures(
        of packages: [PackageFile], in repository: String, _ handle: AlpmHandle, cache: String
    ) throws -> (signed: Int, unsigned: [PackageFile]) {
        var unsigned: [PackageFile] = []
        var signed = 0
        for package in packages {
            let signature = cache + "/" + package.filename + ".sig"
            if !FileSystem.exists(signature), let held = handle.databaseSignature(package.name, in: repository) {
                try FileSystem.writeFile(Data(held), to: signature)
            }
            if FileSystem.exists(signature) { signed += 1 } else { unsigned.append(package) }
        }
        return (signed, unsigned)
    }

    /// Keeps an online fetch from downloading a cached package again. libalpm does that when the
    /// package's repository checks package signatures and no `.sig` is cached, though it checks the
    /// signature the database holds, where it holds one: that one is written as the `.sig`. A
    /// repository of unsigned packages under `Optional` (makepkg's, the AUR's) has none anywhere,
    /// and each rebuild downloaded every package of it again: where the fetch takes from it only
    /// cached packages, none signed, it is registered again checking no package signature, and
    /// `Optional` passes each on the sha256 its database gives, as libalpm would have after
    /// downloading it again.
    private static func keepCachedPackages(_ handle: AlpmHandle, _ job: Job, cache: String) throws {
        for repository in job.repositories {
            let level = repository.signatureLevel ?? .pacmanDefault
            guard level.checksPackagesOptionally || level.requiresPackageSignatures else { continue }
            let cached = (job.expected ?? []).filter {
                $0.repository == repository.name && FileSystem.exists(cache + "/" + $0.filename)
            }
            let (signed, unsigned) = try signatures(of: cached, in: repository.name, handle, cache: cache)
            let taken = (job.expected ?? []).filter { $0.repository == repository.name }.count
            guard !level.requiresPackageSignatures, signed == 0, !unsigned.isEmpty, unsigned.count == taken else { continue }
            try handle.unregister(repository.name)
            try handle.register(
                Repository(name: repository.name, servers: repository.servers, signatureLevel: level.checkingNoPackage),
                arch: job.arch)
        }
    }

    /// Detaches every mount of this namespace that none of `paths` lies in or under. The child
    /// lives as long as the build, and its mounts are copies of the host's: where the host's are
    /// private (a host without systemd, which makes `/` shared), no unmount of the host's reaches
    /// them, and a disk the host unmounted during a build stayed alive here, its data unwritten,
    /// until the build ended. What Landlock lets the child read or write stays (a path is taken
    /// for what it leads to, as Landlock takes it).
    static func detachMounts(keeping paths: [String]) {
        let kept = paths.compactMap { path -> String? in
            guard let real = realpath(path, nil) else { return nil }
            defer { free(real) }
            return String(cString: real)
        }
        guard let table = try? MountTable() else { return }
        // Deepest first: a mount goes before the one it is on.
        for target in table.entries.map(\.target).sorted(by: { $0.count > $1.count }) where target != "/" {
            let needed = kept.contains { $0 == target || $0.hasPrefix(target + "/") || target.hasPrefix($0 + "/") }
            if !needed { umount2(target, Int32(MNT_DETACH)) }
        }
    }

    /// libalpm's warnings that a failure's error says again: about a download that failed (each
    /// server's line is an error; this is their summary), and about a keyring that is not there.
    static func isHeldWarning(_ message: String) -> Bool {
        message.hasPrefix("failed to retrieve some files") || message.hasPrefix("Public keyring not found")
    }

    /// A /proc of the child's own pid namespace, a private /run/user (where gpg would put its
    /// sockets), Landlock on the paths, no capability, and the system calls a build is refused.
    private static func confine(_ job: Job, events: EventPipe) throws {
        try Mounter.mount("proc", at: "/proc", type: "proc", options: "nosuid,nodev,noexec")
        var writable = job.writable + devices
        if FileSystem.isDirectory("/run/user") {
            try Mounter.mount("tmpfs", at: "/run/user", type: "tmpfs", options: "mode=0755,nosuid,nodev,size=1m")
            writable.append("/run/user")
        }
        let readable = systemPaths + job.readable
        detachMounts(keeping: readable + writable)
        let confined = Confinement.landlock(readable: readable, writable: writable)
        if confined == EOPNOTSUPP {
            events.send(.warning, "this kernel has no Landlock: libalpm reads the repositories' data without a limit on the paths it may open")
        } else if confined != 0 {
            throw SystemError("confine with Landlock", "the package work", errno: confined)
        }
        try Confinement.dropPrivileges(keeping: [], scoping: false)
    }
}

extension Repository {
    /// Whether a server is a folder of this host's (`file://`).
    var hasFileServer: Bool { servers.contains { $0.hasPrefix("file://") } }

    /// The folders its file:// servers name, for `arch`.
    func fileServerFolders(arch: String) -> [String] {
        expandedServers(arch: arch).filter { $0.hasPrefix("file://") }.map { server in
            let written = String(server.dropFirst("file://".count))
            return written.removingPercentEncoding ?? written
        }
    }

    /// The repository with its file:// servers alone: what an `--offline` build may fetch from.
    var withFileServersOnly: Repository {
        var local = self
        local.servers = servers.filter { $0.hasPrefix("file://") }
        return local
    }
}
