import CAlpm
import CArchive
import Foundation
import LayerSupport

/// A sync repository as pacman.conf declares it.
public struct Repository: Hashable, Sendable, Codable {
    public var name: String
    /// Server URLs, `file://` or `https://`, which may contain `$repo` and `$arch`.
    public var servers: [String]
    /// nil means pacman's default, `Required DatabaseOptional`.
    public var signatureLevel: SignatureLevel?

    public init(name: String, servers: [String], signatureLevel: SignatureLevel? = nil) {
        self.name = name
        self.servers = servers
        self.signatureLevel = signatureLevel
    }

    /// The servers with `$repo` and `$arch` expanded, as pacman does.
    public func expandedServers(arch: String) -> [String] {
        servers.map {
            $0.replacingOccurrences(of: "$repo", with: name).replacingOccurrences(of: "$arch", with: arch)
        }
    }
}

/// An installed package, read from the local database.
public struct InstalledPackage: Hashable, Sendable, Codable {
    public var name: String
    public var version: String
    /// True when it was asked for, false when it came in as a dependency.
    public var explicit: Bool
    public var installedSize: Int64
}

extension AlpmHandle {
    /// Registers a sync database and its servers (`alpm_register_syncdb`, `alpm_db_add_server`).
    public func register(_ repository: Repository, arch: String) throws {
        let level = (repository.signatureLevel ?? .pacmanDefault).rawValue
        guard let db = alpm_register_syncdb(raw, repository.name, level) else {
            throw AlpmError(handle: raw, operation: "register repository", subject: repository.name)
        }
        for server in repository.expandedServers(arch: arch) {
            if server.hasPrefix("file://") && !server.hasPrefix("file:///") {
                throw AlpmError(
                    operation: "register repository", subject: repository.name,
                    reason: "server \(server) is not an absolute file:// URL")
            }
            // curl ends a file:// path at either: `file:///dev/zero#` reads /dev/zero.
            if server.hasPrefix("file://") && server.contains(where: { $0 == "?" || $0 == "#" }) {
                throw AlpmError(
                    operation: "register repository", subject: repository.name,
                    reason: "server \(server) has a `?` or `#`, where curl would end its path")
            }
            try check(alpm_db_add_server(db, server), "add server to \(repository.name)", server)
        }
    }

    /// Downloads the sync databases that changed on their servers (`alpm_db_update`).
    public func refresh(force: Bool = false) throws {
        recentErrors.removeAll()
        if alpm_db_update(raw, alpm_get_syncdbs(raw), force ? 1 : 0) < 0 {
            let code = alpm_errno(raw)
            if code == ALPM_ERR_DB_INVALID_SIG || code == ALPM_ERR_SIG_INVALID {
                let unknown = databasesWithUnknownKeys()
                if !unknown.isEmpty { throw AlpmError(missingKeys: unknown, code: Int32(code.rawValue)) }
            }
            throw AlpmError(errno: code, operation: "refresh repositories", details: recentErrors)
        }
        try checkDatabasesValid()
    }

    /// Fails when a registered database is missing or its signature is not valid (`alpm_db_get_valid`),
    /// or when it is no tar archive in one of the compressions libalpm is given (`checkArchive`).
    public func checkDatabasesValid() throws {
        for db in AlpmListSequence(alpm_get_syncdbs(raw)) {
            let db = OpaquePointer(db)
            try checkArchive(of: db)
            if alpm_db_get_valid(db) != 0 {
                throw AlpmError(handle: raw, operation: "read repository", subject: string(alpm_db_get_name(db)))
            }
        }
    }

    /// A package's `%FILENAME%` is the name of its file in the cache and on the servers: libalpm
    /// (6.0) crashes resolving a package that has none, and layerctl links the cache's files by
    /// it. A database that gives one package no plain file name (none, empty, longer than 255
    /// bytes, `.`, `..` or with a `/`) is refused whole, naming the package. This parses every
    /// registered database: call it where the work parses them anyway (a resolution, a fetch).
    public func checkFileNames() throws {
        for db in AlpmListSequence(alpm_get_syncdbs(raw)) {
            let db = OpaquePointer(db)
            for pointer in AlpmListSequence(alpm_db_get_pkgcache(db)) {
                let pkg = OpaquePointer(pointer)
                let file = string(alpm_pkg_get_filename(pkg))
                if let file, PackageFile.isFileName(file) { continue }
                let name = string(alpm_pkg_get_name(pkg)) ?? "?"
                var error = AlpmError(
                    operation: "read repository", subject: string(alpm_db_get_name(db)),
                    reason: "its database gives package \(quote(name)) "
                        + (file.map { "the file name \(quote($0)), which is no file's name" } ?? "no file name (%FILENAME%)")
                        + "; libalpm cannot fetch or install it")
                error.repository = string(alpm_db_get_name(db))
                throw error
            }
        }
    }

    /// libalpm reads a sync database with the one format and the filters CLayerSupport's
    /// archive_readers.c leaves it: a tar, plain or compressed with a library libarchive links. So
    /// nothing else is parsed, and no program runs on a database's bytes; but a database that is
    /// something else would fail later, as a package "not found in any repository". This reads its
    /// first header the same way, and refuses and removes a database that is no such tar. A
    /// database not downloaded yet is left to libalpm, which says so.
    func checkArchive(of db: OpaquePointer) throws {
        guard let name = string(alpm_db_get_name(db)), let dbPath = string(alpm_option_get_dbpath(raw)) else { return }
        let path = dbPath + (dbPath.hasSuffix("/") ? "" : "/") + "sync/" + name + ".db"
        guard access(path, F_OK) == 0, !Self.opensAsTar(path) else { return }
        // Not kept either: a layer file names its servers, and a file:// or an internal http one
        // could have brought a host file or a service's answer here, as `NAME.db`.
        unlink(path)
        unlink(path + ".sig")
        throw AlpmError(
            operation: "read repository", subject: name,
            reason: "its database is no tar archive, \(Self.tarCompressions); it was not read")
    }

