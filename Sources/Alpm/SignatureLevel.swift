import CAlpm

/// A pacman `SigLevel`: which signatures must be present and valid, for packages and databases.
public struct SignatureLevel: Equatable, Hashable, Sendable, CustomStringConvertible, Codable {
    /// The `alpm_siglevel_t` bit set.
    public let rawValue: Int32

    public init(rawValue: Int32) { self.rawValue = rawValue }

    /// As its bit set, a number.
    public init(from decoder: any Decoder) throws { rawValue = try decoder.singleValueContainer().decode(Int32.self) }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(rawValue)
    }

    /// pacman.conf's default, `Required DatabaseOptional`, which users expect of remote repositories.
    public static let pacmanDefault = SignatureLevel(
        rawValue: Int32(ALPM_SIG_PACKAGE.rawValue | ALPM_SIG_DATABASE.rawValue | ALPM_SIG_DATABASE_OPTIONAL.rawValue))

    /// No signature is checked, neither a package's nor a database's; libalpm still checks every
    /// package file against the sha256 its database gives. For packages whose signatures were
    /// checked when they entered the cache, by a handle that has the keyring.
    public static let never = SignatureLevel(rawValue: 0)

    /// Parses pacman.conf's words (`Never`, `Optional`, `Required`, `TrustedOnly`, `TrustAll`, each
    /// optionally prefixed `Package` or `Database`), starting from pacman's default as pacman does.
    /// A word pacman does not know is a failure that names it.
    public static func parse(_ text: String) -> Result<SignatureLevel, SignatureLevelError> {
        let package = (ALPM_SIG_PACKAGE.rawValue, ALPM_SIG_PACKAGE_OPTIONAL.rawValue,
                       ALPM_SIG_PACKAGE_MARGINAL_OK.rawValue, ALPM_SIG_PACKAGE_UNKNOWN_OK.rawValue)
        let database = (ALPM_SIG_DATABASE.rawValue, ALPM_SIG_DATABASE_OPTIONAL.rawValue,
                        ALPM_SIG_DATABASE_MARGINAL_OK.rawValue, ALPM_SIG_DATABASE_UNKNOWN_OK.rawValue)
        var level = UInt32(pacmanDefault.rawValue)
        for word in text.split(whereSeparator: { $0 == " " || $0 == "," }) {
            var name = Substring(word)
            var targets = [package, database]
            if name.hasPrefix("Package") {
                name = name.dropFirst("Package".count)
                targets = [package]
            } else if name.hasPrefix("Database") {
                name = name.dropFirst("Database".count)
                targets = [database]
            }
            for (check, optional, marginal, unknown) in targets {
                switch name {
                case "Never": level &= ~(check | optional)
                case "Optional": level |= check | optional
                case "Required": level = (level | check) & ~optional
                case "TrustedOnly": level &= ~(marginal | unknown)
                case "TrustAll": level |= marginal | unknown
                default: return .failure(SignatureLevelError(word: String(word)))
                }
            }
        }
        return .success(SignatureLevel(rawValue: Int32(bitPattern: level)))
    }

    /// Whether what was checked under this level also holds under `required`: for packages and for
    /// databases alike, a check `required` makes was made (Required where it says Required), and
    /// trust it does not extend (TrustAll's marginal and unknown keys) was not extended.
    public func satisfies(_ required: SignatureLevel) -> Bool {
        let mine = UInt32(bitPattern: rawValue)
        let theirs = UInt32(bitPattern: required.rawValue)
        let domains = [
            (ALPM_SIG_PACKAGE.rawValue, ALPM_SIG_PACKAGE_OPTIONAL.rawValue, ALPM_SIG_PACKAGE_MARGINAL_OK.rawValue,
             ALPM_SIG_PACKAGE_UNKNOWN_OK.rawValue),
            (ALPM_SIG_DATABASE.rawValue, ALPM_SIG_DATABASE_OPTIONAL.rawValue, ALPM_SIG_DATABASE_MARGINAL_OK.rawValue,
             ALPM_SIG_DATABASE_UNKNOWN_OK.rawValue),
        ]
        for (check, optional, marginal, unknown) in domains where theirs & check != 0 {
            guard mine & check != 0 else { return false }
            if theirs & optional == 0 && mine & optional != 0 { return false }
            for trust in [marginal, unknown] where mine & trust != 0 && theirs & trust == 0 { return false }
        }
        return true
    }

    /// Whether packages are checked, and a package without a signature passes (`PackageOptional`).
    public var checksPackagesOptionally: Bool {
        let bits = UInt32(bitPattern: rawValue)
        return bits & ALPM_SIG_PACKAGE.rawValue != 0 && bits & ALPM_SIG_PACKAGE_OPTIONAL.rawValue != 0
    }

    /// Whether packages are checked, and a package without a signature fails (`PackageRequired`).
    public var requiresPackageSignatures: Bool {
        let bits = UInt32(bitPattern: rawValue)
        return bits & ALPM_SIG_PACKAGE.rawValue != 0 && bits & ALPM_SIG_PACKAGE_OPTIONAL.rawValue == 0
    }

    /// This level with no package checked (`PackageNever`); databases as they were.
    public var checkingNoPackage: SignatureLevel {
        let package = ALPM_SIG_PACKAGE.rawValue | ALPM_SIG_PACKAGE_OPTIONAL.rawValue | ALPM_SIG_PACKAGE_MARGINAL_OK.rawValue
            | ALPM_SIG_PACKAGE_UNKNOWN_OK.rawValue
        return SignatureLevel(rawValue: Int32(bitPattern: UInt32(bitPattern: rawValue) & ~package))
    }

    /// Whether this level checks any signature at all, of packages or of databases.
    public var checksSignatures: Bool {
        UInt32(bitPattern: rawValue) & (ALPM_SIG_PACKAGE.rawValue | ALPM_SIG_DATABASE.rawValue) != 0
    }

    public var description: String {
        let bits = UInt32(bitPattern: rawValue)
        func words(_ check: UInt32, _ optional: UInt32) -> String {
            bits & check == 0 ? "Never" : (bits & optional != 0 ? "Optional" : "Required")
        }
        return "Package\(words(ALPM_SIG_PACKAGE.rawValue, ALPM_SIG_PACKAGE_OPTIONAL.rawValue)) "
            + "Database\(words(ALPM_SIG_DATABASE.rawValue, ALPM_SIG_DATABASE_OPTIONAL.rawValue))"
    }
}

/// A word in a `siglevel` that pacman does not know.
public struct SignatureLevelError: Error, Sendable {
    public let word: String
}
