import Foundation
import Glibc
import LayerBuilder
import LayerDiff
import LayerExport
import LayerRecipe
import LayerStore
import LayerSupport
import SquashfsImage

/// `build --check`: builds a recipe twice, in two fresh stores and under different conditions,
/// and compares every layer's tree and the two images. What differs is named: each path, what
/// about it differs, and what wrote it (a package, a `run:` step, `files:`).
public struct ReproducibilityCheck {
    /// The conditions of one of the two builds: what the process around the builder looks like.
    public struct Conditions: Sendable, CustomStringConvertible {
        public var umask: mode_t
        public var timeZone: String
        public var locale: String
        /// The soft limits of open files and of the stack (`ulimit -n`, `ulimit -s`, in bytes).
        public var openFiles: UInt64
        public var stack: UInt64
        /// Worker threads of the image's compressor.
        public var jobs: Int

        public var description: String {
            "umask \(String(format: "%04o", UInt32(umask))), TZ=\(timeZone), LANG=\(locale), "
                + "ulimit -n \(openFiles) -s \(stack >> 10), \(jobs) compressor job\(jobs == 1 ? "" : "s")"
        }
    }

    public static let first = Conditions(
        umask: 0o022, timeZone: "UTC", locale: "C.UTF-8", openFiles: 1024, stack: 8 << 20, jobs: 1)
    public static let second = Conditions(
        umask: 0o077, timeZone: "Pacific/Kiritimati", locale: "POSIX", openFiles: 4096, stack: 64 << 20, jobs: 2)

    /// One path that differs between the two builds.
    public struct Difference: Sendable, Codable, Equatable {
        public var layer: String
        public var path: String
        /// What differs: content, mode, owner, xattrs, type, target…; or "only in the first
        /// build" / "only in the second build".
        public var what: [String]
        /// The package that owns the path, or the step that wrote it, or nil when neither is known.
        public var writer: String?
    }

    public struct Report: Sendable, Codable {
        public var layers: [String]
        public var stores: [String]
        public var conditions: [String]
        public var differences: [Difference]
        /// sha256 of each build's image of the top layer.
        public var images: [String]
        /// Layers whose trees differ in nothing the comparison names (times, say).
        public var otherwise: [String]

        public var reproducible: Bool { differences.isEmpty && otherwise.isEmpty && images.count == 2 && images[0] == images[1] }
    }

    let recipe: Recipe
    let options: BuildOptions
    let pullImage: ((String) throws -> BaseImage)?
    let observer: (BuildEvent) -> Void

    public init(
        recipe: Recipe, options: BuildOptions, pullImage: ((String) throws -> BaseImage)?, observer: @escaping (BuildEvent) -> Void
    ) {
        self.recipe = recipe
        self.options = options
        self.pullImage = pullImage
        self.observer = observer
    }

