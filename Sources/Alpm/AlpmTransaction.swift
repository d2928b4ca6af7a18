import CAlpm
import Glibc
import LayerSupport

/// What a transaction should do, in pacman's terms.
public struct TransactionRequest: Sendable, Codable {
    /// Targets to install with their dependencies, like `pacman -S`: a name, `repo/name`, a group
    /// or anything a package provides.
    public var install: [String] = []
    /// Installed packages to remove, like `pacman -R`.
    public var remove: [String] = []
    /// Upgrade every installed package that has a newer version, like `pacman -Su`.
    public var sysupgrade = false
    /// Skip targets that are installed and up to date, like `--needed`.
    public var needed = true
    /// Installed packages the upgrade leaves as they are, like pacman.conf's `IgnorePkg`: names,
    /// or shell patterns (`linux*`) that libalpm matches as `fnmatch` does.
    public var ignore: [String] = []

    public init(
        install: [String] = [], remove: [String] = [], sysupgrade: Bool = false, needed: Bool = true, ignore: [String] = []
    ) {
        self.install = install
        self.remove = remove
        self.sysupgrade = sysupgrade
        self.needed = needed
        self.ignore = ignore
    }

    var isEmpty: Bool { install.isEmpty && remove.isEmpty && !sysupgrade }

    /// Whether one of the `ignore` patterns matches package `name`, as libalpm matches them.
    public static func ignores(_ patterns: [String], _ name: String) -> Bool {
        patterns.contains { fnmatch($0, name, 0) == 0 }
    }

    /// The package a target names: `core/linux>=6.6` names `linux`.
    public static func packageName(of target: String) -> String {
        let last = target.split(separator: "/", maxSplits: 1).last.map(String.init) ?? target
        return String(last.prefix { !"<>=".contains($0) })
    }
}

/// One package file a transaction installs, exactly as the sync database describes it.
public struct PackageFile: Hashable, Sendable, Codable {
    public var name: String
    public var version: String
    public var repository: String
    public var filename: String
    public var sha256: String
    public var downloadSize: Int64
    public var installedSize: Int64

    public init(
        name: String, version: String, repository: String, filename: String, sha256: String, downloadSize: Int64,
        installedSize: Int64
    ) {
        self.name = name
        self.version = version
        self.repository = repository
        self.filename = filename
        self.sha256 = sha256
        self.downloadSize = downloadSize
        self.installedSize = installedSize
    }

    /// Whether `text` can be a package's file name, as a database gives it: a name in the
    /// repository's folder and the cache (at most 255 bytes, as Linux holds to), never a path.
    public static func isFileName(_ text: String) -> Bool {
        !text.isEmpty && text.utf8.count <= 255 && !text.contains("/") && text != "." && text != ".."
    }
}

/// A dependency that several packages provide, and they, in libalpm's order: pacman asks which to
/// install, and without asking (`--noconfirm`) takes the first, as a build does.
public struct ProviderChoice: Hashable, Sendable, Codable {
    /// The dependency as a package states it (`lib32-vulkan-driver`, `sh>=5`).
    public var dependency: String
    public var providers: [String]

    public init(dependency: String, providers: [String]) {
        self.dependency = dependency
        self.providers = providers
    }
}

/// An installed package that a repository holds a newer version of: one that `IgnorePkg` keeps.
public struct NewerVersion: Hashable, Sendable, Codable {
    public var name: String
    public var installed: String
    public var available: String
}

/// What a prepared transaction would do.
public struct Resolution: Hashable, Sendable, Codable {
    /// Packages to install or upgrade, sorted by name.
    public var install: [PackageFile] = []
    /// Installed packages to remove, sorted by name.
    public var remove: [InstalledPackage] = []

    public init(install: [PackageFile] = [], remove: [InstalledPackage] = []) {
        self.install = install
        self.remove = remove
    }
}

extension AlpmHandle {
    /// Resolves `request` against the sync and local databases without changing anything
    /// (`alpm_trans_init` with NOLOCK, `alpm_trans_prepare`, `alpm_trans_get_add`, `alpm_trans_release`).
    /// A package to install that conflicts with an installed one fails the resolution, as under
    /// `pacman --noconfirm`, with every such conflict named at once (`installedConflicts`).
    public func resolve(_ request: TransactionRequest) throws -> Resolution {
        providerChoices.removeAll()
        if request.isEmpty { return Resolution() }
        answeredConflicts = []
        defer { answeredConflicts = nil }
        let resolution: Resolution
        do {
            resolution = try withTransaction(request, flags: Int32(ALPM_TRANS_FLAG_NOLOCK.rawValue)) { self.currentResolution() }
        } catch let error as AlpmError {
            // What the removals the answers made broke follows from the conflicts: they come first.
            throw conflictsError(request) ?? error
        }
        if let error = conflictsError(request) { throw error }
        return resolution
    }

