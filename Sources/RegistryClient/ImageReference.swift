import Foundation
import LayerSupport

/// An image reference as Docker writes it: `[registry/]repository[:tag][@sha256:digest]`.
/// The first component is the registry when it has a `.` or a `:`, or is `localhost`; otherwise
/// the default registry holds the repository (Docker Hub puts one-component names under
/// `library/`).
public struct ImageReference: Sendable, Equatable, CustomStringConvertible {
    /// The host and port as written (`localhost:5000`, `ghcr.io`, `docker.io`).
    public var registry: String
    public var repository: String
    public var tag: String?
    public var digest: String?

    public static let dockerHub = "docker.io"

    /// The repository's last component (`gaming` of `steve/gaming`): the name a pulled image gets.
    public var shortName: String { String(repository.split(separator: "/").last ?? "image") }

    /// What `GET /v2/…/manifests/` names: the digest when there is one, else the tag.
    public var manifestReference: String { digest ?? tag ?? "latest" }

    /// Where the registry's API answers: Docker Hub's API host is not its name.
    public var apiHost: String { registry == Self.dockerHub ? "registry-1.docker.io" : registry }

    /// The name credentials are kept under in a Docker config file.
    public var credentialKeys: [String] {
        registry == Self.dockerHub ? ["https://index.docker.io/v1/", "index.docker.io", "docker.io"] : [registry]
    }

    /// Plain HTTP is spoken only to this machine (`localhost`, `127.0.0.0/8`, `[::1]`) or when asked.
    public var isLoopback: Bool {
        let host = registry.hasPrefix("[") ? String(registry.prefix { $0 != "]" }.dropFirst()) : String(registry.prefix { $0 != ":" })
        if host == "localhost" || host == "::1" { return true }
        let parts = host.split(separator: ".", omittingEmptySubsequences: false)
        return parts.count == 4 && parts[0] == "127" && parts.allSatisfy { UInt8($0) != nil }
    }

    public var description: String {
        var text = registry + "/" + repository
        if let tag { text += ":" + tag }
        if let digest { text += "@" + digest }
        return text
    }

    public init(registry: String, repository: String, tag: String?, digest: String?) {
        self.registry = registry
        self.repository = repository
        self.tag = tag
        self.digest = digest
    }

    /// Parses `text`; a name without a registry lands on `defaultRegistry`.
    public init(parsing text: String, defaultRegistry: String = ImageReference.dockerHub) throws {
        func refuse(_ why: String) -> ReferenceError { ReferenceError(message: "\(text) is not an image reference: \(why)") }
        var rest = Substring(text)
        var digest: String?
        if let at = rest.firstIndex(of: "@") {
            digest = String(rest[rest.index(after: at)...])
            rest = rest[..<at]
            guard let digest, Self.isDigest(digest) else { throw refuse("the digest must be sha256: and 64 hex digits") }
        }
        var tag: String?
        if let colon = rest.lastIndex(of: ":"), !rest[colon...].contains("/") {
            tag = String(rest[rest.index(after: colon)...])
            rest = rest[..<colon]
            guard let tag, Self.isTag(tag) else {
                throw refuse("a tag is 1 to 128 letters, digits, '_', '.' or '-', not starting with '.' or '-'")
            }
        }
        var components = rest.split(separator: "/", omittingEmptySubsequences: false).map(String.init)
        var registry = defaultRegistry
        if components.count > 1, let first = components.first,
            first.contains(".") || first.contains(":") || first == "localhost" || first.hasPrefix("[")
        {
            registry = first
            components.removeFirst()
        }
        if registry == "index.docker.io" || registry == "registry-1.docker.io" { registry = Self.dockerHub }
        if registry == Self.dockerHub && components.count == 1 { components.insert("library", at: 0) }
        guard !components.isEmpty, components.allSatisfy(Self.isPathComponent) else {
            throw refuse("repository components are lowercase letters and digits, joined by '.', '_', '__' or '-'")
        }
        self.init(registry: registry, repository: components.joined(separator: "/"), tag: digest == nil ? (tag ?? "latest") : tag, digest: digest)
    }

    /// Whether `text` is meant as a registry reference rather than a layer name or a file: it has a
    /// `/`, is no absolute or relative path, and its last component has no file extension
    /// (`out/gaming.squashfs` is a file; `ghcr.io/steve/gaming:v1` a reference).
    public static func looksLikeReference(_ text: String) -> Bool {
        guard text.contains("/"), !text.hasPrefix("/"), !text.hasPrefix("."), !text.hasPrefix("~") else { return false }
        let last = text.split(separator: "/").last ?? ""
        return !last.prefix { $0 != ":" && $0 != "@" }.contains(".")
    }

    public static func isDigest(_ text: String) -> Bool {
        guard text.hasPrefix("sha256:") else { return false }
        let hex = text.utf8.dropFirst(7)
        return hex.count == 64 && hex.allSatisfy { (0x30...0x39).contains($0) || (0x61...0x66).contains($0) }
    }

    static func isTag(_ text: String) -> Bool {
        guard let first = text.utf8.first, first != UInt8(ascii: "."), first != UInt8(ascii: "-"), text.utf8.count <= 128 else { return false }
        return text.utf8.allSatisfy { isAlphanumeric($0) || $0 == UInt8(ascii: "_") || $0 == UInt8(ascii: ".") || $0 == UInt8(ascii: "-") }
    }

    /// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`, the distribution spec's path component.
    static func isPathComponent(_ text: String) -> Bool {
        let bytes = Array(text.utf8)
        guard let first = bytes.first, let last = bytes.last, isLowerAlphanumeric(first), isLowerAlphanumeric(last) else { return false }
        var index = 0
        while index < bytes.count {
            if isLowerAlphanumeric(bytes[index]) {
                index += 1
                continue
            }
            var end = index
            while end < bytes.count, !isLowerAlphanumeric(bytes[end]) { end += 1 }
            let separator = String(decoding: bytes[index..<end], as: UTF8.self)
            guard separator == "." || separator == "_" || separator == "__" || separator.allSatisfy({ $0 == "-" }) else { return false }
            index = end
        }
        return true
    }

    private static func isLowerAlphanumeric(_ byte: UInt8) -> Bool {
        (0x30...0x39).contains(byte) || (0x61...0x7a).contains(byte)
    }

    private static func isAlphanumeric(_ byte: UInt8) -> Bool {
        isLowerAlphanumeric(byte) || (0x41...0x5a).contains(byte)
    }
}

/// A reference that cannot be parsed.
public struct ReferenceError: LayerError {
    public let message: String
    public var code: ErrorCode { .input }

    public init(message: String) { self.message = message }
}
