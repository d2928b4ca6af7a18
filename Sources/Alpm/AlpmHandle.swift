import CAlpm
import CLayerSupport

/// One libalpm handle on a root and a database path (`alpm_initialize` … `alpm_release`).
///
/// A handle is used from one thread at a time, as libalpm requires; it is therefore not Sendable.
public final class AlpmHandle {
    let raw: OpaquePointer
    /// Receives every event, progress report and log line of this handle.
    public var observer: ((AlpmEvent) -> Void)?
    /// Called when a commit has written every package and is about to run the post-transaction
    /// hooks it triggered (`ALPM_EVENT_HOOK_START` of `ALPM_HOOK_POST_TRANSACTION`); not called when
    /// it triggered none. What it changes in the root, the hooks see.
    public var beforePostTransactionHooks: (() -> Void)?
    /// Errors libalpm logged while a package operation ran; a scriptlet failure appears only here.
    var operationErrors: [(package: String, message: String)] = []
    var currentPackage: String?
    /// The hook running now (its file name), and the error lines each hook logged while it ran:
    /// libalpm names the hook in neither, and a hook that fails says only "command failed to
    /// execute correctly".
    var currentHook: String?
    var hookErrors: [(hook: String, message: String)] = []
    /// Error lines libalpm logged since the current operation began, for the error it may end in.
    var recentErrors: [String] = []
    /// The package files libalpm found corrupted (its question whether to delete one), with why:
    /// a commit that fails on them hands back no list to name them by.
    var corruptedFiles: [(file: String, reason: String)] = []
    /// The dependencies that more than one package provides, in the order libalpm asked which to
    /// take (its provider question), since `resolve` began.
    public internal(set) var providerChoices: [ProviderChoice] = []
    /// While `resolve` runs: each conflict of a package to install with an installed one, which
    /// pacman asks about one at a time ("Remove X? [y/N]") and stops at the first no. Answered yes
    /// here, so the resolution goes on and finds them all, for one error that names every one.
    var answeredConflicts: [(package: String, installed: String)]?
    /// The last progress reported, and each download's last whole percent (or MiB) and when it
    /// was reported: libalpm calls back for every file and every chunk, and the observer hears a
    /// change at most every `reportInterval` seconds, besides each step's start and end and each
    /// download's.
    var lastProgress: (step: alpm_progress_t, package: String, percent: Int32, current: Int, at: Double)?
    var downloadSteps: [String: (step: Int64, at: Double)] = [:]
    /// A status line redrawn ten times a second looks live; each report is a JSON line that
    /// layerctl's builder child writes and its parent reads, about 0.1 ms of CPU between them.
    public static let reportInterval = 0.1

    /// Opens a handle on `root` with its package databases in `dbPath` (`alpm_initialize`).
    public init(root: String, dbPath: String) throws {
        var err = alpm_errno_t(rawValue: 0)
        guard let handle = alpm_initialize(root, dbPath, &err) else {
            throw AlpmError(
                code: Int32(err.rawValue), operation: "open package database", subject: dbPath,
                reason: String(cString: alpm_strerror(err)))
        }
        raw = handle
        try installCallbacks()
    }

    deinit {
        alpm_release(raw)
    }

    /// The library's version string (`alpm_version`).
    public static var version: String { String(cString: alpm_version()) }

    /// Whether this libalpm was built with signature checking (`alpm_capabilities`).
    public static var verifiesSignatures: Bool {
        alpm_capabilities() & Int32(ALPM_CAPABILITY_SIGNATURES.rawValue) != 0
    }

    // MARK: Options

    /// Adds a directory where downloaded packages are kept (`alpm_option_add_cachedir`).
    public func addCacheDir(_ path: String) throws {
        try check(alpm_option_add_cachedir(raw, path), "set cache directory", path)
    }

    /// Sets the GnuPG home that holds the trusted keys (`alpm_option_set_gpgdir`).
    public func setGPGDir(_ path: String) throws {
        try check(alpm_option_set_gpgdir(raw, path), "set keyring directory", path)
    }

    /// Sets where libalpm appends its log (`alpm_option_set_logfile`).
    public func setLogFile(_ path: String) throws {
        try check(alpm_option_set_logfile(raw, path), "set log file", path)
    }

    /// Sets the architectures packages may have (`alpm_option_add_architecture`).
    public func setArchitectures(_ architectures: [String]) throws {
        for arch in architectures {
            try check(alpm_option_add_architecture(raw, arch), "set architecture", arch)
        }
    }

    /// Turns the free-space check on or off (`alpm_option_set_checkspace`).
    public func setCheckSpace(_ enabled: Bool) throws {
        try check(alpm_option_set_checkspace(raw, enabled ? 1 : 0), "set disk space check")
    }

    /// Sets how many downloads run at once (`alpm_option_set_parallel_downloads`).
    public func setParallelDownloads(_ count: Int) throws {
        try check(alpm_option_set_parallel_downloads(raw, UInt32(max(1, count))), "set parallel downloads")
    }

    /// Adds a directory of libalpm hooks (`alpm_option_add_hookdir`).
    public func addHookDir(_ path: String) throws {
        try check(alpm_option_add_hookdir(raw, path), "add hook directory", path)
    }

    /// Adds a pattern of files never to extract, as pacman.conf's `NoExtract`
    /// (`alpm_option_add_noextract`): a path without its leading `/`, with globs; `!` before it
    /// extracts what an earlier pattern left out.
    public func addNoExtract(_ pattern: String) throws {
        try check(alpm_option_add_noextract(raw, pattern), "add NoExtract pattern", pattern)
    }

    /// Sets the signature level for databases registered with `.useDefault`
    /// (`alpm_option_set_default_siglevel`).
    public func setDefaultSignatureLevel(_ level: SignatureLevel) throws {
        try check(alpm_option_set_default_siglevel(raw, level.rawValue), "set signature level")
    }

    /// Releases a lock a killed process left behind (`alpm_unlock`).
    public func unlock() {
        _ = alpm_unlock(raw)
    }

    func check(_ result: Int32, _ operation: String, _ subject: String? = nil) throws {
        if result != 0 { throw AlpmError(handle: raw, operation: operation, subject: subject) }
    }
}
