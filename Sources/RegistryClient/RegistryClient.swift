import CCurl
import Crypto
import Foundation
import Glibc
import LayerSupport

/// How a registry is spoken to.
public struct RegistryOptions: Sendable {
    /// Speak plain HTTP to a registry that is not on this machine.
    public var insecure = false
    /// Attempts after the first on a dropped connection, a timeout, a 5xx or a 429.
    public var retries = 4
    /// The first wait before a retry; each next one doubles it.
    public var backoff: Double = 0.5
    /// Blobs larger than this go up in chunks (PATCH) of this size; smaller ones in one PUT.
    public var chunkSize: Int64 = 64 << 20
    /// Where credentials are read (`RegistryCredentials.configFile()` when nil).
    public var credentialsFile: String?
    /// Folders with a folder per registry (`HOST[:PORT]`) of CA certificates (`*.crt`) it is
    /// trusted by besides the system's, as Docker and podman keep them.
    public var certificateFolders = ["/etc/containers/certs.d", "/etc/docker/certs.d"]
    /// The system's CA certificates, which a registry's own are added to.
    public var systemCertificates = "/etc/ssl/certs/ca-certificates.crt"
    /// The system's CA certificates one to a file, under their subject hashes (`c_rehash`), as
    /// Debian and Arch keep them. When this folder is such, OpenSSL reads only the certificates a
    /// server's chain needs, instead of parsing the whole bundle (about 45 ms) in every process.
    public var systemCertificateFolder = "/etc/ssl/certs"

    public init() {}
}

/// The OCI distribution protocol with one registry: manifests and blobs, with the bearer-token
/// flow (as Docker Hub uses even for anonymous pulls) or basic auth, and retries with backoff.
/// Speaks HTTPS, or plain HTTP to this machine's loopback addresses or with `insecure`. Every
/// download is checked against its digest while it streams.
public final class RegistryClient {
    public let registry: String
    let options: RegistryOptions
    let transfer: HTTPTransfer
    let apiHost: String
    let loopback: Bool
    let credentials: RegistryCredentials?
    /// Bearer tokens by scope; `basic` once the registry asked for basic auth.
    private var tokens: [String: String] = [:]
    private var basic = false
    /// Said when a retry is coming: what failed, and the wait.
    public var onRetry: ((String) -> Void)?

    public init(_ reference: ImageReference, options: RegistryOptions) throws {
        registry = reference.registry
        self.options = options
        apiHost = reference.apiHost
        loopback = reference.isLoopback
        transfer = try HTTPTransfer(allowPlainHTTP: options.insecure || reference.isLoopback)
        transfer.certificates = try Self.certificates(for: reference.registry, options: options)
        if transfer.certificates == nil, Self.isHashedFolder(options.systemCertificateFolder) {
            transfer.certificateFolder = options.systemCertificateFolder
        }
        credentials = try RegistryCredentials.lookUp(
            reference.credentialKeys, in: options.credentialsFile ?? RegistryCredentials.configFile())
    }

    /// `http://` or `https://`, then the host. `--insecure` speaks plain HTTP; a registry on this
    /// machine is asked once over HTTPS, and spoken to in plain HTTP only when it does not speak TLS
    /// (a certificate it is not trusted for stays an error, as for any other registry).
    private lazy var base: String = {
        if options.insecure { return "http://" + apiHost }
        guard loopback else { return "https://" + apiHost }
        do {
            _ = try transfer.perform(HTTPRequest(method: "GET", url: "https://\(apiHost)/v2/"))
        } catch let error as TransportError where [CURLE_SSL_CONNECT_ERROR, CURLE_GOT_NOTHING, CURLE_RECV_ERROR].contains(error.code) {
            return "http://" + apiHost
        } catch {}
        return "https://" + apiHost
    }()

    /// `base`'s scheme, host and port (`origin`): what a request's URL must share to be sent the
    /// credentials.
    private lazy var registryOrigin = Self.origin(base)

    /// The system's CA certificates and the registry's own, when it has a folder in
    /// `options.certificateFolders`; nil (the system's alone) when it has none.
    static func certificates(for registry: String, options: RegistryOptions) throws -> Data? {
        var own: [String] = []
        for folder in options.certificateFolders {
            let path = folder + "/" + registry
            guard let names = try? FileSystem.listDirectory(path) else { continue }
            own += names.filter { $0.hasSuffix(".crt") }.map { path + "/" + $0 }
        }
        guard !own.isEmpty else { return nil }
        var bundle = (try? FileSystem.readRegularFile(options.systemCertificates)) ?? Data()
        for file in own {
            do { bundle += try FileSystem.readRegularFile(file) + Data("\n".utf8) } catch {
                throw RegistryError(.input, "read the CA certificate \(file) failed", cause: error)
            }
        }
        return bundle
    }