    /// Of the installed packages that `patterns` match (`TransactionRequest.ignores`), those whose
    /// first sync database that has them (the one an upgrade takes them from) holds a newer
    /// version, by name.
    public func newerVersions(of patterns: [String]) -> [NewerVersion] {
        guard !patterns.isEmpty else { return [] }
        return AlpmListSequence(alpm_db_get_pkgcache(alpm_get_localdb(raw))).compactMap { item in
            let local = OpaquePointer(item)
            guard let name = string(alpm_pkg_get_name(local)), TransactionRequest.ignores(patterns, name),
                let sync = syncDatabases.lazy.compactMap({ alpm_db_get_pkg($0, name) }).first,
                let installed = string(alpm_pkg_get_version(local)), let available = string(alpm_pkg_get_version(sync)),
                alpm_pkg_vercmp(available, installed) > 0
            else { return nil }
            return NewerVersion(name: name, installed: installed, available: available)
        }.sorted { $0.name < $1.name }
    }

    /// The error for the conflicts with installed packages answered while resolving `request`, if any.
    private func conflictsError(_ request: TransactionRequest) -> AlpmError? {
        guard let answered = answeredConflicts, !answered.isEmpty else { return nil }
        var error = AlpmError(
            errno: ALPM_ERR_CONFLICTING_DEPS, operation: "resolve", subject: (request.install + request.remove).joined(separator: ", "),
            details: answered.map { "\($0.package) and \($0.installed) are in conflict" },
            packages: answered.flatMap { [$0.package, $0.installed] })
        let asked = Set((request.install + request.remove).map(TransactionRequest.packageName(of:)))
        var seen = Set<String>()
        error.installedConflicts = answered.map(\.installed).filter { !asked.contains($0) && seen.insert($0).inserted }
        return error
    }

    /// Runs `request` to the end (`alpm_trans_commit`) and returns what it did. A scriptlet that
    /// fails makes this throw, although libalpm itself only logs it. With `downloadOnly` it stops
    /// once every package to install is in the cache and checked (signature and checksum, as the
    /// repository's level asks), cached before or downloaded now, and changes nothing else.
    @discardableResult
    public func commit(_ request: TransactionRequest, downloadOnly: Bool = false) throws -> Resolution {
        if request.isEmpty { return Resolution() }
        return try withTransaction(request, flags: downloadOnly ? Int32(ALPM_TRANS_FLAG_DOWNLOADONLY.rawValue) : 0) {
            let resolution = self.currentResolution()
            if resolution.install.isEmpty && resolution.remove.isEmpty { return resolution }
            // libalpm's DOWNLOADONLY stops a transaction only once it has packages to download: one
            // that only removes would remove, scriptlets and all, in the downloader's root.
            if downloadOnly && resolution.install.isEmpty { return resolution }
            self.operationErrors.removeAll()
            self.hookErrors.removeAll()
            self.corruptedFiles.removeAll()
            var data: UnsafeMutablePointer<alpm_list_t>?
            if alpm_trans_commit(self.raw, &data) != 0 {
                // alpm_errno first: the calls below may change it.
                let errno = alpm_errno(self.raw)
                var described = Self.describe(data, errno)
                let unknown = self.recentErrors.contains { $0.contains("key") } ? self.packagesWithUnknownKeys() : []
                if !unknown.isEmpty { throw AlpmError(missingKeys: unknown, code: Int32(errno.rawValue)) }
                // A package whose file is not what its database says (its checksum, its signature)
                // is named only in libalpm's question whether to delete it.
                if described.lines.isEmpty && !self.corruptedFiles.isEmpty {
                    described.lines = self.corruptedFiles.map { "\($0.file): \($0.reason)" }
                    described.packages = self.corruptedFiles.compactMap { corrupted in
                        resolution.install.first { $0.filename == corrupted.file }?.name
                    }
                }
                if errno == ALPM_ERR_TRANS_HOOK_FAILED { throw self.hookFailure(errno, request) }
                var error = AlpmError(
                    errno: errno, operation: "commit transaction", details: described.lines + self.recentErrors,
                    packages: described.packages)
                error.unownedFiles = described.unownedFiles
                throw error
            }
            if let failed = self.operationErrors.first {
                let messages = self.operationErrors.filter { $0.package == failed.package }.map(\.message)
                throw AlpmError(
                    operation: "install", subject: failed.package, reason: "its install scriptlet failed",
                    details: messages, packages: [failed.package])
            }
            return resolution
        }
    }

