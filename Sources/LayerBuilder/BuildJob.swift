import Alpm
import LayerRecipe

/// Everything the builder child needs to build one layer, handed over as JSON.
public struct BuildJob: Codable, Sendable {
    public struct Repo: Codable, Sendable {
        var name: String
        /// Expanded, absolute URLs.
        var servers: [String]
        var signatureLevel: Int32
        /// Where the layer files declare it (`file:line:column`), for messages about it.
        var location: String
    }

    public struct File: Codable, Sendable {
        var path: String
        var mode: UInt32
        var owner: String
        var inline: String?
        var source: String?
        var location: String
    }

    public struct Command: Codable, Sendable {
        var command: String
        var location: String
    }

    var layerName: String
    /// `tmp/build-…`: holds `layer/tree` (the overlay upper), `work`, `merged` and `empty`.
    var buildDirectory: String
    /// The parents' trees, bottom first.
    var lowerTrees: [String]
    var arch: String
    var repos: [Repo]
    /// A private copy of the sync databases, so a refresh elsewhere cannot change this build.
    var syncDirectory: String
    var packageCache: String
    var pacmanLog: String
    var gpgDirectory: String
    var install: [String]
    var remove: [String]
    /// What the key was computed from: the transaction must install exactly these.
    var expected: [PackageFile]
    var files: [File]
    var run: [Command]
    var env: [EnvVariable]
    var sourceDateEpoch: Int64
    var isolateNetwork: Bool
    /// `boot:` as the layer inherits it, and where it was written.
    var boot: BootFlavour?
    var bootLocation: String?

    /// What `run:` commands and package scriptlets see: a fixed PATH, HOME, LANG and TERM, the
    /// epoch, the layer's name and the layer file's `env:`; never the environment of whoever runs
    /// layerctl.
    var commandEnvironment: [String: String] {
        var environment = [
            "PATH": "/usr/local/sbin:/usr/local/bin:/usr/bin:/usr/sbin:/bin:/sbin", "HOME": "/root", "LANG": "C.UTF-8",
            "TERM": "dumb", "SOURCE_DATE_EPOCH": String(sourceDateEpoch), "LAYERCTL_LAYER": layerName,
        ]
        for variable in env { environment[variable.name] = variable.value }
        return environment
    }

    /// The root the layer is built in.
    var root: BuildRoot { BuildRoot(directory: buildDirectory, lowerTrees: lowerTrees, syncDirectory: syncDirectory) }
    /// The new layer's tree: the root's upper folder.
    var upperDirectory: String { root.upper }
}
