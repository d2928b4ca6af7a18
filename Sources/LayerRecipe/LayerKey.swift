import Alpm
import Crypto
import Foundation
import LayerSupport

/// The parsed content of a layer that decides its tree, in a canonical form: comments, key order,
/// whitespace, the order of `packages:` and of `files:` do not count; the order of `run:` does.
/// Descriptions and repository servers are left out: they change no byte of the tree.
public struct LayerSpec: Codable, Sendable, Hashable {
    /// Bumped whenever what the key is made of, or its encoding, changes. A builder that would make
    /// a different tree from the same inputs bumps `BuilderRules.version` (in LayerBuilder), kept
    /// in each layer's record, instead: keys, and the locks that name them, stay.
    public static let formatVersion = 1

    public var format = LayerSpec.formatVersion
    public var arch: String
    public var packages: [String]
    public var remove: [String]
    public var files: [FileEntry]
    public var run: [String]
    public var env: [EnvVariable]
    public var sourceDateEpoch: Int64
    /// `boot:` and the digest of the hook files it installs; absent (and so not in the key at all)
    /// for layers without boot support.
    public var boot: String?
    public var bootFiles: String?
    /// True when `run:` had the host's network (`network: true`); absent otherwise, so the keys of
    /// layers without it are what they were before it existed.
    public var network: Bool?
    /// The image a first layer is built upon (`from: REF`), with the digest its tag resolved to;
    /// absent for every other layer, whose parent key says all.
    public var image: String?
    /// The `noextract:` patterns the layer's packages are installed under, its ancestors' first, in
    /// order (it decides); absent when there are none, so other layers' keys are what they were.
    public var noExtract: [String]?
    /// True when the layer upgrades the packages below (`upgrade: true`); absent otherwise.
    public var upgrade: Bool?
    /// The names and patterns of packages the upgrade leaves as they are (`ignore:`), sorted; absent
    /// when there are none.
    public var ignore: [String]?

    public init(
        arch: String, packages: [String], remove: [String], files: [FileEntry], run: [String], env: [EnvVariable],
        sourceDateEpoch: Int64, boot: (flavour: BootFlavour, filesDigest: String)? = nil, network: Bool = false,
        noExtract: [String] = [], upgrade: Bool = false, ignore: [String] = []
    ) {
        self.network = network ? true : nil
        self.upgrade = upgrade ? true : nil
        self.ignore = ignore.isEmpty ? nil : ignore.sorted()
        self.noExtract = noExtract.isEmpty ? nil : noExtract
        self.boot = boot?.flavour.rawValue
        self.bootFiles = boot?.filesDigest
        self.arch = arch
        self.packages = packages
        self.remove = remove
        self.files = files
        self.run = run
        self.env = env
        self.sourceDateEpoch = sourceDateEpoch
    }

    public struct FileEntry: Codable, Sendable, Hashable {
        public var path: String
        public var mode: UInt32
        public var owner: String
        /// sha256 of the bytes written: the inline content or the source file (for a link, its target).
        public var sha256: String
        /// The target of a `link:`; absent for a file, so the keys of layers without links are what
        /// they were before links existed.
        public var link: String?
        /// True for a folder `source:`, whose tree `sha256` is the digest of; absent for a file.
        public var tree: Bool?

        package init(path: String, mode: UInt32, owner: String, sha256: String, link: String? = nil, tree: Bool = false) {
            self.path = path
            self.mode = mode
            self.owner = owner
            self.sha256 = sha256
            self.link = link
            self.tree = tree ? true : nil
        }
    }

    /// The digest of this spec alone.
    public var digest: String { Digest.sha256(LayerKey.canonical(self)) }
}

/// A package file as the key sees it: what the transaction resolved to.
public struct ResolvedPackage: Codable, Sendable, Hashable {
    public var name: String
    public var version: String
    public var sha256: String

    public init(_ file: PackageFile) {
        name = file.name
        version = file.version
        sha256 = file.sha256
    }
}

/// `key = sha256(canonical encoding of: format version, parent key or "scratch", the spec, and
/// the exact package files its transaction resolves to)`.
public enum LayerKey {
    struct Input: Encodable {
        var parent: String
        var spec: LayerSpec
        var packageFiles: [ResolvedPackage]
    }

    public static func compute(parent: String?, spec: LayerSpec, resolved: [PackageFile]) -> String {
        let input = Input(
            parent: parent ?? "scratch", spec: spec,
            packageFiles: resolved.map(ResolvedPackage.init).sorted { $0.name < $1.name })
        return Digest.sha256(canonical(input))
    }

    static func canonical<T: Encodable>(_ value: T) -> Data {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        // Every field is a string, number or array of them: encoding cannot fail.
        return (try? encoder.encode(value)) ?? Data()
    }
}