    /// A transaction that its pre-transaction hooks stopped: one with `AbortOnFail` failed (named,
    /// with the package that installed it, and what it logged), or a hook file did not parse
    /// (libalpm's lines name it). Either is a matter of the transaction as a whole, so the error
    /// names its targets, for the planner to place it at the first of them.
    private func hookFailure(_ errno: alpm_errno_t, _ request: TransactionRequest) -> AlpmError {
        let targets = request.install + request.remove
        guard let failed = hookErrors.last?.hook else {
            return AlpmError(errno: errno, operation: "commit transaction", details: recentErrors, packages: targets)
        }
        let found = hookFile(failed)
        let owner = found.map { file in file.owner.map { " of package \($0)" } ?? " (\(file.path), of no package)" } ?? ""
        // The targets its `Type = Package` triggers name, when there are such: the error goes to
        // the first of them in the layer file, else to the first target. Its file is a stranger's:
        // a regular file of a hook's size is read, anything else gives no patterns.
        let text = found.flatMap { try? FileSystem.readRegularFile($0.path, atMost: 1 << 20) }
        let patterns = text.map { Self.packageTargets(ofHook: [UInt8]($0)) } ?? []
        let named = targets.filter { target in
            patterns.contains { fnmatch($0, TransactionRequest.packageName(of: target), 0) == 0 }
        }
        return AlpmError(
            code: Int32(errno.rawValue), operation: "pre-transaction hook", subject: failed + owner,
            reason: "it has AbortOnFail, so the transaction stopped before it changed anything",
            details: hookErrors.filter { $0.hook == failed }.map(\.message), packages: named.isEmpty ? targets : named)
    }

    /// The `Target` patterns of a hook file's `Type = Package` triggers (not the `!` ones), read as
    /// libalpm reads them: `[Trigger]` sections, `Key = Value` lines, `#` comments.
    package static func packageTargets(ofHook bytes: [UInt8]) -> [String] {
        var patterns: [String] = []
        var section: (trigger: Bool, package: Bool, targets: [String]) = (false, false, [])
        func close() { if section.trigger && section.package { patterns += section.targets } }
        for raw in String(decoding: bytes, as: UTF8.self).split(separator: "\n") {
            let line = raw.trimmingCharacters(in: .whitespaces)
            if line.isEmpty || line.hasPrefix("#") { continue }
            if line.hasPrefix("[") {
                close()
                section = (line == "[Trigger]", false, [])
                continue
            }
            let parts = line.split(separator: "=", maxSplits: 1).map { $0.trimmingCharacters(in: .whitespaces) }
            guard parts.count == 2 else { continue }
            if parts[0] == "Type" { section.package = parts[1] == "Package" }
            if parts[0] == "Target" && !parts[1].hasPrefix("!") { section.targets.append(parts[1]) }
        }
        close()
        return patterns
    }

    private func withTransaction<T>(_ request: TransactionRequest, flags: Int32, _ body: () throws -> T) throws -> T {
        recentErrors.removeAll()
        var flags = flags
        if request.needed { flags |= Int32(ALPM_TRANS_FLAG_NEEDED.rawValue) }
        for name in request.ignore { try check(alpm_option_add_ignorepkg(raw, name), "ignore", name) }
        defer { for name in request.ignore { alpm_option_remove_ignorepkg(raw, name) } }
        try check(alpm_trans_init(raw, flags), "start transaction")
        defer { alpm_trans_release(raw) }
        for name in request.remove {
            guard let pkg = alpm_db_get_pkg(alpm_get_localdb(raw), name) else {
                throw AlpmError(operation: "remove", subject: name, reason: "the package is not installed")
            }
            try check(alpm_remove_pkg(raw, pkg), "remove", name)
        }
        if request.sysupgrade {
            try check(alpm_sync_sysupgrade(raw, 0), "upgrade system")
        }
        for target in request.install {
            for pkg in try findTargets(target) {
                try check(alpm_add_pkg(raw, pkg), "install", target)
            }
        }
        var data: UnsafeMutablePointer<alpm_list_t>?
        if alpm_trans_prepare(raw, &data) != 0 {
            let subject = (request.install + request.remove).joined(separator: ", ")
            // alpm_errno first: describe frees the list, and nothing may run between.
            let errno = alpm_errno(raw)
            let described = describe(data, errno, removing: request.remove)
            var error = AlpmError(
                errno: errno, operation: "resolve", subject: subject, details: described.lines + recentErrors,
                packages: described.packages)
            error.missingDependencies = described.missingDependencies
            throw error
        }
        return try body()
    }

