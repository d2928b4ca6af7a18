import Foundation
import Glibc
import LayerSupport
import Testing

/// Debian's `docker-registry` (the `distribution` server) on a free port of 127.0.0.1, with a
/// configuration of our own (the packaged one listens on every interface), its storage in a
/// temporary folder, and optionally htpasswd (basic) auth. Stopped by `stop()`.
final class RegistryServer {
    static let binary = "/usr/bin/docker-registry"
    static var available: Bool { FileManager.default.isExecutableFile(atPath: binary) }
    static let unavailableReason: Comment = "needs root, the demo repository and docker-registry (scripts/install-deps.sh)"

    let folder: String
    let port: Int
    var host: String { "127.0.0.1:\(port)" }
    /// Where the registry keeps blobs: `blobPath(digest)/data` is a blob's bytes.
    var storage: String { folder + "/data/docker/registry/v2" }
    private let process = Process()

    /// `users`: name → password, for htpasswd auth; `tokens`: a token endpoint to send clients to
    /// (bearer auth, as Docker Hub's); neither means no auth.
    /// `tls`: HTTPS with a certificate for 127.0.0.1 of its own, `certificate`.
    init(users: [String: String] = [:], tokens: TokenServer? = nil, tls: Bool = false) throws {
        folder = try Harness.temporaryDirectory("registry")
        port = try Self.freePort()
        var auth = ""
        if !users.isEmpty {
            var lines = ""
            for (user, password) in users.sorted(by: { $0.key < $1.key }) {
                let hashed = try KernelMount.run("/usr/bin/htpasswd", ["-Bbn", user, password])
                guard hashed.status == 0 else { throw RegistryServerError("htpasswd failed: \(hashed.output)") }
                lines += hashed.output.trimmingCharacters(in: .whitespacesAndNewlines) + "\n"
            }
            try lines.write(toFile: folder + "/htpasswd", atomically: false, encoding: .utf8)
            auth = "auth:\n  htpasswd:\n    realm: layerctl-tests\n    path: \(folder)/htpasswd\n"
        }
        if let tokens {
            auth = """
                auth:
                  token:
                    realm: http://\(tokens.host)/token
                    service: layerctl-tests
                    issuer: layerctl-test-issuer
                    rootcertbundle: \(tokens.folder)/cert.pem

                """
        }
        var https = ""
        if tls {
            let made = try KernelMount.run(
                "/usr/bin/openssl",
                [
                    "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1",
                    "-keyout", folder + "/key.pem", "-out", folder + "/cert.pem", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1",
                ])
            guard made.status == 0 else { throw RegistryServerError("openssl req failed: \(made.output)") }
            https = "  tls:\n    certificate: \(folder)/cert.pem\n    key: \(folder)/key.pem\n"
        }
        let config = """
            version: 0.1
            log:
              level: error
            storage:
              filesystem:
                rootdirectory: \(folder)/data
              delete:
                enabled: true
            http:
              addr: 127.0.0.1:\(port)
            \(https)\(auth)
            """
        try config.write(toFile: folder + "/config.yml", atomically: false, encoding: .utf8)
        process.executableURL = URL(fileURLWithPath: Self.binary)
        process.currentDirectoryURL = URL(fileURLWithPath: "/")
        process.arguments = ["serve", folder + "/config.yml"]
        process.standardOutput = FileHandle(forWritingAtPath: "/dev/null")
        _ = FileManager.default.createFile(atPath: folder + "/log", contents: nil)
        process.standardError = FileHandle(forWritingAtPath: folder + "/log")
        try process.run()
        try waitUntilServing()
    }

    deinit { stop() }

    func stop() {
        guard process.isRunning else { return }
        process.terminate()
        process.waitUntilExit()
    }

    /// The certificate it serves HTTPS with.
    var certificate: String { folder + "/cert.pem" }

    func blobPath(_ digest: String) -> String {
        let hex = String(digest.dropFirst("sha256:".count))
        return "\(storage)/blobs/sha256/\(hex.prefix(2))/\(hex)"
    }

    private func waitUntilServing() throws {
        for _ in 0..<100 {
            let socket = Glibc.socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
            defer { close(socket) }
            var address = sockaddr_in()
            address.sin_family = sa_family_t(AF_INET)
            address.sin_port = in_port_t(UInt16(port).bigEndian)
            address.sin_addr.s_addr = inet_addr("127.0.0.1")
            let connected = withUnsafePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(socket, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
            }
            if connected == 0 { return }
            guard process.isRunning else { break }
            usleep(50_000)
        }
        let log = (try? String(contentsOfFile: folder + "/log", encoding: .utf8)) ?? ""
        throw RegistryServerError("docker-registry did not start on \(host): \(log)")
    }

    /// A port no one listens on now: the kernel's pick for a socket bound to port 0.
    static func freePort() throws -> Int {
        let socket = Glibc.socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(socket) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(socket, $0, length) == 0 && getsockname(socket, $0, &length) == 0
            }
        }
        guard bound else { throw RegistryServerError("no free port: \(String(cString: strerror(errno)))") }
        return Int(UInt16(bigEndian: address.sin_port))
    }
}

struct RegistryServerError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

/// One of scripts/'s Python helpers, started with its `--port-file` (or `--folder`) in a folder of
/// its own: it runs until `stop()`, a SIGKILL (the test process blocks SIGTERM, its children
/// inherit the mask, and Python, unlike Go, does not unblock it).
final class PythonHelper {
    let folder: String
    let port: Int
    private let process = Process()

