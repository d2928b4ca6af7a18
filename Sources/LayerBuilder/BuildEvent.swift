import Alpm
import LayerShare
import LayerSupport

/// One thing that happened during a build, as the builder child reports it to the parent (one JSON
/// object per line on a pipe) and as `layerctl build --json` prints it.
public struct BuildEvent: Codable, Sendable {
    public enum Kind: String, Codable, Sendable {
        /// The planner: resolving, a cache hit, a build starting, a layer stored.
        case resolved, cached, building, built
        /// A step of the builder child: "mount", "transaction", "files", "run", "normalise".
        case step
        case downloadStarted, downloadProgress, downloadDone
        case progress
        case package
        /// libalpm runs a hook: "hook NAME: DESCRIPTION", its place among the hooks triggered then
        /// in `current` and `total`.
        case hook
        /// A line from a scriptlet or a `run:` command.
        case output
        case warning
        /// An error line libalpm logged; the build may still fail or go on.
        case error
        /// The builder child gave up; the message says why.
        case failed
        /// The child's last word: the packages of the layer it built.
        case finished
        /// The builder child's first word, before anything of the layer runs: the folders (and the
        /// resolv.conf) it made in the layer's tree only to mount on, in `paths`, which the
        /// parent removes once the child is gone.
        case mountPoints
    }

    public var kind: Kind
    public var layer: String
    public var message: String?
    public var file: String?
    public var current: Int64?
    public var total: Int64?
    public var percent: Int?
    public var key: String?
    public var seconds: Double?
    public var result: ChildResult?
    /// For `failed`: the packages libalpm named as the cause.
    public var packages: [String]?
    /// For `failed`: what kind of failure, and where in the layer files when that is known.
    public var code: ErrorCode?
    public var location: String?
    /// For a `run:` step of a build that records who wrote what (`build --check`): the wall-clock
    /// time, in the kernel's coarse file-time clock, at which it started.
    public var at: Double?
    /// For `mountPoints`: the paths, relative to the tree, deepest last.
    public var paths: [String]?
    /// The package work's answer, in its `finished` event (`PackageWork`).
    var packageWork: PackageWork.Outcome?
    /// For the package work's `failed`: libalpm's error as it was, and whether a download passed
    /// its size limit.
    var alpmError: AlpmError?
    var fileLimitReached: Bool?
    /// The unpack's answer, in its `finished` event (`TarUnpackWork`).
    var attributes: [DeferredAttribute]?

    public init(
        _ kind: Kind, layer: String, message: String? = nil, file: String? = nil, current: Int64? = nil,
        total: Int64? = nil, percent: Int? = nil, key: String? = nil, seconds: Double? = nil,
        result: ChildResult? = nil, packages: [String]? = nil, code: ErrorCode? = nil, location: String? = nil
    ) {
        self.kind = kind
        self.layer = layer
        self.message = message
        self.file = file
        self.current = current
        self.total = total
        self.percent = percent
        self.key = key
        self.seconds = seconds
        self.result = result
        self.packages = packages
        self.code = code
        self.location = location
    }

    /// The event that reports `error`: the child's last word when it gives up.
    init(failure error: any Error, layer: String) {
        let failure = BuildFailure(error, at: nil)
        self.init(
            .failed, layer: layer, message: failure.explanation, packages: failure.packages.isEmpty ? nil : failure.packages,
            code: failure.code, location: failure.location)
    }
}

/// What the builder child reports of the layer it built: its packages, as the transaction left them.
public struct ChildResult: Codable, Sendable {
    public var installed: [InstalledPackage]
    public var added: [PackageFile]
    public var removed: [InstalledPackage]
}