    /// What libalpm is given to read, in words: see `opensAsTar`.
    public static let tarCompressions = "plain or compressed with gzip, bzip2, xz, lzma, lzip, zstd, lz4 or compress"

    /// Whether the file at `path` opens, as libalpm would open it, as a tar archive whose first
    /// header reads (an empty tar counts). Only its first block is decompressed.
    public static func opensAsTar(_ path: String) -> Bool {
        guard let archive = archive_read_new() else { return false }
        defer { archive_read_free(archive) }
        archive_read_support_filter_all(archive)
        archive_read_support_format_tar(archive)
        var entry: OpaquePointer?
        let status =
            archive_read_open_filename(archive, path, 16384) == ARCHIVE_OK
            ? archive_read_next_header(archive, &entry) : ARCHIVE_FATAL
        return status == ARCHIVE_OK || status == ARCHIVE_EOF
    }

    /// The packages in the local database, sorted by name.
    public func installedPackages() -> [InstalledPackage] {
        AlpmListSequence(alpm_db_get_pkgcache(alpm_get_localdb(raw))).map { pointer in
            let pkg = OpaquePointer(pointer)
            return InstalledPackage(
                name: string(alpm_pkg_get_name(pkg)) ?? "", version: string(alpm_pkg_get_version(pkg)) ?? "",
                explicit: alpm_pkg_get_reason(pkg) == ALPM_PKG_REASON_EXPLICIT,
                installedSize: Int64(alpm_pkg_get_isize(pkg)))
        }.sorted { $0.name < $1.name }
    }

    /// The installed package that owns `path` (absolute), if one does.
    func owner(of path: String) -> String? {
        let root = string(alpm_option_get_root(raw)) ?? "/"
        guard path.hasPrefix(root.hasSuffix("/") ? root : root + "/") else { return nil }
        let relative = String(path.dropFirst(root.count).drop { $0 == "/" })
        for pointer in AlpmListSequence(alpm_db_get_pkgcache(alpm_get_localdb(raw))) {
            let pkg = OpaquePointer(pointer)
            if alpm_filelist_contains(alpm_pkg_get_files(pkg), relative) != nil { return string(alpm_pkg_get_name(pkg)) }
        }
        return nil
    }

    /// Hook `name` as libalpm found it: its path (hook folders are paths as they are, not under the
    /// root; the last folder that holds it wins, as in libalpm) and the installed package that owns
    /// that file, if one does.
    func hookFile(_ name: String) -> (path: String, owner: String?)? {
        let folders = AlpmListSequence(alpm_option_get_hookdirs(raw)).compactMap { string($0.assumingMemoryBound(to: CChar.self)) }
        for folder in folders.reversed() {
            let path = (folder.hasSuffix("/") ? folder : folder + "/") + name
            if access(path, F_OK) == 0 { return (path, owner(of: path)) }
        }
        return nil
    }

    /// Compares two versions as pacman does, epochs included (`alpm_pkg_vercmp`): <0, 0 or >0.
    public static func compareVersions(_ a: String, _ b: String) -> Int {
        Int(alpm_pkg_vercmp(a, b))
    }

    /// The names sync package `name` of `repository` depends on and provides (the names alone,
    /// without versions); nil when that repository has no such package.
    public func relations(of name: String, in repository: String) -> (depends: [String], provides: [String])? {
        guard let db = syncDatabases.first(where: { string(alpm_db_get_name($0)) == repository }),
            let pkg = alpm_db_get_pkg(db, name)
        else { return nil }
        func names(_ list: UnsafeMutablePointer<alpm_list_t>?) -> [String] {
            AlpmListSequence(list).compactMap { string($0.assumingMemoryBound(to: alpm_depend_t.self).pointee.name) }
        }
        return (names(alpm_pkg_get_depends(pkg)), names(alpm_pkg_get_provides(pkg)))
    }

    /// The signature of sync package `name` of `repository` that its database holds
    /// (`%PGPSIG%`, which repo-add writes where a `.sig` lies beside the package), decoded: the
    /// `.sig` file's bytes; nil where it holds none.
    public func databaseSignature(_ name: String, in repository: String) -> [UInt8]? {
        guard let db = syncDatabases.first(where: { string(alpm_db_get_name($0)) == repository }),
            let pkg = alpm_db_get_pkg(db, name)
        else { return nil }
        return Self.databaseSignature(of: pkg)
    }

    /// The signature the database holds of sync package `pkg`, decoded; nil where it holds none.
    static func databaseSignature(of pkg: OpaquePointer) -> [UInt8]? {
        guard let base64 = alpm_pkg_get_base64_sig(pkg) else { return nil }
        var data: UnsafeMutablePointer<UInt8>?
        var length = 0
        guard alpm_decode_signature(base64, &data, &length) == 0, let data else { return nil }
        defer { free(data) }
        return Array(UnsafeBufferPointer(start: data, count: length))
    }

    /// Takes repository `name` out of the handle, to register it again otherwise.
    public func unregister(_ name: String) throws {
        guard let db = syncDatabases.first(where: { string(alpm_db_get_name($0)) == name }) else { return }
        try check(alpm_db_unregister(db), "unregister repository", name)
    }

    var syncDatabases: [OpaquePointer] { AlpmListSequence(alpm_get_syncdbs(raw)).map { OpaquePointer($0) } }
}
