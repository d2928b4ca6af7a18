import Foundation
import LayerDiff
import LayerStore
import LayerSupport

/// What a stack of layers holds, as a bill of materials tells it: its layers, bottom first, and
/// every package installed at the top, with the layer that installed it and, where the store
/// knows it, the package file it came from. Read from the store alone: nothing is built or fetched.
public struct StackInventory: Sendable {
    public struct Layer: Sendable {
        public var name: String
        public var key: String
        public var parent: String?
        /// Where a pulled layer came from; nil for a layer built here.
        public var pulledFrom: String?
    }

    public struct Package: Sendable {
        public var name: String
        public var version: String
        public var about: PackageDatabase.About
        /// The package file, when the record of the layer that installed it names it.
        public var repository: String?
        public var filename: String?
        public var sha256: String?
        /// The key of the layer that installed this version.
        public var layer: String
    }

    /// Bottom first.
    public var layers: [Layer]
    /// Sorted by name.
    public var packages: [Package]
    /// The top layer's SOURCE_DATE_EPOCH: the document's time, so the same stack gives the same bytes.
    public var epoch: Int64

    public var top: Layer { layers[layers.count - 1] }

    /// The stack under `nameOrKey` (a ref, a key or a unique key prefix) in `store`.
    public static func read(_ nameOrKey: String, store: Store) throws -> StackInventory {
        let side = try DiffSide.open(nameOrKey, store: { store })
        let database = try side.packages(files: false)
        let lock = try store.lock(.shared)
        defer { lock.unlock() }
        let keys = try store.chain(try store.resolve(nameOrKey))
        let records = try keys.map(store.record)
        let layers = records.map { Layer(name: $0.name, key: $0.key, parent: $0.parent, pulledFrom: $0.origin?.reference) }
        let packages = database.packages.values.sorted { $0.name < $1.name }.map { installed in
            // The topmost layer whose transaction installed this version, else the topmost whose
            // tree holds its database entry (a layer pulled from an image that says no more).
            let record = records.last { $0.added.contains { $0.name == installed.name && $0.version == installed.version } }
            let file = record?.added.first { $0.name == installed.name && $0.version == installed.version }
            let holder = record?.key
                ?? keys.last { FileSystem.exists(store.tree($0) + PackageDatabase.directory + "/" + installed.entry + "/desc") }
                ?? keys[keys.count - 1]
            return Package(
                name: installed.name, version: installed.version, about: installed.about, repository: file?.repository,
                filename: file?.filename, sha256: file?.sha256, layer: holder)
        }
        return StackInventory(layers: layers, packages: packages, epoch: records[records.count - 1].sourceDateEpoch)
    }

    /// RFC 3339 in UTC, as both formats write times.
    var created: String {
        var seconds = time_t(epoch)
        var parts = tm()
        gmtime_r(&seconds, &parts)
        return String(
            format: "%04d-%02d-%02dT%02d:%02d:%02dZ", Int(parts.tm_year) + 1900, Int(parts.tm_mon) + 1, Int(parts.tm_mday),
            Int(parts.tm_hour), Int(parts.tm_min), Int(parts.tm_sec))
    }

    /// The package URL of a pacman package (`pkg:alpm/arch/NAME@VERSION?arch=ARCH`).
    static func purl(_ package: Package) -> String {
        let name = package.name.addingPercentEncoding(withAllowedCharacters: .alphanumerics.union(CharacterSet(charactersIn: "-._~"))) ?? package.name
        let version = package.version.addingPercentEncoding(withAllowedCharacters: .alphanumerics.union(CharacterSet(charactersIn: "-._~"))) ?? package.version
        return "pkg:alpm/arch/\(name)@\(version)" + (package.about.arch.map { "?arch=\($0)" } ?? "")
    }

    /// Canonical JSON: keys sorted, slashes unescaped, indented unless `compact` (one line).
    static func encode<T: Encodable>(_ value: T, compact: Bool) throws -> Data {
        let encoder = JSONEncoder()
        encoder.outputFormatting = compact ? [.sortedKeys, .withoutEscapingSlashes] : [.sortedKeys, .prettyPrinted, .withoutEscapingSlashes]
        return try encoder.encode(value) + Data("\n".utf8)
    }
}