    /// Finds a target as pacman -S does: `repo/name`, a package name in repository order, a group,
    /// then the first package that provides it.
    private func findTargets(_ target: String) throws -> [OpaquePointer] {
        let parts = target.split(separator: "/", maxSplits: 1).map(String.init)
        var dbs = syncDatabases
        var name = target
        if parts.count == 2 {
            dbs = dbs.filter { string(alpm_db_get_name($0)) == parts[0] }
            name = parts[1]
            if dbs.isEmpty {
                throw AlpmError(operation: "install", subject: target, reason: "repository \(parts[0]) is not declared")
            }
        }
        for db in dbs {
            if let pkg = alpm_db_get_pkg(db, name) { return [pkg] }
        }
        var groupMembers: [OpaquePointer] = []
        for db in dbs {
            if let group = alpm_db_get_group(db, name) {
                groupMembers += AlpmListSequence(group.pointee.packages).map { OpaquePointer($0) }
            }
        }
        if !groupMembers.isEmpty {
            var seen = Set<String>()
            return groupMembers.filter { seen.insert(string(alpm_pkg_get_name($0)) ?? "").inserted }
        }
        var list: UnsafeMutablePointer<alpm_list_t>?
        for db in dbs { list = alpm_list_add(list, UnsafeMutableRawPointer(db)) }
        defer { alpm_list_free(list) }
        if let pkg = alpm_find_dbs_satisfier(raw, list, name) { return [pkg] }
        // libalpm leaves out a database entry it refuses (a file name with a `/`, say) and logs why,
        // at each look into the database: the lines that name the target say more than "not found".
        // A version the repositories do not have (`linux>=7`): what they have instead.
        let bare = TransactionRequest.packageName(of: name)
        if bare != name, let found = dbs.lazy.compactMap({ alpm_db_get_pkg($0, bare) }).first {
            throw AlpmError(
                operation: "install", subject: target,
                reason: "the repositories hold \(bare) \(string(alpm_pkg_get_version(found)) ?? "?"), which is not \(name.dropFirst(bare.count))")
        }
        var seen = Set<String>()
        let why = recentErrors.filter { $0.contains(name) && seen.insert($0).inserted }.prefix(4)
        // A package Arch renamed (exa, now eza) is gone from the repositories, and the one that
        // takes its place says so in its `replaces`, which pacman -Syu follows and pacman -S does not.
        let replacements = dbs.flatMap { db in
            AlpmListSequence(alpm_db_get_pkgcache(db)).map { OpaquePointer($0) }.filter { pkg in
                AlpmListSequence(alpm_pkg_get_replaces(pkg)).contains { dep in
                    string(dep.assumingMemoryBound(to: alpm_depend_t.self).pointee.name) == name
                }
            }.compactMap { string(alpm_pkg_get_name($0)) }
        }
        let replaced = replacements.isEmpty ? [] : ["\(replacements.prefix(3).joined(separator: ", ")) replaces it"]
        throw AlpmError(
            operation: "install", subject: target, reason: "target not found in any repository", details: replaced + Array(why))
    }

    private func currentResolution() -> Resolution {
        let install = AlpmListSequence(alpm_trans_get_add(raw)).map { pointer -> PackageFile in
            let pkg = OpaquePointer(pointer)
            return PackageFile(
                name: string(alpm_pkg_get_name(pkg)) ?? "", version: string(alpm_pkg_get_version(pkg)) ?? "",
                repository: alpm_pkg_get_db(pkg).flatMap { string(alpm_db_get_name($0)) } ?? "",
                filename: string(alpm_pkg_get_filename(pkg)) ?? "", sha256: string(alpm_pkg_get_sha256sum(pkg)) ?? "",
                downloadSize: Int64(alpm_pkg_get_size(pkg)), installedSize: Int64(alpm_pkg_get_isize(pkg)))
        }
        let remove = AlpmListSequence(alpm_trans_get_remove(raw)).map { pointer -> InstalledPackage in
            let pkg = OpaquePointer(pointer)
            return InstalledPackage(
                name: string(alpm_pkg_get_name(pkg)) ?? "", version: string(alpm_pkg_get_version(pkg)) ?? "",
                explicit: alpm_pkg_get_reason(pkg) == ALPM_PKG_REASON_EXPLICIT,
                installedSize: Int64(alpm_pkg_get_isize(pkg)))
        }
        return Resolution(install: install.sorted { $0.name < $1.name }, remove: remove.sorted { $0.name < $1.name })
    }