    /// Whether `folder` holds certificates under their subject hashes (`1a2b3c4d.0`).
    static func isHashedFolder(_ folder: String) -> Bool {
        guard let names = try? FileSystem.listDirectory(folder) else { return false }
        return names.contains { name in
            let parts = name.split(separator: ".")
            return parts.count == 2 && parts[0].count == 8 && parts[0].allSatisfy(\.isHexDigit) && parts[1].allSatisfy(\.isNumber)
        }
    }

    public enum Access: Sendable {
        case pull, push

        var actions: String { self == .pull ? "pull" : "pull,push" }
    }

    // MARK: Manifests

    public struct Manifest: Sendable {
        public var data: Data
        public var mediaType: String
        /// `sha256:…` of `data`.
        public var digest: String
    }

    static let manifestTypes = [
        "application/vnd.oci.image.manifest.v1+json", "application/vnd.oci.image.index.v1+json",
        "application/vnd.docker.distribution.manifest.v2+json", "application/vnd.docker.distribution.manifest.list.v2+json",
    ]

    /// The manifest `reference` (a tag or a digest) names, or nil when the registry has none. A
    /// manifest fetched by digest must have that digest.
    public func manifest(_ repository: String, _ reference: String) throws -> Manifest? {
        let request = HTTPRequest(
            method: "GET", url: "\(base)/v2/\(repository)/manifests/\(reference)",
            headers: ["Accept: " + Self.manifestTypes.joined(separator: ", ")])
        let response = try send(request, scopes: [scope(repository, .pull)], what: "manifest \(repository):\(reference)")
        if response.status == 404 { return nil }
        try expect(response, [200], "get manifest \(repository):\(reference)")
        guard response.body.count <= 4 << 20 else {
            throw RegistryError(.input, "\(registry)/\(repository):\(reference): the manifest is larger than 4 MiB")
        }
        let digest = "sha256:" + Digest.sha256(response.body)
        if reference.hasPrefix("sha256:"), digest != reference {
            throw RegistryError(.input, "\(registry)/\(repository)@\(reference): the manifest sent has digest \(digest)")
        }
        let mediaType = response.header("content-type").map { String($0.prefix { $0 != ";" }) } ?? ""
        return Manifest(data: response.body, mediaType: mediaType, digest: digest)
    }

    /// Stores `data` as the manifest `reference` (a tag) and returns its digest.
    @discardableResult
    public func putManifest(_ repository: String, _ reference: String, data: Data, mediaType: String) throws -> String {
        let request = HTTPRequest(
            method: "PUT", url: "\(base)/v2/\(repository)/manifests/\(reference)",
            headers: ["Content-Type: " + mediaType], body: .data(data))
        let response = try send(request, scopes: [scope(repository, .push)], what: "manifest \(repository):\(reference)")
        try expect(response, [200, 201], "put manifest \(repository):\(reference)")
        return "sha256:" + Digest.sha256(data)
    }

    // MARK: Blobs

    /// Whether the repository has the blob.
    public func hasBlob(_ repository: String, _ digest: String, access: Access = .pull) throws -> Bool {
        let request = HTTPRequest(method: "HEAD", url: "\(base)/v2/\(repository)/blobs/\(digest)")
        let response = try send(request, scopes: [scope(repository, access)], what: "blob \(digest)")
        if response.status == 404 { return false }
        try expect(response, [200], "look up blob \(digest) in \(repository)")
        return true
    }

    /// Downloads the blob into the new file `path`, checking its size and digest as it streams:
    /// on any mismatch the file is removed and the error names the blob.
    public func downloadBlob(
        _ repository: String, _ digest: String, size: Int64, to path: String, progress: ((Int64) -> Void)? = nil
    ) throws {
        try streamBlob(repository, digest, size: size, progress: progress) {
            let descriptor = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
            guard descriptor >= 0 else { throw SystemError("create", path) }
            return BlobSink(
                write: { bytes in
                    do { try FileSystem.writeAll(descriptor, bytes, to: path) } catch { return error }
                    return nil
                },
                end: { close(descriptor) },
                abandon: {
                    close(descriptor)
                    unlink(path)
                })
        }
    }

