import Alpm

/// A build that cannot go on, in one sentence that names the layer file line, package or path.
public struct BuildFailure: Error, CustomStringConvertible, Sendable {
    public let message: String
    /// The packages libalpm named as the cause, for the planner to find their line in the layer file.
    public let packages: [String]

    public init(_ message: String, packages: [String] = []) {
        self.message = message
        self.packages = packages
    }

    public var description: String { message }
}

extension BuildFailure {
    /// A signature that names a key the keyring lacks: at the repository's place in the layer file
    /// (`location`, from the repository's name), with the keyring and what to do.
    init(missingKeys error: AlpmError, keyring: String, location: (String) -> String) {
        let key = error.missingKeys[0].key
        self.init(
            "\(location(error.missingKeys[0].repository)): \(error) (\(keyring)); add it with "
                + "`pacman-key --recv-keys \(key) && pacman-key --lsign-key \(key)`, "
                + "or name a keyring that trusts it with --keyring")
    }
}
