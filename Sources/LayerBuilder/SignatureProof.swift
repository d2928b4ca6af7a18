import Alpm
import LayerRecipe
import LayerStore

extension SignatureProof {
    /// The policy of `repositories`, with the keyring's trusted keys from `trustedKeys` (called
    /// only when a level checks signatures).
    static func current(repositories: [Repository], trustedKeys: () throws -> [String]) throws -> SignatureProof {
        var levels: [String: Int32] = [:]
        for repository in repositories {
            levels[repository.name] = (repository.signatureLevel ?? .pacmanDefault).rawValue
        }
        let checks = levels.values.contains { SignatureLevel(rawValue: $0).checksSignatures }
        return SignatureProof(levels: levels, trustedKeys: checks ? try trustedKeys() : [])
    }
}
