import Foundation
import Glibc
import LayerSupport

/// The keys of a GnuPG keyring, as `gpg --list-keys` shows them.
enum Keyring {
    /// `FINGERPRINT:VALIDITY` of every key with marginal (m), full (f) or ultimate (u) validity,
    /// sorted. A keyring without a public key ring (or no keyring at all) trusts nothing, and is
    /// not touched: gpg would create its files. Validity is what the signature check itself sees:
    /// gpg brings the trust database up to date first, as it does when libalpm verifies (a keyring
    /// whose trust database was never checked shows every key's validity as unknown).
    static func trustedKeys(home: String) throws -> [String] {
        guard FileSystem.exists(home + "/pubring.gpg") || FileSystem.exists(home + "/pubring.kbx") else { return [] }
        let candidates: [String] = ["/usr/bin/gpg", "/bin/gpg"]
        let gpg = candidates.first { access($0, X_OK) == 0 }
        guard let gpg else { throw BuildFailure("listing the keys of \(home) failed: gpg is not installed", code: .system) }
        let listed = try capture(
            gpg,
            ["--homedir", home, "--batch", "--quiet", "--no-permission-warning", "--with-colons", "--list-keys"],
            environment: ["PATH=/usr/bin:/bin", "LC_ALL=C"])
        guard listed.status == 0 else {
            throw BuildFailure("listing the keys of \(home) failed: gpg exited with status \(listed.status)", code: .system)
        }
        let output = String(decoding: listed.output, as: UTF8.self)
        var keys: [String] = []
        var validity: Substring?
        for line in output.split(separator: "\n") {
            let fields = line.split(separator: ":", omittingEmptySubsequences: false)
            if fields.first == "pub", fields.count > 1 {
                validity = ["m", "f", "u"].contains(fields[1]) ? fields[1] : nil
            } else if fields.first == "fpr", fields.count > 9, let current = validity {
                keys.append("\(fields[9]):\(current)")
                validity = nil
            } else if fields.first == "sub" {
                validity = nil
            }
        }
        return keys.sorted()
    }
}