    /// Builds twice under `work` (a folder it empties) and compares. The second store sits deeper
    /// than the first and, where /dev/shm is a tmpfs, on another filesystem (another order of
    /// directory entries); the second build starts at another second of the clock.
    public func run(in work: String) throws -> Report {
        var stores = [work + "/first"]
        let shm = "/dev/shm/layerctl-check-\(getpid())"
        if Self.isTmpfs("/dev/shm") && !Self.isTmpfs(work) {
            stores.append(shm + "/second/store/a/little/deeper")
        } else {
            stores.append(work + "/second/store/a/little/deeper")
        }
        defer {
            try? FileSystem.removeTree(shm)
        }
        var builders: [StackBuilder] = []
        var opened: [Store] = []
        var keys: [[String]] = []
        var images: [String] = []
        for (index, conditions) in [Self.first, Self.second].enumerated() {
            let store = try Store(root: stores[index])
            // What the user's store has downloaded, and then what the first build did: nothing
            // is downloaded twice, and `--offline` works as it does for a build.
            try store.borrowCaches(from: index == 0 ? options.store : opened[0])
            opened.append(store)
            var options = options
            options.store = store
            options.recordWriters = true
            options.noCache = false
            // The locks hold as for a build; the check writes none.
            options.locks = options.locks == .locked ? .locked : .hold
            let builder = StackBuilder(options: options, observer: observer)
            builder.pullImage = pullImage
            if index == 1 { Self.waitForNextSecond() }
            let built = try Self.under(conditions) { try builder.build(recipe) }
            builders.append(builder)
            keys.append(built.map(\.key))
            let image = stores[index] + "/../image-\(index).squashfs"
            _ = try Self.under(conditions) {
                try Exporter(store: store).export(
                    built[built.count - 1].key,
                    Exporter.Request(output: image, options: ImageOptions(jobs: conditions.jobs), useBlockCache: false))
            }
            images.append(try Digest.sha256(file: image))
        }

        var differences: [Difference] = []
        var otherwise: [String] = []
        var reported = Set<String>()
        let (first, second) = (opened[0], opened[1])
        for (index, layer) in recipe.layers.enumerated() {
            let a = try first.record(keys[0][index])
            let b = try second.record(keys[1][index])
            guard a.treeDigest != b.treeDigest else { continue }
            let diff = try TreeDiff.compare(
                try DiffSide.open(keys[0][index], store: { first }), try DiffSide.open(keys[1][index], store: { second }))
            let writers = builders[1].writers[layer.name] ?? builders[0].writers[layer.name] ?? [:]
            let files = layer.files.map(\.path)  // a folder source's entries are below its path
            var found = false
            for entry in diff.entries where !reported.contains(entry.path) {
                reported.insert(entry.path)
                found = true
                let what: [String]
                switch entry.change {
                case .added: what = ["only in the second build"]
                case .removed: what = ["only in the first build"]
                case .modified: what = entry.differences
                }
                let writer =
                    writers[entry.path]
                    ?? entry.owner.map { "package \($0)" }
                    ?? (files.contains { entry.path == $0 || entry.path.hasPrefix($0 + "/") } ? "files: of \(layer.name)" : nil)
                differences.append(Difference(layer: layer.name, path: entry.path, what: what, writer: writer))
            }
            if !found { otherwise.append(layer.name) }
        }
        return Report(
            layers: recipe.layers.map(\.name), stores: stores, conditions: [Self.first.description, Self.second.description],
            differences: differences, images: images, otherwise: otherwise)
    }

    /// Runs `body` with the process's umask, time zone, locale and limits set as `conditions` say,
    /// and sets them back after.
    static func under<T>(_ conditions: Conditions, _ body: () throws -> T) rethrows -> T {
        let names = ["TZ", "LANG", "LC_ALL"]
        let saved = names.map { ProcessInfo.processInfo.environment[$0] }
        let limits = [(RLIMIT_NOFILE, conditions.openFiles), (RLIMIT_STACK, conditions.stack)].map { resource, soft in
            (resource, setSoftLimit(resource, soft))
        }
        defer {
            for (resource, before) in limits {
                if var before { setrlimit(Int32(resource.rawValue), &before) }
            }
        }
        let mask = umask(conditions.umask)
        setenv("TZ", conditions.timeZone, 1)
        setenv("LANG", conditions.locale, 1)
        setenv("LC_ALL", conditions.locale, 1)
        tzset()
        defer {
            umask(mask)
            for (name, value) in zip(names, saved) {
                if let value { setenv(name, value, 1) } else { unsetenv(name) }
            }
            tzset()
        }
        return try body()
    }

    /// Sets the soft limit of `resource` to `soft` (the hard one raised to it where lower), and
    /// returns the limits it had, or nil where it could not be set (the check then runs with the
    /// caller's).
    private static func setSoftLimit(_ resource: __rlimit_resource, _ soft: UInt64) -> rlimit? {
        var before = rlimit()
        guard getrlimit(Int32(resource.rawValue), &before) == 0 else { return nil }
        var limit = before
        limit.rlim_cur = rlim_t(soft)
        if limit.rlim_max < limit.rlim_cur { limit.rlim_max = limit.rlim_cur }
        return setrlimit(Int32(resource.rawValue), &limit) == 0 ? before : nil
    }

    static func waitForNextSecond() {
        var now = timespec()
        clock_gettime(CLOCK_REALTIME, &now)
        let start = now.tv_sec
        while now.tv_sec == start {
            usleep(UInt32(max(1000, (1_000_000_000 - now.tv_nsec) / 1000)))
            clock_gettime(CLOCK_REALTIME, &now)
        }
    }

    static func isTmpfs(_ path: String) -> Bool {
        (try? MountTable().mount(holding: path).fstype) == "tmpfs"
    }
}
