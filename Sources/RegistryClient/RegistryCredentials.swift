import Foundation
import LayerSupport

/// A user name and password for one registry, from a Docker config file. Never printed: its
/// description names the user and the file only.
public struct RegistryCredentials: Sendable, CustomStringConvertible {
    public let username: String
    let password: String
    /// The file they came from.
    public let source: String

    public var description: String { "user \(username) from \(source)" }

    /// `Basic …`, as HTTP sends it.
    var basicAuthorization: String { "Basic " + Data((username + ":" + password).utf8).base64EncodedString() }

    public init(username: String, password: String, source: String) {
        self.username = username
        self.password = password
        self.source = source
    }

    /// The file credentials are read from: `REGISTRY_AUTH_FILE` (as podman and skopeo name it),
    /// else `$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`; under sudo, where that is
    /// root's and there is none, the one in the home of the user who ran sudo (`docker login` as
    /// that user, then `sudo layerctl push`, was refused).
    public static func configFile(environment: [String: String] = ProcessInfo.processInfo.environment) -> String {
        if let file = environment["REGISTRY_AUTH_FILE"], !file.isEmpty { return file }
        if let folder = environment["DOCKER_CONFIG"], !folder.isEmpty { return folder + "/config.json" }
        let own = (environment["HOME"] ?? NSHomeDirectory()) + "/.docker/config.json"
        if !FileSystem.exists(own), let user = environment["SUDO_USER"], !user.isEmpty, user != "root", let folder = passwdHome(user) {
            let theirs = folder + "/.docker/config.json"
            if FileSystem.exists(theirs) { return theirs }
        }
        return own
    }

    /// The home folder /etc/passwd gives `user`.
    private static func passwdHome(_ user: String) -> String? {
        guard let entry = getpwnam(user), let directory = entry.pointee.pw_dir else { return nil }
        return String(cString: directory)
    }

    /// The credentials `file` keeps for one of `keys` (its `auths` entries: `auth`, the base64 of
    /// `user:password`, or `username` and `password`); nil when there are none or no file.
    public static func lookUp(_ keys: [String], in file: String) throws -> RegistryCredentials? {
        guard FileSystem.exists(file) else { return nil }
        let data: Data
        do { data = try FileSystem.readRegularFile(file) } catch {
            throw RegistryError(.input, "read the registry credentials in \(file) failed", cause: error)
        }
        struct Config: Decodable {
            struct Entry: Decodable {
                var auth: String?
                var username: String?
                var password: String?
            }
            var auths: [String: Entry]?
        }
        guard let config = try? JSONDecoder().decode(Config.self, from: data) else {
            throw RegistryError(.input, "\(file) is not a Docker config file (JSON with \"auths\")")
        }
        let auths = config.auths ?? [:]
        for key in keys {
            let entry = auths[key] ?? auths["https://" + key] ?? auths["http://" + key]
            guard let entry else { continue }
            if let username = entry.username, let password = entry.password {
                return RegistryCredentials(username: username, password: password, source: file)
            }
            if let auth = entry.auth {
                guard let decoded = Data(base64Encoded: auth), let text = String(data: decoded, encoding: .utf8),
                    let colon = text.firstIndex(of: ":")
                else {
                    throw RegistryError(.input, "\(file): the \"auth\" of \(key) is not base64 of user:password")
                }
                return RegistryCredentials(
                    username: String(text[..<colon]), password: String(text[text.index(after: colon)...]), source: file)
            }
        }
        return nil
    }
}
