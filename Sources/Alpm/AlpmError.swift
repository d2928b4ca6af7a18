import CAlpm
import LayerSupport

/// A failed libalpm call: what was attempted, on which package or path, and libalpm's own words.
public struct AlpmError: LayerError, Codable {
    /// libalpm's error number, when the failure came from libalpm (`alpm_errno`).
    public let alpmErrno: Int32?
    /// What was being done, in a few words ("install", "register database").
    public let operation: String
    /// The package, database or file concerned, if there is one.
    public let subject: String?
    /// libalpm's text for `code` (`alpm_strerror`), or our own explanation.
    public let reason: String
    /// Further lines: missing dependencies, conflicting files, failing scriptlets.
    public let details: [String]
    /// The packages libalpm names as the cause, in its order: the package a missing dependency is
    /// missing for, both of a conflicting pair, the package whose files conflict, the package whose
    /// scriptlet failed. Empty when libalpm names none; then `subject` is what was asked for.
    public let packages: [String]
    /// Packages whose signing key the keyring does not hold, when that is what failed.
    public private(set) var missingKeys: [MissingKey] = []
    /// The repository whose database is at fault, when that is what failed.
    public var repository: String?
    /// Installed packages that a package to install conflicts with, which the transaction neither
    /// removes nor asks for: pacman would ask whether to remove each ("Remove X? [y/N]").
    public internal(set) var installedConflicts: [String] = []
    /// Files a package would write that are in the way and that no installed package owns: pacman
    /// overwrites none of them ("exists in filesystem").
    public internal(set) var unownedFiles: [String] = []
    /// The names of the dependencies nothing satisfies, when that is what failed.
    public internal(set) var missingDependencies: [String] = []

    /// A signature check that failed for want of keys: one line naming the first package (or
    /// database), its repository and the key.
    init(missingKeys: [MissingKey], code: Int32?) {
        let first = missingKeys[0]
        let more = missingKeys.count > 1 ? " (and \(missingKeys.count - 1) more)" : ""
        let signed = "signed by key \(first.key), which the keyring does not hold\(more)"
        if let package = first.package {
            self.init(
                code: code, operation: "check the signature of", subject: package,
                reason: "from repository \(first.repository), it is \(signed)")
        } else {
            self.init(
                code: code, operation: "check the signature of the database of repository",
                subject: first.repository, reason: "it is \(signed)")
        }
        self.missingKeys = missingKeys
    }

    public init(
        code: Int32? = nil, operation: String, subject: String? = nil, reason: String, details: [String] = [],
        packages: [String] = []
    ) {
        self.alpmErrno = code
        self.operation = operation
        self.subject = subject
        self.reason = reason
        self.details = details
        self.packages = packages
    }

    /// The error for libalpm's error number `errno`, in libalpm's words.
    init(
        errno: alpm_errno_t, operation: String, subject: String? = nil, details: [String] = [],
        packages: [String] = []
    ) {
        self.init(
            code: Int32(errno.rawValue), operation: operation, subject: subject,
            reason: String(cString: alpm_strerror(errno)), details: details, packages: packages)
    }

    /// Builds the error from the handle's current `alpm_errno`; call it right after the failing call.
    init(handle: OpaquePointer, operation: String, subject: String? = nil) {
        self.init(errno: alpm_errno(handle), operation: operation, subject: subject)
    }

    /// libalpm's lines for a file it could not download ("failed retrieving file 'NAME' from HOST :
    /// WHY", with ": " for its " : "), one per server it tried, which say all there is to say; nil
    /// when no download failed. Its error number then says less, or the wrong thing: "invalid url
    /// for server" for a host that does not resolve, "download library error" for a file that is
    /// not there.
    public var retrievalFailure: String? {
        var seen = Set<String>()
        let lines = details.filter { $0.contains("failed retrieving file '") }.map { line in
            var text = line.trimmingCharacters(in: .whitespacesAndNewlines)
            if let spaced = text.range(of: " : ") { text.replaceSubrange(spaced, with: ": ") }
            return clip(text, to: 300)
        }.filter { seen.insert($0).inserted }
        guard !lines.isEmpty else { return nil }
        let shown = lines.count > 3 ? lines.prefix(2) + ["and \(lines.count - 2) more"] : lines[...]
        return shown.joined(separator: "; ")
    }

    public var code: ErrorCode { .packages }
    /// What failed: the operation and its subject.
    public var message: String { subject.map { "\(operation) \(clip($0, to: 200)) failed" } ?? "\(operation) failed" }
    /// libalpm's words, then the further lines, in one line (an error is one line: a newline in it
    /// would be shown as `\x0a`). The lines quote a repository's database, which a stranger may
    /// write: each is cut to 160 characters, and past the sixth they are counted.
    public var cause: (any Error)? {
        let lines = details.map { clip($0.trimmingCharacters(in: .whitespacesAndNewlines), to: 160) }
        let shown = lines.count > 6 ? lines.prefix(5) + ["and \(lines.count - 5) more"] : lines[...]
        return Reason(([reason] + shown).joined(separator: "; "))
    }
}