    /// Runs `scripts/SCRIPT ARGUMENTS` (`arguments` given the folder) and waits for `FOLDER/port`.
    init(_ script: String, folderName: String, arguments: (String) -> [String]) throws {
        folder = try Harness.temporaryDirectory(folderName)
        process.executableURL = URL(fileURLWithPath: "/usr/bin/python3")
        process.currentDirectoryURL = URL(fileURLWithPath: "/")
        process.arguments = [Harness.packageRoot + "/scripts/" + script] + arguments(folder)
        process.standardOutput = FileHandle(forWritingAtPath: "/dev/null")
        _ = FileManager.default.createFile(atPath: folder + "/log", contents: nil)
        process.standardError = FileHandle(forWritingAtPath: folder + "/log")
        try process.run()
        for _ in 0..<200 {
            if let text = try? String(contentsOfFile: folder + "/port", encoding: .utf8), let port = Int(text) {
                self.port = port
                return
            }
            guard process.isRunning else { break }
            usleep(50_000)
        }
        let log = (try? String(contentsOfFile: folder + "/log", encoding: .utf8)) ?? ""
        throw RegistryServerError("\(script) did not start: \(log)")
    }

    deinit { stop() }

    func stop() {
        guard process.isRunning else { return }
        kill(process.processIdentifier, SIGKILL)
        process.waitUntilExit()
    }
}

/// scripts/registry-proxy.py in front of a registry: counts body bytes both ways, and makes faults
/// (500s, slow bodies). Stopped by `stop()`, at once, as a registry that dies is.
final class RegistryProxy {
    private let helper: PythonHelper
    var port: Int { helper.port }
    var host: String { "127.0.0.1:\(port)" }

    struct Stats: Decodable {
        var requests: Int
        var bytesUp: Int64
        var bytesDown: Int64
        var failed: Int
    }

    init(upstream: String, fail: Int = 0, rate: Int = 0, match: String = "/blobs/", port: Int = 0) throws {
        helper = try PythonHelper("registry-proxy.py", folderName: "proxy") { folder in
            [
                "--upstream", upstream, "--port-file", folder + "/port", "--stats", folder + "/stats.json",
                "--fail", String(fail), "--rate", String(rate), "--match", match, "--port", String(port),
            ]
        }
    }

    func stats() throws -> Stats {
        try JSONDecoder().decode(Stats.self, from: Data(contentsOf: URL(fileURLWithPath: helper.folder + "/stats.json")))
    }

    func stop() { helper.stop() }
}

/// scripts/registry-token.py: the token endpoint of bearer auth. Anonymous clients get pull
/// tokens, `users` pull and push, a wrong password a 401.
final class TokenServer {
    private let helper: PythonHelper
    /// Where it keeps its certificate (`cert.pem`), for the registry's rootcertbundle.
    var folder: String { helper.folder }
    var host: String { "127.0.0.1:\(helper.port)" }
    /// How many tokens it gave.
    var issued: Int { Int((try? String(contentsOfFile: folder + "/issued", encoding: .utf8)) ?? "") ?? 0 }

    init(users: [String: String]) throws {
        helper = try PythonHelper("registry-token.py", folderName: "tokens") { folder in
            ["--folder", folder] + users.map { ["--user", "\($0.key):\($0.value)"] }.joined()
        }
    }

    func stop() { helper.stop() }
}

/// scripts/registry-files.py: a read-only registry that serves a folder's files as they are, with
/// the statuses and headers written beside them, and logs each request (`requests`).
final class FilesRegistry {
    private let helper: PythonHelper
    var folder: String { helper.folder }
    var host: String { "127.0.0.1:\(helper.port)" }

    init() throws {
        helper = try PythonHelper("registry-files.py", folderName: "files-registry") { ["--folder", $0] }
    }

    /// Serves `data` as a blob; returns its digest.
    @discardableResult
    func blob(_ data: Data) throws -> String {
        let digest = "sha256:" + Digest.sha256(data)
        try data.write(to: URL(fileURLWithPath: folder + "/blobs/" + digest))
        return digest
    }

    /// Serves `data` as the manifest `reference`, with `mediaType` as its Content-Type.
    func manifest(_ reference: String, _ data: Data, mediaType: String = "application/vnd.oci.image.manifest.v1+json") throws {
        try data.write(to: URL(fileURLWithPath: folder + "/manifests/" + reference))
        try mediaType.write(toFile: folder + "/manifests/" + reference + ".type", atomically: false, encoding: .utf8)
    }

    /// Serves `text` as `file`'s status, headers or challenge (`suffix`: "status", "headers",
    /// "auth"; `file` relative to the folder, as "manifests/TAG").
    func beside(_ file: String, _ suffix: String, _ text: String) throws {
        try text.write(toFile: folder + "/" + file + "." + suffix, atomically: false, encoding: .utf8)
    }

    /// Each request it answered: method, path and headers.
    func requests() throws -> [(method: String, path: String, headers: [String: String])] {
        let text = (try? String(contentsOfFile: folder + "/requests.log", encoding: .utf8)) ?? ""
        return try text.split(separator: "\n").map { line in
            let object = try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any]
            return (object?["method"] as? String ?? "", object?["path"] as? String ?? "", object?["headers"] as? [String: String] ?? [:])
        }
    }

    func stop() { helper.stop() }
}
