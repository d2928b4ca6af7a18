import LayerSupport

/// The shapes of the names and values a layer file gives, as pacman, pacman.conf and the shell
/// take them, matched byte by byte (ByteSet says why no Regex).
package enum NameShape {
    private static let repositoryFirst = ByteSet("a-z0-9"), repositoryRest = ByteSet("a-z0-9._-")
    private static let packageFirst = ByteSet("a-z0-9@_+"), packageRest = ByteSet("a-z0-9@._+-")
    private static let versionBytes = ByteSet("A-Za-z0-9._:+~-")
    private static let patternBytes = ByteSet("a-z0-9@._+*?[]-")
    private static let variableFirst = ByteSet("A-Za-z_"), variableRest = ByteSet("A-Za-z0-9_")
    private static let accountFirst = ByteSet("A-Za-z0-9_"), accountRest = ByteSet("A-Za-z0-9_.-")
    private static let octal = ByteSet("0-7"), digits = ByteSet("0-9")

    /// `name` or `repo/name`; where `versioned`, also with a version it must satisfy, after `<`,
    /// `<=`, `=`, `>=` or `>` (`linux>=6.6`, as `pacman -S` takes it).
    package static func isPackageName(_ text: String, versioned: Bool) -> Bool {
        var bytes = Substring(text).utf8[...]
        if let slash = bytes.firstIndex(of: UInt8(ascii: "/")) {
            guard ByteSet.isName(bytes[..<slash], first: repositoryFirst, rest: repositoryRest) else { return false }
            bytes = bytes[bytes.index(after: slash)...]
        }
        guard versioned, let comparison = bytes.firstIndex(where: { "<=>".utf8.contains($0) }) else {
            return ByteSet.isName(bytes, first: packageFirst, rest: packageRest)
        }
        guard ByteSet.isName(bytes[..<comparison], first: packageFirst, rest: packageRest) else { return false }
        // A version holds none of `<=>`: a second byte of the comparison is an `=` after `<` or `>`.
        var version = bytes[bytes.index(after: comparison)...]
        if bytes[comparison] != UInt8(ascii: "="), version.first == UInt8(ascii: "=") { version = version.dropFirst() }
        return versionBytes.holdsAll(version)
    }

    /// An `ignore:` item: a package name or a shell pattern of names, as IgnorePkg takes them.
    package static func isIgnorePattern(_ text: String) -> Bool { patternBytes.holdsAll(text.utf8) }

    /// Octal permission bits: three or four digits, perhaps after a `0`.
    package static func isMode(_ text: String) -> Bool {
        let bytes = Array(text.utf8)
        let leadingZero = bytes.count == 5 && bytes[0] == UInt8(ascii: "0") ? 1 : 0
        return octal.holdsAll(bytes) && (3...4).contains(bytes.count - leadingZero)
    }

    /// `user` or `user:group`, each a name or a number.
    package static func isOwner(_ text: String) -> Bool {
        let parts = text.utf8.split(separator: UInt8(ascii: ":"), maxSplits: 1, omittingEmptySubsequences: false)
        return parts.allSatisfy { ByteSet.isName($0, first: accountFirst, rest: accountRest) }
    }

    /// An environment variable's name, as the shell takes it.
    package static func isVariable(_ text: String) -> Bool {
        ByteSet.isName(text.utf8, first: variableFirst, rest: variableRest)
    }

    /// A day as `2024-06-01`; `slashes` takes `2024/06/01` too, and either separator in each place.
    package static func isDay(_ text: String, slashes: Bool = false) -> Bool {
        let bytes = Array(text.utf8)
        guard bytes.count == 10 else { return false }
        return bytes.indices.allSatisfy { index in
            guard index == 4 || index == 7 else { return digits.contains(bytes[index]) }
            return bytes[index] == UInt8(ascii: "-") || (slashes && bytes[index] == UInt8(ascii: "/"))
        }
    }
}
