import Foundation
import Alpm
import LayerRecipe

/// Everything the builder child needs to build one layer, handed over as JSON.
public struct BuildJob: Codable, Sendable {
    public struct Repo: Codable, Sendable {
        var name: String
        /// Expanded, absolute URLs.
        var servers: [String]
    }

    public struct File: Codable, Sendable {
        var path: String
        var mode: UInt32
        var owner: String
        /// The bytes to write: inline content, or the source file as the key was made from it.
        var contents: Data
        /// For a `link:`, its target: a symlink is made instead of a file, and `contents` is empty.
        var link: String?
        /// For a folder of a `source:` tree: made when missing, with `mode` and `owner`, and left as
        /// it is when there; `contents` is empty.
        var folder: Bool?
        var location: String
    }

    public struct Command: Codable, Sendable {
        var command: String
        var location: String
    }

    var layerName: String
    /// `tmp/build-…`: holds `layer/tree` (the overlay upper), `work`, `merged` and `pacman.log`.
    var buildDirectory: String
    /// The parents' trees, bottom first.
    var lowerTrees: [String]
    var arch: String
    var repos: [Repo]
    /// A private copy of the sync databases, so a refresh elsewhere cannot change this build.
    var syncDirectory: String
    /// The packages of the transaction, checked, before the build starts: hard links into the
    /// store's package cache, in the build's folder, and no other package; the build sees it read-only.
    var packageCache: String
    var install: [String]
    var remove: [String]
    /// `upgrade: true`: the transaction upgrades every package below too (`pacman -Syu`).
    var sysupgrade: Bool?
    /// `ignore:`: what the upgrade leaves as it is (pacman's `IgnorePkg`).
    var ignore: [String]?
    /// The `noextract:` patterns of the layer and its ancestors, in order (pacman's `NoExtract`).
    var noExtract: [String]?
    /// What the key was computed from: the transaction must install exactly these.
    var expected: [PackageFile]
    var files: [File]
    var run: [Command]
    var env: [EnvVariable]
    var sourceDateEpoch: Int64
    /// `network: true`: `run:` has the host's network. Otherwise the build has a network
    /// namespace of its own, with loopback only.
    var network: Bool
    /// `boot:` as the layer inherits it, and where it was written.
    var boot: BootFlavour?
    var bootLocation: String?
    /// Time the `run:` steps apart and report when each started, for `writers` (`build --check`).
    var separateSteps: Bool?
    /// The folders of the cgroup the builder child moves into before it starts anything
    /// (`BuildCgroup`).
    var cgroups: [String]?
    /// The size of the build's tmpfs folders: its memory limit, so that `df` tells what a step may
    /// write there.
    var memoryLimit: Int64?

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
    var root: BuildRoot { BuildRoot(directory: buildDirectory, lowerTrees: lowerTrees) }
    /// The new layer's tree: the root's upper folder.
    var upperDirectory: String { root.upper }
    /// libalpm's log of this build, outside the tree; appended to the store's log afterwards.
    var pacmanLog: String { buildDirectory + "/pacman.log" }
}