    /// Where a download's bytes go: a new one for each attempt. `write` returns the error to stop
    /// with; `end` follows a download whose size and digest were right, `abandon` any other.
    public struct BlobSink {
        public var write: (UnsafeRawBufferPointer) -> (any Error)?
        public var end: () -> Void
        public var abandon: () -> Void

        public init(
            write: @escaping (UnsafeRawBufferPointer) -> (any Error)?, end: @escaping () -> Void,
            abandon: @escaping () -> Void
        ) {
            self.write = write
            self.end = end
            self.abandon = abandon
        }
    }

    /// Downloads the blob into the sinks `attempt` makes (one per attempt), checking its size and
    /// digest as it streams; a sink is abandoned when its attempt fails or the bytes are wrong.
    public func streamBlob(
        _ repository: String, _ digest: String, size: Int64, progress: ((Int64) -> Void)? = nil,
        attempt: () throws -> BlobSink
    ) throws {
        let what = "\(registry)/\(repository) blob \(digest)"
        try withRetries(what) {
            let sink = try attempt()
            do {
                var hasher = SHA256()
                var received: Int64 = 0
                let request = HTTPRequest(method: "GET", url: "\(base)/v2/\(repository)/blobs/\(digest)")
                let response = try sendOnce(request, scopes: [scope(repository, .pull)], what: what) { bytes in
                    received += Int64(bytes.count)
                    if received > size {
                        return RegistryError(.input, "\(what): more bytes than the \(size) its descriptor says")
                    }
                    hasher.update(bufferPointer: bytes)
                    if let error = sink.write(bytes) { return error }
                    progress?(Int64(bytes.count))
                    return nil
                }
                if response.status == 404 {
                    throw RegistryError(.input, "\(what): the registry does not have it, though the manifest names it")
                }
                try expect(response, [200], "download \(what)")
                guard received == size else {
                    throw RegistryError(.input, "\(what): \(received) bytes, not the \(size) its descriptor says")
                }
                let got = "sha256:" + Hash256(hasher.finalize()).hex
                guard got == digest else { throw RegistryError(.input, "\(what): the bytes sent have digest \(got)") }
            } catch {
                sink.abandon()
                throw error
            }
            sink.end()
        }
    }

    /// How a blob got into a repository.
    public enum Upload: String, Sendable { case present, mounted, uploaded }

    /// Uploads the file `path` as the blob `digest` unless the repository has it: in one PUT, or in
    /// PATCH chunks of `options.chunkSize` when larger. With `mountFrom` (another repository of this
    /// registry that has it) the registry is asked to mount it first. Returns how it got there.
    @discardableResult
    public func uploadBlob(
        _ repository: String, file path: String, digest: String, size: Int64, mountFrom: String? = nil,
        progress: ((Int64) -> Void)? = nil
    ) throws -> Upload {
        if try hasBlob(repository, digest, access: .push) { return .present }
        let descriptor = open(path, O_RDONLY | O_CLOEXEC)
        guard descriptor >= 0 else { throw SystemError("open", path) }
        defer { close(descriptor) }
        let what = "\(registry)/\(repository) blob \(digest)"
        var scopes = [scope(repository, .push)]
        if let mountFrom { scopes.append(scope(mountFrom, .pull)) }
        return try withRetries(what) {
            var url = "\(base)/v2/\(repository)/blobs/uploads/"
            if let mountFrom { url += "?mount=\(digest)&from=\(mountFrom)" }
            let start = try sendOnce(HTTPRequest(method: "POST", url: url), scopes: scopes, what: what)
            if start.status == 201, mountFrom != nil { return .mounted }
            try expect(start, [202], "start the upload of \(what)")
            var location = try self.location(start, what)
            var offset: Int64 = 0
            if size > options.chunkSize {
                while offset < size {
                    let length = min(options.chunkSize, size - offset)
                    let chunk = HTTPRequest(
                        method: "PATCH", url: location,
                        headers: [
                            "Content-Type: application/octet-stream", "Content-Range: \(offset)-\(offset + length - 1)",
                        ],
                        body: .file(descriptor: descriptor, offset: offset, length: length))
                    let response = try sendOnce(chunk, scopes: scopes, what: what) { _ in nil } sent: { progress?(Int64($0)) }
                    try expect(response, [202], "upload bytes \(offset)… of \(what)")
                    location = try self.location(response, what)
                    offset += length
                }
            }
            let finish = HTTPRequest(
                method: "PUT", url: location + (location.contains("?") ? "&" : "?") + "digest=\(digest)",
                headers: ["Content-Type: application/octet-stream"],
                body: .file(descriptor: descriptor, offset: offset, length: size - offset))
            let response = try sendOnce(finish, scopes: scopes, what: what) { _ in nil } sent: { progress?(Int64($0)) }
            try expect(response, [201], "finish the upload of \(what)")
            return .uploaded
        }
    }

