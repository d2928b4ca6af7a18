import CAlpm

/// What libalpm reports while it works, turned into values: downloads, per-package progress,
/// package operations, scriptlet output and log lines.
public enum AlpmEvent: Sendable {
    /// A download began (`ALPM_DOWNLOAD_INIT`).
    case downloadStarted(file: String)
    /// Bytes of a download so far (`ALPM_DOWNLOAD_PROGRESS`); `total` is 0 when unknown. Reported
    /// when the whole percent changes (every MiB when the total is unknown), not for each chunk.
    case downloadProgress(file: String, downloaded: Int64, total: Int64)
    /// A download ended; `succeeded` is false when it failed, `upToDate` when nothing was fetched.
    case downloadCompleted(file: String, succeeded: Bool, upToDate: Bool)
    /// Progress of a step over many packages (`alpm_cb_progress`), reported when it changes: libalpm
    /// repeats the same figures for every file it extracts.
    case progress(step: ProgressStep, package: String, percent: Int, current: Int, total: Int)
    /// libalpm starts installing, upgrading or removing one package.
    case packageStarted(PackageOperation, name: String, version: String)
    /// libalpm finished that package.
    case packageFinished(PackageOperation, name: String, version: String)
    /// libalpm starts running a hook (`ALPM_EVENT_HOOK_RUN_START`): its file name, its
    /// `Description`, and its place among the hooks the transaction triggered at that time.
    case hookStarted(name: String, description: String?, position: Int, total: Int)
    /// One line that a package's install scriptlet or a hook's command printed.
    case scriptletOutput(String)
    /// A line from libalpm's log (errors and warnings; debug lines are not forwarded).
    case log(level: LogLevel, message: String)
    /// Installing `package` left `file`, one of its `backup` files that differed from what the
    /// package installed before, as it was, and wrote the package's own as `file.pacnew`
    /// (`ALPM_EVENT_PACNEW_CREATED`). `file` is the path in the root.
    case pacnewCreated(file: String, package: String, version: String)
    /// Removing `package` moved `file`, one of its `backup` files that differed from what the
    /// package installed, to `file.pacsave` (`ALPM_EVENT_PACSAVE_CREATED`).
    case pacsaveCreated(file: String, package: String)
    /// `package`, which stays, optionally depends on one the transaction removes: `dependency` is
    /// that optional dependency as the package gives it, with its reason (`ALPM_EVENT_OPTDEP_REMOVAL`).
    case optionalDependencyRemoved(package: String, dependency: String)

    public enum ProgressStep: String, Sendable {
        case install, upgrade, downgrade, reinstall, remove, conflicts, diskspace, integrity, load, keyring
    }

    public enum PackageOperation: String, Sendable {
        case install, upgrade, reinstall, downgrade, remove
    }

    public enum LogLevel: String, Sendable {
        case error, warning, debug
    }
}

extension AlpmEvent.ProgressStep {
    init(_ progress: alpm_progress_t) {
        switch progress {
        case ALPM_PROGRESS_ADD_START: self = .install
        case ALPM_PROGRESS_UPGRADE_START: self = .upgrade
        case ALPM_PROGRESS_DOWNGRADE_START: self = .downgrade
        case ALPM_PROGRESS_REINSTALL_START: self = .reinstall
        case ALPM_PROGRESS_REMOVE_START: self = .remove
        case ALPM_PROGRESS_CONFLICTS_START: self = .conflicts
        case ALPM_PROGRESS_DISKSPACE_START: self = .diskspace
        case ALPM_PROGRESS_INTEGRITY_START: self = .integrity
        case ALPM_PROGRESS_LOAD_START: self = .load
        default: self = .keyring
        }
    }
}

extension AlpmEvent.PackageOperation {
    init(_ operation: alpm_package_operation_t) {
        switch operation {
        case ALPM_PACKAGE_INSTALL: self = .install
        case ALPM_PACKAGE_UPGRADE: self = .upgrade
        case ALPM_PACKAGE_REINSTALL: self = .reinstall
        case ALPM_PACKAGE_DOWNGRADE: self = .downgrade
        default: self = .remove
        }
    }
}
