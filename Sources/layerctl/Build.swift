import ArgumentParser
import Foundation
import LayerBuilder
import LayerCheck
import LayerRecipe
import LayerShare
import LayerStore
import LayerSupport
import RegistryClient

extension LayerCtl {
    struct Build: ParsableCommand, JSONCommand {
        static let configuration = CommandConfiguration(
            commandName: "build",
            abstract: "Builds a layer file and every layer it comes from.",
            discussion: """
                The layers are built root first. Each one is resolved with libalpm against its parent's packages, \
                and its key is the hash of its parent's key, its parsed content and the exact package files it \
                installs. A layer whose key is already in the store is reused; any other layer is built in a \
                private mount namespace and stored under its key. The ref of each layer file name is set to \
                the key just built, so `layerctl inspect NAME` finds it. With -o, the merged stack is then written \
                as an image, exactly as `layerctl export` writes it.

                A layer file whose `from:` names an image (REGISTRY/REPOSITORY[:TAG|@DIGEST]) is built upon it: the \
                image is pulled first, its tag resolved to a digest once, and that digest is part of the layer's key. \
                Given a reference instead of a layer file, build pulls that image, as `layerctl pull` does.
                """)

        @Argument(help: "The layer file to build, for example layers/gaming.yaml, or an image reference to pull.")
        var file: String

        @OptionGroup(title: "Registry") var registryArguments: RegistryArguments

        @Option(help: "A registry repository to take layers from by key (tag layer-KEY) instead of building them.")
        var cacheFrom: String?

        @Option(help: "A registry repository to push each layer built to, tagged layer-KEY, for --cache-from.")
        var cacheTo: String?

        @OptionGroup var storeOptions: StoreOptions

        @Flag(name: .long, help: "Build every layer again, even the ones the store already holds.")
        var noCache = false

        @Flag(
            name: .long,
            help: "Fetch nothing over the network: the repository databases are the store's copies, the packages come from its cache, the host's or file:// servers.")
        var offline = false

        @Flag(name: .long, help: "Print one JSON object per event, and a summary at the end, instead of text.")
        var json = false

        @OptionGroup(title: "Image") var image: ImageArguments

        @OptionGroup(title: "Packages") var packageArguments: PackageArguments

        @Flag(help: "Build only what the locks pin: fail, naming the layer, when a lock is missing or stale. No lock is written.")
        var locked = false

        @Option(
            help: "How long one layer's build may take, in seconds, before it is stopped with everything it ran; 0 for no limit.")
        var timeout: Double = BuildOptions.defaultLayerTimeLimit

        @OptionGroup(title: "Limits") var limits: LimitArguments

        @Option(help: ArgumentHelp("Where the boot hook describes the running image.", visibility: .hidden))
        var runDir: String = "/run/layerctl"

        @Flag(
            help:
                "Build the chain twice, in two fresh stores under different conditions, and name every file that differs with what wrote it; exit 1 when anything differs. The store is not changed."
        )
        var check = false

        func validate() throws {
            guard timeout >= 0 && timeout.isFinite else { throw ValidationError("--timeout takes a number of seconds, 0 for no limit") }
            if check && (cacheFrom != nil || cacheTo != nil || image.output != nil) {
                throw ValidationError("--check builds in stores of its own: it takes no --cache-from, --cache-to or -o")
            }
            if offline && (cacheFrom != nil || cacheTo != nil) {
                throw ValidationError("--offline fetches nothing over the network, and --cache-from and --cache-to name a registry: give one or the other")
            }
        }

