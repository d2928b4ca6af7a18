import Alpm
import Glibc
import LayerRecipe
import LayerSupport

/// A build that cannot go on: where in the layer files (when known), what failed, and why.
public struct BuildFailure: LayerError {
    public let code: ErrorCode
    /// `file:line:column` in a layer file, or a layer file's path; nil when not yet known.
    public let location: String?
    public let message: String
    public let cause: (any Error)?
    /// The packages libalpm named as the cause, for the planner to find their line in the layer file.
    public let packages: [String]

    public init(
        _ message: String, at location: String? = nil, code: ErrorCode = .build, cause: (any Error)? = nil,
        packages: [String] = []
    ) {
        self.code = code
        self.location = location
        self.message = message
        self.cause = cause
        self.packages = packages
    }

    /// `error` put at `location`, keeping its code and its packages.
    public init(_ error: any Error, at location: String?) {
        if let failure = error as? BuildFailure {
            self.init(
                failure.message, at: location ?? failure.location, code: failure.code, cause: failure.cause,
                packages: failure.packages)
        } else if let fileError = error as? LayerFileError {
            self.init(fileError.message, at: location ?? fileError.location.description, code: fileError.code)
        } else if let layerError = error as? any LayerError {
            self.init(
                layerError.message, at: location, code: layerError.code, cause: layerError.cause,
                packages: (error as? AlpmError)?.packages ?? [])
        } else {
            self.init("\(error)", at: location, code: errorCode(of: error))
        }
    }

    public var description: String {
        location.map { "\($0): \(explanation)" } ?? explanation
    }

    /// libalpm's `error` at `location`, as `init(_:at:)` puts it, with `advice` after its words:
    /// what a layer file says where pacman would have asked.
    init(_ error: AlpmError, at location: String?, advice: String) {
        self.init(
            error.message, at: location, code: error.code, cause: Reason("\(error.cause.map { "\($0)" } ?? error.reason); \(advice)"),
            packages: error.packages)
    }
}

extension BuildFailure {
    /// A signature that names a key the keyring lacks: at the repository's place in the layer file
    /// (`location`, from the repository's name), with the keyring and what to do.
    ///
    /// `pacman-key` works on pacman's keyring unless told another: for a `--keyring` of the user's
    /// own, the advice names it, or the key would go where this build does not look. On a fresh
    /// machine the keyring is not there at all, and a key cannot be added to it before
    /// `pacman-key --init` made it: the advice is then to make it.
    init(missingKeys error: AlpmError, keyring: String, location: (String) -> String) {
        let key = error.missingKeys[0].key
        let pacmanKey = keyring == BuildOptions.defaultKeyring ? "pacman-key" : "pacman-key --gpgdir \(shellWord(keyring))"
        let add = "`\(pacmanKey) --recv-keys \(key) && \(pacmanKey) --lsign-key \(key)`"
        let advice =
            Self.holdsKeys(keyring)
            ? "add it with \(add), or name a keyring that trusts it with --keyring"
            : "that keyring holds no keys: make it with `\(pacmanKey) --init && \(pacmanKey) --populate archlinux` "
                + "(on Debian, `apt-get install archlinux-keyring` first), and add a key that is no Arch packager's with "
                + "\(add); or name a keyring that trusts it with --keyring"
        self.init("\(error) (\(keyring)); " + advice, at: location(error.missingKeys[0].repository), code: .packages)
    }

    /// A signature that the repository's level requires and its server could not give (`line`,
    /// libalpm's): what to do, for a repository of one's own unsigned packages (makepkg's, the
    /// AUR's), which pacman's default level meets first.
    static func missingSignature(of what: String, line: String, level: SignatureLevel?, sign: String) -> String {
        let said = level.map { "\($0)" } ?? "pacman's default, \(SignatureLevel.pacmanDefault)"
        return "the signature of \(what) could not be fetched (\(line)), and the repository's siglevel (\(said)) requires "
            + "one: \(sign), or give a repository of your own unsigned packages `siglevel: Optional TrustAll`, as pacman.conf would"
    }

    /// Whether the GnuPG home `keyring` has a public keyring with something in it, as
    /// `pacman-key --init` leaves one.
    static func holdsKeys(_ keyring: String) -> Bool {
        ["pubring.gpg", "pubring.kbx"].contains { name in
            var st = stat()
            return stat(keyring + "/" + name, &st) == 0 && st.st_mode & S_IFMT == S_IFREG && st.st_size > 0
        }
    }
}
