import Alpm
import Foundation
import Glibc
import LayerEntries
import LayerRecipe
import LayerStore
import LayerSupport

/// Builds a recipe's layers root first: resolve each layer's packages against its parents, compute
/// its key, reuse the stored layer or build it in a builder child, and commit it atomically.
public final class StackBuilder {
    let options: BuildOptions
    let observer: (BuildEvent) -> Void
    private var store: Store { options.store }
    /// Where layers are looked up by key before they are built, and saved after (`--cache-from`,
    /// `--cache-to`).
    public var sharedCache: (any SharedLayerCache)?
    /// Pulls the image a recipe's first layer file names in `from:` into the store; called once the
    /// build holds the store's lock, so a `gc` cannot take the image before the layers on it stand.
    public var pullImage: ((String) throws -> BaseImage)?
    /// With `options.recordWriters`: for each layer built, each path of its tree (`/etc/built`)
    /// and what wrote it last: a `run:` step (`run 1 \`date > /etc/built\` at FILE:LINE:COL`), or
    /// nil for the package transaction and `files:`.
    public internal(set) var writers: [String: [String: String]] = [:]

    public init(options: BuildOptions, observer: @escaping (BuildEvent) -> Void) {
        self.options = options
        // libalpm says some warnings (`busybox-1.35.0-1 is up to date -- skipping`) both where the
        // layer is resolved and where it is built: each is said once for its layer.
        var said = Set<[String]>()
        self.observer = { event in
            if event.kind == .warning, !said.insert([event.layer, event.message ?? ""]).inserted { return }
            observer(event)
        }
    }

