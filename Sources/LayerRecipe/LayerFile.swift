import Alpm

/// One layer file, parsed and checked on its own (its parent is checked by `Recipe`).
public struct LayerFile: Sendable, Hashable {
    /// The file name without `.yaml`: the layer's name, and the name of its ref in the store.
    public var name: String
    /// The absolute path of the file.
    public var path: String
    /// `scratch`, the parent layer file's path, or an image in a registry.
    public var parent: Parent
    public var description: String?
    /// The package architecture; only the root layer names it.
    public var arch: Located<String>?
    /// Repositories this layer declares, in order; children add theirs to those they inherit
    /// (`Recipe.repositories(for:)`).
    public var repos: [RepoSpec]
    public var packages: [Located<String>]
    public var remove: [Located<String>]
    public var files: [FileSpec]
    public var run: [Located<String>]
    /// `noextract:`, pacman.conf's `NoExtract`: files of packages never extracted, as patterns
    /// without the leading `/`. Children inherit them, and theirs come after.
    public var noExtract: [Located<String>] = []
    /// Environment for `run:` commands, sorted by name.
    public var env: [EnvVariable]
    /// The initramfs generator whose layerctl hook the image gets (`boot:`); children inherit it.
    public var boot: Located<BootFlavour>?
    /// `network: true`: this layer's `run:` commands have the host's network. Without it a build
    /// has a network namespace of its own with loopback only. Children do not inherit it.
    public var network: Located<Bool>? = nil
    /// `upgrade: true`: this layer upgrades every package the layers below installed to what its
    /// repositories hold, as `pacman -Syu` does, besides its own. Children do not inherit it.
    public var upgrade: Located<Bool>? = nil
    /// `ignore:`, pacman.conf's `IgnorePkg`: names or shell patterns of installed packages that
    /// `upgrade: true` leaves as they are. Children do not inherit it, as they do not `upgrade:`.
    public var ignore: [Located<String>] = []
    /// Where `from:` was written, or the top of the file when it was not.
    public var fromLocation: FileLocation

    public enum Parent: Sendable, Hashable {
        case scratch
        case file(String)
        /// `from: REGISTRY/REPOSITORY[:TAG|@DIGEST]`: an image pulled and built upon.
        case image(String)
    }

    public var isRoot: Bool { parent == .scratch }

    /// The first layer file of its chain: on scratch, or on an image.
    public var isBase: Bool {
        if case .file = parent { return false }
        return true
    }

    /// The place of the first `packages:` or `remove:` item that is one of `names`, the packages
    /// libalpm names: `perl` is not blamed for `perl-xml`, and `core/perl` is `perl`.
    public func location(ofPackage names: [String]) -> FileLocation? {
        (packages + remove).first { item in
            names.contains(item.value) || names.contains(TransactionRequest.packageName(of: item.value))
        }?.location
    }
}

/// A repository as a layer file declares it: pacman's name, servers and `siglevel`.
public struct RepoSpec: Sendable, Hashable {
    public var name: String
    /// Absolute URLs: relative paths in the file are made `file://` URLs against its folder.
    public var servers: [String]
    /// The mirrorlist whose servers come after `servers`.
    public var mirrorlist: Mirrorlist? = nil
    public var siglevel: String?
    /// An Arch Linux Archive day (`YYYY-MM-DD`) that replaces the servers.
    public var snapshot: String?
    public var location: FileLocation
    /// Where the `snapshot:` date is written.
    public var snapshotLocation: FileLocation? = nil
    /// Written with its name alone (and perhaps a `siglevel`): the repository of that name a layer
    /// below declares, in this place of the order (`Recipe.repositories(for:)` puts it there).
    public var inherits = false

    /// The servers libalpm tries, in order: `servers:`, then the mirrorlist's.
    public var allServers: [String] { servers + (mirrorlist?.servers ?? []) }
}

/// A file a layer writes after its packages are installed.
public struct FileSpec: Sendable, Hashable {
    public var path: String
    public var content: Content
    /// Permission bits; 0644 when the file does not say (0777 for a link, which has no bits of its own).
    public var mode: UInt32
    /// `user:group` as names or numbers; `root:root` when the file does not say.
    public var owner: String
    public var location: FileLocation

    public enum Content: Sendable, Hashable {
        case inline(String)
        /// The absolute path of the source file, inside the layer file's folder tree.
        case source(String)
        /// A symbolic link to this target, as `ln -s` makes it: never followed by the build.
        case link(String)
        /// The absolute path of a source folder, inside the layer file's folder tree, whose tree
        /// is copied to `path`.
        case tree(String)
    }
}

public struct EnvVariable: Sendable, Hashable, Codable {
    public var name: String
    public var value: String

    package init(name: String, value: String) {
        self.name = name
        self.value = value
    }
}