    // MARK: Requests, auth and retries

    func scope(_ repository: String, _ access: Access) -> String { "repository:\(repository):\(access.actions)" }

    /// Sends with retries; for requests whose body is small enough to be kept.
    private func send(_ request: HTTPRequest, scopes: [String], what: String) throws -> HTTPResponse {
        try withRetries("\(registry) \(what)") { try sendOnce(request, scopes: scopes, what: what) }
    }

    /// Runs `attempt`, again after a transient failure (no connection, a dropped one, a 5xx, a 429)
    /// with a doubling wait, up to `options.retries` more times.
    private func withRetries<T>(_ what: String, _ attempt: () throws -> T) throws -> T {
        var wait = options.backoff
        var tries = 0
        while true {
            do {
                return try attempt()
            } catch let error as Transient where tries < options.retries {
                tries += 1
                onRetry?("\(what): \(error.reason); trying again in \(wait) s")
                usleep(UInt32(wait * 1_000_000))
                wait *= 2
            } catch let error as Transient {
                throw RegistryError(.system, "\(what) failed after \(tries + 1) attempts", cause: Reason(error.reason))
            }
        }
    }

    /// One request: with the credentials this registry asked for; on a 401, the challenge is met
    /// (a bearer token fetched, or basic auth taken up) and the request sent once more. A request
    /// to another server (an upload location on object storage) goes without them, as a redirect
    /// does (libcurl's rule): a password or token is for the registry it was given for.
    private func sendOnce(
        _ request: HTTPRequest, scopes: [String], what: String,
        sink: ((UnsafeRawBufferPointer) -> (any Error)?)? = nil, sent: ((Int) -> Void)? = nil
    ) throws -> HTTPResponse {
        guard let origin = Self.origin(request.url), origin == registryOrigin else {
            return try perform(request, sink: sink, sent: sent)
        }
        var authorized = request
        if let header = authorization(scopes) { authorized.headers.append("Authorization: " + header) }
        var response = try perform(authorized, sink: sink, sent: sent)
        guard response.status == 401 else { return response }
        try answer(challenge: response.header("www-authenticate") ?? "", scopes: scopes)
        authorized = request
        if let header = authorization(scopes) { authorized.headers.append("Authorization: " + header) }
        response = try perform(authorized, sink: sink, sent: sent)
        if response.status == 401 {
            throw RegistryError(.input, "\(registry) refused \(credentials?.description ?? "anonymous access") for \(what)")
        }
        return response
    }

    private func perform(
        _ request: HTTPRequest, sink: ((UnsafeRawBufferPointer) -> (any Error)?)?, sent: ((Int) -> Void)?
    ) throws -> HTTPResponse {
        let response: HTTPResponse
        do {
            response = try transfer.perform(request, sink: sink, sent: sent)
        } catch let error as TransportError where error.isTransient {
            throw Transient(reason: error.detail)
        } catch let error as TransportError {
            throw RegistryError(
                error.isTheServers ? .input : .system, "\(request.method) \(Self.shown(request.url)) failed", cause: Reason(error.detail))
        }
        if response.status >= 500 || response.status == 429 {
            throw Transient(reason: "the registry answered \(response.status)\(Self.errorSummary(response))")
        }
        return response
    }

    /// `url` as a message shows it: without its query, which may carry a signature (an upload
    /// location on object storage is often a presigned URL) or a token; `?…` says there was one.
    static func shown(_ url: String) -> String {
        guard let question = url.firstIndex(of: "?") else { return url }
        return url[..<question] + "?…"
    }

    /// The scheme, host and port of `url`, lowercased, the port given when it is the scheme's own:
    /// what a URL must share with the registry's to be sent its credentials.
    static func origin(_ url: String) -> String? {
        guard let parts = URLComponents(string: url), let scheme = parts.scheme?.lowercased(), let host = parts.host?.lowercased()
        else { return nil }
        let port = parts.port ?? (scheme == "https" ? 443 : 80)
        return "\(scheme)://\(host):\(port)"
    }

    private func authorization(_ scopes: [String]) -> String? {
        if let token = tokens[scopes.joined(separator: " ")] { return "Bearer " + token }
        if basic, let credentials { return credentials.basicAuthorization }
        return nil
    }

