import CAlpm
import Glibc
import Foundation
import LayerSupport

extension AlpmHandle {
    /// The packages of the current transaction whose signing key the keyring lacks. libalpm
    /// reports a missing key without saying whose package needs it. A package's signature is the
    /// one its database holds, else its `.sig` in a cache folder (a repository whose database
    /// holds none: repo-add found no `.sig` beside the package when it added it).
    func packagesWithUnknownKeys() -> [MissingKey] {
        guard let gpgDir = string(alpm_option_get_gpgdir(raw)) else { return [] }
        let caches = AlpmListSequence(alpm_option_get_cachedirs(raw)).strings
        var names: [MissingKey] = []
        for pointer in AlpmListSequence(alpm_trans_get_add(raw)) {
            let pkg = OpaquePointer(pointer)
            guard let name = string(alpm_pkg_get_name(pkg)) else { continue }
            var signature: [UInt8]
            if alpm_pkg_get_base64_sig(pkg) != nil {
                guard let held = Self.databaseSignature(of: pkg) else { continue }
                signature = held
            } else if let file = string(alpm_pkg_get_filename(pkg)),
                let found = caches.lazy.compactMap({ Self.signatureFile($0 + (($0.hasSuffix("/")) ? "" : "/") + file + ".sig") }).first
            {
                signature = found
            } else {
                continue
            }
            var keys: UnsafeMutablePointer<alpm_list_t>?
            guard alpm_extract_keyid(raw, name, &signature, signature.count, &keys) == 0 else { continue }
            defer { FreeList.strings(keys) }
            let repository = alpm_pkg_get_db(pkg).flatMap { string(alpm_db_get_name($0)) } ?? ""
            for key in AlpmListSequence(keys).strings where !Self.keyring(gpgDir, hasKey: key) {
                names.append(MissingKey(package: name, repository: repository, key: key))
            }
        }
        return names
    }

    /// A detached signature's bytes: a regular file of at most 64 KiB (one is a few hundred bytes).
    private static func signatureFile(_ path: String) -> [UInt8]? {
        let descriptor = open(path, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC)
        guard descriptor >= 0 else { return nil }
        defer { close(descriptor) }
        var st = stat()
        guard fstat(descriptor, &st) == 0, st.st_mode & S_IFMT == S_IFREG, st.st_size > 0, st.st_size <= 64 << 10 else { return nil }
        var bytes = [UInt8](repeating: 0, count: Int(st.st_size))
        let got = bytes.withUnsafeMutableBytes { read(descriptor, $0.baseAddress, $0.count) }
        return got == bytes.count ? bytes : nil
    }

    /// The sync databases whose signature names a key the keyring lacks, read from the signatures
    /// a refresh left beside them. libalpm reports only that a database signature is invalid.
    func databasesWithUnknownKeys() -> [MissingKey] {
        guard let gpgDir = string(alpm_option_get_gpgdir(raw)), let dbPath = string(alpm_option_get_dbpath(raw))
        else { return [] }
        var missing: [MissingKey] = []
        for db in syncDatabases {
            guard let name = string(alpm_db_get_name(db)),
                var signature = FileManager.default.contents(atPath: dbPath + "/sync/" + name + ".db.sig")
            else { continue }
            var keys: UnsafeMutablePointer<alpm_list_t>?
            let found = signature.withUnsafeMutableBytes { bytes in
                alpm_extract_keyid(raw, name, bytes.bindMemory(to: UInt8.self).baseAddress, bytes.count, &keys) == 0
            }
            defer { FreeList.strings(keys) }
            guard found else { continue }
            for key in AlpmListSequence(keys).strings where !Self.keyring(gpgDir, hasKey: key) {
                missing.append(MissingKey(package: nil, repository: name, key: key))
            }
        }
        return missing
    }

    /// Asks gpg whether the keyring holds `key`; libalpm offers no call for it.
    private static func keyring(_ gpgDir: String, hasKey key: String) -> Bool {
        let listed = try? capture("/usr/bin/gpg", ["--homedir", gpgDir, "--batch", "--list-keys", key], quiet: true)
        return listed.map { $0.status == 0 } ?? true
    }
}

enum FreeList {
    /// Frees a list of malloc'd strings and the list itself (`alpm_list_free_inner` + `alpm_list_free`).
    static func strings(_ list: UnsafeMutablePointer<alpm_list_t>?) {
        alpm_list_free_inner(list, free)
        alpm_list_free(list)
    }
}

/// A package, or a repository's database, signed by a key the keyring does not hold.
public struct MissingKey: Sendable, Equatable, Codable {
    /// nil for the repository's database.
    public var package: String?
    public var repository: String
    public var key: String
}