        func run() throws {
            try NamespacedWork.requireHost("layerctl build")
            let store = try storeOptions.open()
            if ImageReference.looksLikeReference(file) && !FileManager.default.fileExists(atPath: file) {
                // Nothing to build: the image is pulled, and exported with -o.
                let options = image.output != nil && image.format == "squashfs" ? try image.imageOptions() : nil
                let source = try registryArguments.source(file, in: store, json: json, options: options)
                if let output = image.output {
                    try image.export(
                        store: store, key: source.key, output: output, json: json, inside: true,
                        knownBlocks: source.knownBlocks)
                }
                return
            }
            let recipe = try Recipe.load(file)
            var options = try packageArguments.options(store: store)
            options.noCache = noCache
            options.offline = offline
            options.locks = locked ? .locked : .follow
            options.layerTimeLimit = timeout > 0 ? timeout : nil
            options.maxProcesses = limits.processes
            options.memoryLimit = limits.memoryLimit
            let reporter = BuildReporter(json: json)
            if check {
                try runCheck(recipe, options: options, store: store, reporter: reporter)
                return
            }
            if let place = Self.forgetting(store.root, runDirectory: runDir) {
                printNote(
                    "this system runs a layerctl image, and the store \(store.root) is on \(place), whose files are gone at the next "
                        + "boot: what is built there is too, and it holds this machine's memory meanwhile; --store (or LAYERCTL_STORE) "
                        + "on a disk keeps it")
            }
            let builder = StackBuilder(options: options, observer: reporter.report)
            builder.pullImage = registryArguments.basePuller(store: store, json: json, offline: offline)
            if cacheFrom != nil || cacheTo != nil {
                let quiet = ShareReporter(json: true)
                func endpoint(_ text: String?) throws -> (RegistryClient, ImageReference)? {
                    guard let text else { return nil }
                    let reference = try registryArguments.reference(text)
                    return (try registryArguments.client(for: reference, reporter: quiet), reference)
                }
                builder.sharedCache = RegistryCache(
                    RegistryLayerCache(
                        store: store, from: try endpoint(cacheFrom), to: try endpoint(cacheTo),
                        architecture: machineArchitecture(), unpacker: TarUnpackWork(), observer: quiet.event))
            }
            let built = try builder.build(recipe)
            reporter.finish(built)
            if let output = image.output, let top = built.last {
                try image.export(
                    store: options.store, key: top.key, asked: top.name, output: output, json: json, inside: true)
            }
        }
    }
}

extension LayerCtl.Build {
    /// `--check`: two builds, then what differs, or that nothing does; exit 1 when something does.
    func runCheck(_ recipe: Recipe, options: BuildOptions, store: Store, reporter: BuildReporter) throws {
        try store.sweepTemporary()
        let work = try store.makeTemporary("check")
        defer { try? FileSystem.removeTree(work) }
        let check = ReproducibilityCheck(
            recipe: recipe, options: options, pullImage: registryArguments.basePuller(store: store, json: json, offline: options.offline),
            observer: reporter.report)
        let report = try check.run(in: work)
        if json {
            try JSONOutput.print(report)
        } else {
            print("built \(recipe.layers.map(\.name).joined(separator: ", ")) twice:")
            for (index, conditions) in report.conditions.enumerated() {
                print("  \(index == 0 ? "first " : "second"): \(conditions), store \(report.stores[index])")
            }
            for difference in report.differences {
                print(
                    "\(difference.layer) \(difference.path): \(difference.what.joined(separator: ", "))"
                        + (difference.writer.map { "; written by \($0)" } ?? ""))
            }
            for layer in report.otherwise { print("\(layer): the trees differ in times only") }
            if report.images.count == 2 {
                print(
                    report.images[0] == report.images[1]
                        ? "image: the same, sha256 \(report.images[0])"
                        : "image: differs, sha256 \(report.images[0]) and \(report.images[1])")
            }
            print(report.reproducible ? "reproducible" : "not reproducible")
        }
        if !report.reproducible { throw ExitCode(1) }
    }
}

/// The builder's shared cache, as a registry repository.
struct RegistryCache: SharedLayerCache {
    let cache: RegistryLayerCache

    init(_ cache: RegistryLayerCache) { self.cache = cache }

    func fetch(_ key: String, accepting: (LayerRecord) -> Bool) throws -> Bool { try cache.fetch(key, accepting: accepting) }
    func save(_ key: String) throws { try cache.save(key) }
}

/// Where packages come from and what signs them: shared by `build` and `lock`.
struct PackageArguments: ParsableArguments {
    @Option(name: .long, help: "The GnuPG home with the keys that sign packages. It defaults to /etc/pacman.d/gnupg, as for pacman.")
    var keyring: String?

    @Option(
        name: .long,
        help: "Where `snapshot:` repositories are: a server laid out as the Arch Linux Archive (repos/YYYY/MM/DD/$repo/os/$arch). It defaults to $LAYERCTL_ARCHIVE, else https://archive.archlinux.org.")
    var archive: String?

    @Option(
        name: .long,
        help: "A folder of packages, as pacman's CacheDir, that a build copies a package from instead of downloading it, when the file there has the size and sha256 its database gives. It defaults to /var/cache/pacman/pkg, pacman's own, where there is one; it is never written.")
    var hostCache: String?