    /// Meets a `WWW-Authenticate` challenge: `Basic` takes up the credentials; `Bearer` fetches a
    /// token for the scopes from the realm, with the credentials when there are any.
    private func answer(challenge: String, scopes: [String]) throws {
        let (scheme, parameters) = Self.parse(challenge: challenge)
        switch scheme {
        case "basic":
            guard let credentials else {
                throw RegistryError(
                    .input, "\(registry) asks for a user name and password; none for it in \(RegistryCredentials.configFile())")
            }
            if basic { throw RegistryError(.input, "\(registry) refused \(credentials)") }
            basic = true
        case "bearer":
            guard let realm = parameters["realm"], var components = URLComponents(string: realm),
                components.scheme == "https" || (components.scheme == "http" && transfer.allowPlainHTTP)
            else {
                throw RegistryError(.input, "\(registry) names no usable token realm in its challenge: \(quote(challenge))")
            }
            var items = components.queryItems ?? []
            if let service = parameters["service"] { items.append(URLQueryItem(name: "service", value: service)) }
            for scope in scopes { items.append(URLQueryItem(name: "scope", value: scope)) }
            components.queryItems = items
            var request = HTTPRequest(method: "GET", url: components.string ?? realm)
            if let credentials { request.headers.append("Authorization: " + credentials.basicAuthorization) }
            let response = try withRetries("\(registry) token") { try perform(request, sink: nil, sent: nil) }
            if response.status == 401 || response.status == 403 {
                throw RegistryError(.input, "\(registry)'s token service refused \(credentials?.description ?? "anonymous access")")
            }
            try expect(response, [200], "get a token from \(quote(realm))")
            struct Token: Decodable {
                var token: String?
                var access_token: String?
            }
            // The token goes into a header line of each request: no control character may end it.
            guard let token = try? JSONDecoder().decode(Token.self, from: response.body), let value = token.token ?? token.access_token,
                !value.isEmpty, value.unicodeScalars.allSatisfy({ (0x21...0x7E).contains($0.value) })
            else { throw RegistryError(.input, "\(quote(realm)) sent no token") }
            tokens[scopes.joined(separator: " ")] = value
        default:
            throw RegistryError(.input, "\(registry) asks for authentication it does not name: \(quote(challenge))")
        }
    }

    /// `Bearer realm="…",service="…"` as a lowercased scheme and its parameters.
    static func parse(challenge: String) -> (scheme: String, parameters: [String: String]) {
        let text = challenge.trimmingCharacters(in: .whitespaces)
        let scheme = String(text.prefix { $0 != " " }).lowercased()
        var parameters: [String: String] = [:]
        var rest = Substring(text.dropFirst(scheme.count))
        while let equals = rest.firstIndex(of: "=") {
            let name = rest[..<equals].trimmingCharacters(in: CharacterSet(charactersIn: " ,")).lowercased()
            rest = rest[rest.index(after: equals)...]
            var value = ""
            if rest.first == "\"" {
                rest = rest.dropFirst()
                while let character = rest.first, character != "\"" {
                    if character == "\\", rest.count > 1 { rest = rest.dropFirst() }
                    value.append(rest.first!)
                    rest = rest.dropFirst()
                }
                rest = rest.dropFirst()
            } else {
                value = String(rest.prefix { $0 != "," })
                rest = rest.dropFirst(value.count)
            }
            parameters[name] = value
        }
        return (scheme, parameters)
    }

    private func location(_ response: HTTPResponse, _ what: String) throws -> String {
        guard let location = response.header("location"), !location.isEmpty else {
            throw RegistryError(.system, "\(what): the registry gave no upload location")
        }
        if location.hasPrefix("/") { return base + location }
        return location
    }

    private func expect(_ response: HTTPResponse, _ statuses: [Int], _ what: String) throws {
        guard !statuses.contains(response.status) else { return }
        let code: ErrorCode = [401, 403, 404].contains(response.status) ? .input : .system
        throw RegistryError(code, "\(registry): \(what): the registry answered \(response.status)\(Self.errorSummary(response))")
    }

    /// The distribution spec's error body (`{"errors":[{"code":…,"message":…}]}`), shortened.
    static func errorSummary(_ response: HTTPResponse) -> String {
        struct Body: Decodable {
            struct Entry: Decodable {
                var code: String?
                var message: String?
            }
            var errors: [Entry]?
        }
        guard let body = try? JSONDecoder().decode(Body.self, from: response.body), let first = body.errors?.first
        else { return "" }
        return " (" + [first.code, first.message].compactMap { $0 }.joined(separator: ": ").prefix(200) + ")"
    }
}

/// A failure worth another try.
private struct Transient: Error {
    let reason: String
}