    public func build(_ recipe: Recipe) throws -> [BuiltLayer] {
        try store.sweepTemporary()
        let storeLock = try store.lock(.shared)
        defer { storeLock.unlock() }
        let session = try store.makeTemporary("session")
        defer { try? FileSystem.removeTree(session) }
        // libalpm works in two children (`PackageWork`): the resolutions without the network, the
        // refreshes and downloads with it, reading the file:// servers of every repository here.
        let resolutions = PackageWork.Child(folder: session, network: false, writable: [session], observe: observer)
        defer { resolutions.end() }
        let everyRepository = try recipe.layers.indices.flatMap { try recipe.repositories(for: $0).map(repository) }
        // --offline: no network at all, for the refreshes it skips and the fetches from file:// servers.
        let downloads = PackageWork.Child(
            folder: session, network: !options.offline, readable: PackageWork.serverPaths(of: everyRepository, arch: recipe.arch),
            writable: [session, store.cacheDirectory + "/sync"], observe: observer)
        defer { downloads.end() }

        var base: BaseImage?
        if let image = recipe.baseImage {
            // Pulled, or with --offline as the store's last pull of the reference left it.
            guard let pullImage else {
                throw BuildFailure("`from: \(image.value)` names an image, and this build has no registry", at: image.location.description, code: .input)
            }
            do { base = try pullImage(image.value) } catch { throw BuildFailure(error, at: image.location.description) }
        }
        var built: [BuiltLayer] = []
        var parentKey = base?.key
        var parentTrees = try parentKey.map { try store.shownTrees($0) } ?? []
        var snapshots: [String: String] = [:]
        var environment: [String: String] = [:]
        var trustedKeys: [String]?  // the keyring is listed once per build, if at all
        var locks: [(layer: String, layerFile: String, path: String, lock: LockFile)] = []  // written once every layer stands
        for (index, layer) in recipe.layers.enumerated() {
            let started = Date()
            let declared = recipe.repositories(for: index)
            let repositories = try declared.map(repository)
            // Where the layer files declare each repository, for messages about it.
            let locations = Dictionary(declared.map { ($0.name, $0.location) }, uniquingKeysWith: { $1 })
            let sync = SyncCache(store: store, arch: recipe.arch, repositories: repositories, gpgDirectory: options.keyring)
            let snapshot: String
            if let existing = snapshots[sync.directory] {
                snapshot = existing
            } else {
                snapshot = session + "/sync-\(snapshots.count)"
                do {
                    try sync.snapshot(
                        into: snapshot, offline: options.offline, downloads: downloads, layer: layer.name,
                        locate: { locations[$0]?.description })
                } catch let error as AlpmError where !error.missingKeys.isEmpty {
                    throw BuildFailure(missingKeys: error, keyring: options.keyring) { name in
                        locations[name]?.description ?? layer.path
                    }
                }
                snapshots[sync.directory] = snapshot
            }
            for variable in layer.env { environment[variable.name] = variable.value }
            var spec = try makeSpec(
                layer, arch: recipe.arch, environment: environment, boot: recipe.boot(for: index)?.value,
                noExtract: recipe.noExtract(for: index))
            if index == 0 { spec.image = base?.reference }
            let request = TransactionRequest(
                install: layer.packages.map(\.value), remove: layer.remove.map(\.value), sysupgrade: layer.upgrade?.value ?? false,
                ignore: layer.ignore.map(\.value))
            let resolver = PackageResolver(
                parents: try parentTrees.map { try FolderSource($0) }, arch: recipe.arch, repositories: repositories,
                syncSnapshot: snapshot)
            let resolved: PackageResolver.Resolved
            let place = layer.packages.first?.location.description ?? layer.path
            let watch = { [name = layer.name, options] (pid: pid_t) in
                ResolutionWatch.start(
                    pid: pid, seconds: min(options.layerTimeLimit ?? ResolutionWatch.seconds, ResolutionWatch.seconds),
                    memory: min(options.memoryLimit ?? ResolutionWatch.memory, ResolutionWatch.memory)
                ) { limit in
                    BuildFailure("resolving the packages of layer \(name) took \(limit): its repositories' dependencies are more than libalpm resolves in reason", at: place, code: .packages)
                }
            }
            do {
                resolved = try resolver.resolve(request, layer: layer.name, in: resolutions, watch: watch)
            } catch let error as AlpmError {
                throw locate(error, in: layer, repositories: locations)
            } catch let failure as BuildFailure where failure.location == nil {
                // The layers below, which `from:` names; with none, the packages asked for.
                throw BuildFailure(failure, at: parentTrees.isEmpty ? place : layer.fromLocation.description)
            }
            let resolution = resolved.resolution
            // Said of the layer this resolution makes, when it is made or comes into this store:
            // a layer the store holds was warned of when it was built.
            var warnings = resolved.providerWarnings(targets: Set(layer.packages.map(\.value))) + resolved.ignoreWarnings()
            if layer.upgrade?.value != true, let parentKey, let warning = try partialUpgrade(resolution, below: parentKey) {
                warnings.append(warning)
            }
            let lock = try LayerLock(
                policy: options.locks, layer: layer,
                current: LockFile(
                    arch: recipe.arch, inputs: recipe.lockInputs(for: index),
                    parent: index == 0 ? base.map { "image " + $0.reference } ?? "scratch" : parentKey ?? "scratch",
                    packages: resolution.install.map(LockFile.Package.init)))
            let closure = { (names: Set<String>) in resolved.dependencyClosure(of: names) }
            if let changed = try lock.settle(closure: closure) { locks.append((layer.name, layer.path, lock.path, changed)) }
            let key = LayerKey.compute(parent: parentKey, spec: spec, resolved: resolution.install)
            observer(BuildEvent(.resolved, layer: layer.name, message: counted(resolution.install.count, "package") + " to install", key: key))

            let signatures = try SignatureProof.current(repositories: repositories) {
                if let trustedKeys { return trustedKeys }
                let listed = try Keyring.trustedKeys(home: options.keyring)
                trustedKeys = listed
                return listed
            }
            var cached = !options.noCache && reusable(key, layer: layer.name, under: signatures)
            var shared = false
            // The shared cache stores what it has as a pull does, each layer under its own build lock.
            if !cached && !options.noCache, let sharedCache {
                do {
                    let taken = try sharedCache.fetch(key) { record in
                        guard let other = BuilderRules.otherRules(of: record) else { return true }
                        self.observer(BuildEvent(.warning, layer: layer.name, message: "the shared cache's layer was \(other): building it"))
                        return false
                    }
                    shared = taken && reusable(key, layer: layer.name, under: signatures)
                    cached = shared
                    if shared { observer(BuildEvent(.step, layer: layer.name, message: "taken from the shared cache")) }
                } catch {
                    observer(BuildEvent(.warning, layer: layer.name, message: "the shared cache failed (\(error)); building it"))
                }
            }
            if !cached || shared {
                for warning in warnings { observer(BuildEvent(.warning, layer: layer.name, message: warning)) }
            }
            if !cached {
                let lock = try store.buildLock(key) {
                    self.observer(BuildEvent(.step, layer: layer.name, message: "waiting for another layerctl that builds it"))
                }
                defer { lock.unlock() }
                // Another build may have made it meanwhile.
                cached = !options.noCache && reusable(key, layer: layer.name, under: signatures, quiet: true)
                if !cached {
                    observer(BuildEvent(.building, layer: layer.name, key: key))
                    do {
                        try buildLayer(
                            layer, key: key, parent: parentKey, spec: spec, boot: recipe.boot(for: index),
                            resolution: resolution, request: request, resolver: resolver, downloads: downloads,
                            parentTrees: parentTrees, repositories: repositories, snapshot: snapshot, arch: recipe.arch,
                            environment: environment, started: started, signatures: signatures,
                            repositoryLocations: locations, syncDatabases: repositories.isEmpty ? nil : sync.name)
                    } catch let lacking as OfflineShortfall {
                        guard !options.noCache, let other = otherRulesAlone(key, under: signatures) else { throw lacking.failure }
                        observer(BuildEvent(
                            .warning, layer: layer.name,
                            message: "--offline, and the store's cache lacks \(lacking.what): the stored layer serves this build as it "
                                + "was made (\(other)); build without --offline to make it anew"))
                        cached = true
                    } catch let failure as BuildFailure where failure.location == nil {
                        // Name the line of the package concerned, or at least the layer file.
                        let line = location(ofPackages: failure.packages, in: layer, resolved: resolved)
                        throw BuildFailure(failure, at: line?.description ?? layer.path)
                    }
                }
            }
            // Built, or found in this store: the shared cache gets it (a push of what it has costs a
            // question per blob).
            if !shared, let sharedCache {
                do { try sharedCache.save(key) } catch {
                    observer(BuildEvent(.warning, layer: layer.name, message: "saving it to the shared cache failed: \(error)"))
                }
            }
            try store.setRef(layer.name, to: key)
            let seconds = Date().timeIntervalSince(started)
            observer(BuildEvent(cached ? .cached : .built, layer: layer.name, key: key, seconds: seconds))
            built.append(BuiltLayer(name: layer.name, key: key, cached: cached, seconds: seconds))
            parentKey = key
            parentTrees.append(store.tree(key))
        }
        for (layer, layerFile, path, lock) in locks {
            try lock.write(to: path, beside: layerFile)
            observer(BuildEvent(.step, layer: layer, message: "wrote \(path)"))
        }
        return built
    }