    /// Turns the list libalpm hands back with a failed prepare or commit into lines and the packages
    /// they name as the cause, and frees it. A dependency that one of the installed packages
    /// `removing` satisfied is said as pacman says it: "removing X breaks dependency 'D' required by T".
    private func describe(
        _ data: UnsafeMutablePointer<alpm_list_t>?, _ errno: alpm_errno_t, removing: [String] = []
    ) -> Described {
        var removed: UnsafeMutablePointer<alpm_list_t>?
        for name in removing {
            if let pkg = alpm_db_get_pkg(alpm_get_localdb(raw), name) { removed = alpm_list_add(removed, UnsafeMutableRawPointer(pkg)) }
        }
        defer { alpm_list_free(removed) }
        return Self.describe(data, errno) { dependency in
            alpm_find_satisfier(removed, dependency).flatMap { string(alpm_pkg_get_name($0)) }
        }
    }

    private static func describe(
        _ data: UnsafeMutablePointer<alpm_list_t>?, _ errno: alpm_errno_t, removedSatisfier: (String) -> String? = { _ in nil }
    ) -> Described {
        guard let data else { return Described() }
        defer { alpm_list_free(data) }
        var lines: [String] = []
        var packages: [String] = []
        var unowned: [String] = []
        var missingDependencies: [String] = []
        func cause(_ name: UnsafePointer<CChar>?) {
            if let name = string(name), !packages.contains(name) { packages.append(name) }
        }
        for item in AlpmListSequence(data) {
            switch errno {
            case ALPM_ERR_UNSATISFIED_DEPS:
                let miss = item.assumingMemoryBound(to: alpm_depmissing_t.self)
                let dep = miss.pointee.depend.flatMap { alpm_dep_compute_string($0) }
                let wanted = dep.map { String(cString: $0) } ?? "?"
                if let removed = removedSatisfier(wanted) {
                    lines.append("removing \(removed) breaks dependency '\(wanted)' required by \(string(miss.pointee.target) ?? "?")")
                } else {
                    lines.append("\(string(miss.pointee.target) ?? "?"): requires \(wanted)")
                }
                if let name = string(miss.pointee.depend?.pointee.name), !missingDependencies.contains(name) {
                    missingDependencies.append(name)
                }
                cause(miss.pointee.target)
                free(dep)
                alpm_depmissing_free(miss)
            case ALPM_ERR_CONFLICTING_DEPS:
                let conflict = item.assumingMemoryBound(to: alpm_conflict_t.self)
                lines.append("\(string(conflict.pointee.package1) ?? "?") and \(string(conflict.pointee.package2) ?? "?") are in conflict")
                cause(conflict.pointee.package1)
                cause(conflict.pointee.package2)
                alpm_conflict_free(conflict)
            case ALPM_ERR_FILE_CONFLICTS:
                let conflict = item.assumingMemoryBound(to: alpm_fileconflict_t.self)
                // A file in the filesystem names its owner, an installed package, when it has one.
                let other = string(conflict.pointee.ctarget).flatMap { $0.isEmpty ? nil : $0 }
                let owner = conflict.pointee.type == ALPM_FILECONFLICT_TARGET
                    ? "is also in \(other ?? "?")" : "exists in filesystem" + (other.map { " (owned by \($0))" } ?? "")
                // libalpm gives a file in the filesystem with the root before it ("/" here), one in
                // two packages without.
                let file = string(conflict.pointee.file) ?? "?"
                lines.append("\(string(conflict.pointee.target) ?? "?"): \(file.hasPrefix("/") ? file : "/" + file) \(owner)")
                if conflict.pointee.type == ALPM_FILECONFLICT_FILESYSTEM && other == nil {
                    unowned.append(file.hasPrefix("/") ? file : "/" + file)
                }
                cause(conflict.pointee.target)
                alpm_fileconflict_free(conflict)
            case ALPM_ERR_PKG_INVALID_ARCH, ALPM_ERR_PKG_INVALID, ALPM_ERR_PKG_INVALID_CHECKSUM,
                ALPM_ERR_PKG_INVALID_SIG:
                lines.append(String(cString: item.assumingMemoryBound(to: CChar.self)))
                free(item)
            default:
                break
            }
        }
        return Described(lines: lines, packages: packages, unownedFiles: unowned, missingDependencies: missingDependencies)
    }

    /// What libalpm's list of a failure says: its lines, the packages they blame, and the files in
    /// the way that no installed package owns.
    private struct Described {
        var lines: [String] = []
        var packages: [String] = []
        var unownedFiles: [String] = []
        var missingDependencies: [String] = []
    }
}
