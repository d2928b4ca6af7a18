import Foundation
import LayerStore
import LayerSupport

/// How `layerctl build` builds: where the store is, what it may reuse and fetch.
public struct BuildOptions: Sendable {
    public var store: Store
    /// Build every layer again even when its key is stored.
    public var noCache = false
    /// Use the sync databases already in the cache; fetch nothing.
    public var offline = false
    /// The GnuPG home with the keys packages must be signed by, as pacman's `GPGDir`.
    public var keyring = BuildOptions.defaultKeyring
    /// pacman's own `GPGDir`, which `pacman-key` works on unless told `--gpgdir`.
    public static let defaultKeyring = "/etc/pacman.d/gnupg"
    /// The time every mtime is clamped to: `SOURCE_DATE_EPOCH`, or 0 when it is unset.
    public var sourceDateEpoch: Int64
    /// What the locks beside the layer files (`NAME.lock`) do to the build.
    public var locks: LockPolicy = .follow
    /// Where `snapshot:` repositories are found: a server laid out as the Arch Linux Archive
    /// (`repos/YYYY/MM/DD/$repo/os/$arch`).
    public var archive = "https://archive.archlinux.org"
    /// The host's package cache a build copies packages from before it downloads them: pacman's
    /// own, when the host has one; nil for none.
    public var hostCache: HostPackageCache? =
        FileSystem.isDirectory(HostPackageCache.pacmans) ? HostPackageCache(folder: HostPackageCache.pacmans) : nil
    /// Note, for each path a layer's build leaves, what wrote it last (`StackBuilder.writers`).
    public var recordWriters = false
    /// How long one layer's build may take, in seconds (its transaction, scriptlets and `run:`
    /// steps, and reading the tree they made): a layer file must not hold the tool for ever. nil
    /// for no limit.
    public var layerTimeLimit: Double? = BuildOptions.defaultLayerTimeLimit
    public static let defaultLayerTimeLimit: Double = 3600
    /// How many processes one layer's build may have at once (a pids cgroup); nil for no limit.
    public var maxProcesses: Int? = BuildOptions.defaultMaxProcesses
    public static let defaultMaxProcesses = 4096
    /// How much memory one layer's build may take, its tmpfs folders included, without swap (a
    /// memory cgroup); nil for no limit.
    public var memoryLimit: Int64? = BuildOptions.defaultMemoryLimit
    /// Half of the machine's memory, as a tmpfs takes by default: the rest stays the host's.
    public static var defaultMemoryLimit: Int64? { MachineMemory.total.map { $0 / 2 } }

    public init(store: Store) throws {
        self.store = store
        sourceDateEpoch = try SourceDateEpoch.fromEnvironment() ?? 0
    }
}

/// A cache of layers by key that stores share (a registry): the builder asks it before it builds a
/// layer, and gives it each layer it built. Its failures are warnings: a build never needs it.
public protocol SharedLayerCache {
    /// Puts layer `key` into the store when the cache has it and `accepting` takes its record;
    /// false otherwise.
    func fetch(_ key: String, accepting: (LayerRecord) -> Bool) throws -> Bool
    /// Saves layer `key`, just built, and what it stands on.
    func save(_ key: String) throws
}

/// An image a recipe is built upon: the reference with the digest its tag resolved to, and the
/// key of its top layer in the store.
public struct BaseImage: Sendable {
    public var reference: String
    public var key: String

    public init(reference: String, key: String) {
        self.reference = reference
        self.key = key
    }
}

/// One layer of a finished build.
public struct BuiltLayer: Codable, Sendable {
    public var name: String
    public var key: String
    /// True when the store already had it.
    public var cached: Bool
    public var seconds: Double
}