    @Flag(name: .long, help: "Take no package from the host's package cache: download what the store's cache lacks.")
    var noHostCache = false

    func validate() throws {
        if hostCache != nil && noHostCache { throw ValidationError("--host-cache and --no-host-cache exclude each other") }
        if let hostCache, !FileSystem.isDirectory(hostCache) { throw ValidationError("--host-cache \(hostCache) is no folder") }
    }

    func options(store: Store) throws -> BuildOptions {
        var options = try BuildOptions(store: store)
        if noHostCache { options.hostCache = nil }
        if let hostCache { options.hostCache = HostPackageCache(folder: URL(fileURLWithPath: hostCache).standardizedFileURL.path) }
        if let keyring { options.keyring = URL(fileURLWithPath: keyring).standardizedFileURL.path }
        if let archive = archive ?? ProcessInfo.processInfo.environment["LAYERCTL_ARCHIVE"], !archive.isEmpty {
            options.archive = archive.hasSuffix("/") ? String(archive.dropLast()) : archive
        }
        return options
    }
}

/// What a layer's build, or a shell in a layer, may take of the host: shared by `build` and
/// `shell`, whose commands are a stranger's as much as a build's are.
struct LimitArguments: ParsableArguments {
    @Option(help: "How many processes one layer's build (or a shell) may run at once (a pids cgroup); 0 for no limit.")
    var maxProcesses: Int = BuildOptions.defaultMaxProcesses

    @Option(
        help: ArgumentHelp(
            "How much memory one layer's build (or a shell) may take, its /tmp, /run and /dev/shm included, without swap (a memory cgroup): a size (512M, 8G) or a share of the machine's memory (75%); 0 for no limit.",
            valueName: "size"))
    var memory: String = "50%"

    /// `--max-processes`; nil for no limit.
    var processes: Int? { maxProcesses > 0 ? maxProcesses : nil }

    /// `--memory` in bytes; nil for no limit.
    var memoryLimit: Int64? { parsedMemory.flatMap { $0 > 0 ? $0 : nil } }

    /// `--memory` in bytes, 0 for no limit; nil when it is no size.
    private var parsedMemory: Int64? {
        parseByteSize(memory, percentOf: MachineMemory.total).flatMap { $0 == 0 || $0 >= 64 << 20 ? $0 : nil }
    }

    func validate() throws {
        guard maxProcesses >= 0 else { throw ValidationError("--max-processes takes a number of processes, 0 for no limit") }
        guard parsedMemory != nil else {
            throw ValidationError("--memory takes a size of at least 64M (512M, 8G) or a share of the machine's memory (75%), 0 for no limit")
        }
    }
}

extension RegistryArguments {
    /// What the builder calls for the image a layer file names in `from:`: it is pulled, or with
    /// `offline` taken as the store's last pull of that reference left it.
    func basePuller(store: Store, json: Bool, offline: Bool) -> (String) throws -> BaseImage {
        { text in
            guard offline else {
                let pulled = try pull(text, store: store, name: nil, json: json, quiet: true)
                return BaseImage(reference: pulled.reference, key: pulled.key)
            }
            let reference = try reference(text)
            // A digest names the image whatever tag is beside it, and whichever reference was pulled.
            let byDigest = reference.digest.map {
                ImageReference(registry: reference.registry, repository: reference.repository, tag: nil, digest: $0).description
            }
            guard let image = store.pulledImage(reference.description) ?? byDigest.flatMap(store.pulledImage) else {
                throw BuildFailure(
                    "\(reference) was not pulled into this store (or gc removed its layers), and --offline fetches nothing: "
                        + "build once without --offline, or `layerctl pull \(reference)`",
                    code: .input)
            }
            return BaseImage(reference: image.resolved, key: image.key)
        }
    }
}

extension LayerCtl.Build {
    /// On a system that runs a layerctl image (the hook's `boot.env` in `runDirectory`), what a
    /// store at `root` is on when that filesystem forgets at the next boot: a tmpfs, where the
    /// error about the image's overlay `/` (which cannot hold a layer's tree) sends a store.
    /// Elsewhere, a store on a tmpfs is one chosen for it (a test's, a CI's), and nil.
    static func forgetting(_ root: String, runDirectory: String) -> String? {
        guard FileSystem.exists(runDirectory + "/boot.env"), let mount = try? MountTable().mount(holding: root),
            mount.fstype == "tmpfs"
        else { return nil }
        return mount.fstype
    }
}