    /// Whether the stored layer `key` may serve this build: it exists, it was made under this
    /// layerctl's builder rules, and the signature policy it was checked under covers the one in
    /// force. When it does not, the layer is built again.
    private func reusable(_ key: String, layer: String, under policy: SignatureProof, quiet: Bool = false) -> Bool {
        guard store.contains(key), let record = try? store.record(key) else { return false }
        let shortfall = Self.shortfall(of: record, against: policy)
        let reason: String
        if let other = BuilderRules.otherRules(of: record) {
            reason = "the stored layer was \(other): building it again"
        } else if let shortfall {
            reason = "the stored layer was built under a weaker signature policy (\(shortfall)); building it again"
        } else {
            return true
        }
        if !quiet { observer(BuildEvent(.warning, layer: layer, message: reason)) }
        return false
    }

    /// How the signature policy `record` was checked under falls short of `policy`, if it does.
    private static func shortfall(of record: LayerRecord, against policy: SignatureProof) -> String? {
        record.signatures.map { $0.shortfall(against: policy) }
            ?? (policy.levels.values.contains { SignatureLevel(rawValue: $0).checksSignatures }
                ? "its record does not say which signature policy it was checked under" : nil)
    }

    /// What made the stored layer `key`, when only that keeps it from serving this build: other
    /// builder rules (`BuilderRules.otherRules`). Under `--offline`, when its packages are not all
    /// at hand, it serves as it was made rather than fail the build.
    private func otherRulesAlone(_ key: String, under policy: SignatureProof) -> String? {
        guard store.contains(key), let record = try? store.record(key), Self.shortfall(of: record, against: policy) == nil
        else { return nil }
        return BuilderRules.otherRules(of: record)
    }

