import Alpm
import Foundation

/// What a layer's packages were checked against when it was built: each repository's signature
/// level, and the keys the keyring trusted (when any level checks signatures). The layer key
/// leaves the policy out, so that a layer checked under a stricter policy serves a weaker one;
/// a stored layer is reused only when its proof covers the policy in force (`proves`), and is
/// built again otherwise.
public struct SignatureProof: Codable, Sendable, Equatable {
    /// Repository name → `alpm_siglevel_t` bits.
    public var levels: [String: Int32]
    /// `FINGERPRINT:VALIDITY` of each key the keyring held with marginal, full or ultimate
    /// validity, sorted; empty when no level checks signatures.
    public var trustedKeys: [String]

    public init(levels: [String: Int32], trustedKeys: [String]) {
        self.levels = levels
        self.trustedKeys = trustedKeys
    }

    /// Why this proof does not cover `required`, or nil when it does: every repository `required`
    /// names was checked at least as strictly, and every key trusted then is trusted now.
    package func shortfall(against required: SignatureProof) -> String? {
        for (name, level) in required.levels.sorted(by: { $0.key < $1.key }) {
            let wanted = SignatureLevel(rawValue: level)
            guard let had = levels[name].map(SignatureLevel.init(rawValue:)) else {
                return wanted.checksSignatures ? "repository \(name) was not checked" : nil
            }
            if !had.satisfies(wanted) { return "repository \(name) was checked under \(had), not \(wanted)" }
        }
        let checks = required.levels.values.contains { SignatureLevel(rawValue: $0).checksSignatures }
        if checks, let key = trustedKeys.first(where: { !required.trustedKeys.contains($0) }) {
            return "key \(key.prefix { $0 != ":" }) was trusted then and is not now"
        }
        return nil
    }
}