    /// A warning when `resolution`, of a layer without `upgrade: true`, installs another version of
    /// packages that the stack `below` (its key is the top's) installed: an image built months ago,
    /// or a locked base, under a layer that needs newer libraries. The rest of what is below stays
    /// as it was built: pacman calls this a partial upgrade, which Arch does not support.
    func partialUpgrade(_ resolution: Resolution, below: String) throws -> String? {
        let installed = Dictionary(
            try options.store.record(below).installed.map { ($0.name, $0.version) }, uniquingKeysWith: { a, _ in a })
        let moved = resolution.install.compactMap { package in
            installed[package.name].flatMap { $0 == package.version ? nil : (package, $0) }
        }
        guard let (first, old) = moved.first else { return nil }
        let more = moved.count > 1 ? " and \(moved.count - 1) more" : ""
        return "this layer installs \(clip(first.name, to: 100)) \(clip(first.version, to: 60)) over \(clip(old, to: 60)) of the "
            + "layers below\(more), while the rest of them stay as they were built: pacman calls this a partial upgrade, "
            + "which Arch does not support; `upgrade: true` in this layer upgrades them all, as pacman -Syu does"
    }

    /// The tree of `file`'s source folder at `path`; what cannot be copied is an error at the entry.
    static func sourceTree(_ path: String, of file: FileSpec) throws -> SourceTree {
        do { return try SourceTree.read(path, to: file.path) } catch let refused as SourceTree.Refused {
            throw LayerFileError("`source` folder \(path) \(refused)", at: file.location)
        } catch {
            throw LayerFileError("reading source folder \(path) failed: \(error)", at: file.location)
        }
    }

    private func repository(_ spec: RepoSpec) throws -> Repository {
        var level: SignatureLevel?
        if let words = spec.siglevel, case .success(let parsed) = SignatureLevel.parse(words) { level = parsed }
        // The Archive's folders are the day's parts: repos/2024/06/01/.
        let day = spec.snapshot?.replacingOccurrences(of: "-", with: "/")
        let servers = day.map { ["\(options.archive)/repos/\($0)/$repo/os/$arch"] } ?? spec.allServers
        return Repository(name: spec.name, servers: servers, signatureLevel: level)
    }

    private func makeSpec(
        _ layer: LayerFile, arch: String, environment: [String: String], boot: BootFlavour?, noExtract: [String]
    ) throws -> LayerSpec {
        let files = try layer.files.map { file -> LayerSpec.FileEntry in
            let digest: String
            var link: String?
            switch file.content {
            case .inline(let text): digest = Digest.sha256(Data(text.utf8))
            case .source(let path):
                do { digest = try Digest.sha256(file: path) } catch {
                    throw LayerFileError("reading source \(path) failed: \(error)", at: file.location)
                }
            case .link(let target):
                digest = Digest.sha256(Data(target.utf8))
                link = target
            case .tree(let path):
                digest = try Self.sourceTree(path, of: file).digest
            }
            return LayerSpec.FileEntry(
                path: file.path, mode: file.mode, owner: file.owner, sha256: digest, link: link,
                tree: { if case .tree = file.content { true } else { false } }())
        }
        return LayerSpec(
            arch: arch, packages: layer.packages.map(\.value).sorted(), remove: layer.remove.map(\.value).sorted(),
            files: files.sorted { $0.path < $1.path }, run: layer.run.map(\.value),
            env: environment.sorted { $0.key < $1.key }.map { EnvVariable(name: $0.key, value: $0.value) },
            sourceDateEpoch: options.sourceDateEpoch, boot: boot.map { ($0, $0.filesDigest) },
            network: layer.network?.value ?? false, noExtract: noExtract, upgrade: layer.upgrade?.value ?? false,
            ignore: layer.ignore.map(\.value))
    }

    /// The place of the `packages:` or `remove:` item that is one of `names`, or else of the first
    /// `packages:` item that needs one of them, by the resolution's dependencies: a dependency's
    /// failure is at the line that brought it in.
    func location(ofPackages names: [String], in layer: LayerFile, resolved: PackageResolver.Resolved) -> FileLocation? {
        if let direct = layer.location(ofPackage: names) { return direct }
        let blamed = Set(names)
        guard !blamed.isEmpty else { return nil }
        return layer.packages.first { item in
            !resolved.dependencyClosure(of: [TransactionRequest.packageName(of: item.value)]).isDisjoint(with: blamed)
        }?.location
    }

    /// A libalpm error about one of the layer's packages, at that package's line; about a
    /// repository's database, at the repository's place in `repositories`.
    func locate(_ error: AlpmError, in layer: LayerFile, repositories: [String: FileLocation] = [:]) -> BuildFailure {
        // An upgrade needs a newer version of a package `ignore:` holds: libalpm does not take it,
        // as pacman does not, and the layer file's place to change is the `ignore:` item.
        for pattern in layer.ignore {
            guard let held = error.missingDependencies.first(where: { TransactionRequest.ignores([pattern.value], $0) }) else { continue }
            let needers = error.packages.prefix(3).map { clip($0, to: 100) }
            let said = error.details.prefix(3).map { clip($0, to: 200) }.joined(separator: "; ")
            return BuildFailure(
                "\(needers.isEmpty ? "a package" : needers.joined(separator: " and ")) \(needers.count > 1 ? "need" : "needs") a "
                    + "newer \(clip(held, to: 100)) than the layers below hold, and `ignore:` keeps theirs (\(said)): "
                    + "take \(clip(pattern.value, to: 100)) out of ignore:, or leave out what needs it",
                at: pattern.location.description, code: .packages)
        }
        if let repository = error.repository, let place = repositories[repository] {
            return BuildFailure(error, at: place.description)
        }
        // The packages libalpm blames may be in the layers below (what a removal leaves without a
        // dependency): then the layer's own targets that it named.
        let requested = (error.subject ?? "").split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }
        let place = layer.location(ofPackage: error.packages) ?? layer.location(ofPackage: requested)
        guard !error.installedConflicts.isEmpty else { return BuildFailure(error, at: place?.description ?? layer.path) }
        // Where pacman asks "Remove X? [y/N]", a layer file answers before: with `remove:`.
        let names = error.installedConflicts.map { clip($0, to: 100) }
        let advice = "\(names.joined(separator: " and ")) \(names.count == 1 ? "is" : "are") installed below this layer: "
            + "`remove: [\(names.joined(separator: ", "))]` in this layer takes \(names.count == 1 ? "it" : "them") out "
            + "in the same transaction (where pacman would ask whether to remove \(names.count == 1 ? "it" : "them"))"
        return BuildFailure(error, at: place?.description ?? layer.path, advice: advice)
    }
}
