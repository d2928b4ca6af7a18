import Alpm

/// pacman's local database (`var/lib/pacman/local/NAME-VERSION/{desc,files}`) as one side of a
/// comparison holds it, read through that side's own file access: a layer stack, an image, a folder.
public struct PackageDatabase: Sendable {
    public struct Package: Sendable, Equatable {
        public var name: String
        public var version: String
        /// Installed as a dependency (%REASON% 1) rather than explicitly.
        public var dependency: Bool
        /// The paths it owns, as `files` lists them: relative, directories ending in `/`.
        public var files: [String]
        /// Its folder in the database, `NAME-VERSION`.
        public var entry: String
        /// What its desc says of it besides: %DESC%, %URL%, %LICENSE%, %PACKAGER% and %ARCH%.
        public var about = About()
    }

    public struct About: Sendable, Equatable {
        public var description: String?
        public var url: String?
        public var licenses: [String] = []
        public var packager: String?
        public var arch: String?
    }

    public static let directory = "/var/lib/pacman/local"

    public var packages: [String: Package] = [:]

    public init() {}

    /// Reads the database; `list` gives a directory's names (nil when there is none), `read` a
    /// file's bytes (nil when there is none). With `files`, each package's file list is read too.
    public init(list: (String) throws -> [String]?, read: (String) throws -> [UInt8]?, files: Bool) throws {
        for entry in try list(Self.directory) ?? [] {
            guard let desc = try read("\(Self.directory)/\(entry)/desc") else { continue }
            let fields = Self.fields(String(decoding: desc, as: UTF8.self))
            guard let name = fields["NAME"]?.first, let version = fields["VERSION"]?.first else { continue }
            var owned: [String] = []
            if files, let list = try read("\(Self.directory)/\(entry)/files") {
                owned = Self.fields(String(decoding: list, as: UTF8.self))["FILES"] ?? []
            }
            packages[name] = Package(
                name: name, version: version, dependency: fields["REASON"]?.first == "1", files: owned, entry: entry,
                about: About(
                    description: fields["DESC"]?.first, url: fields["URL"]?.first, licenses: fields["LICENSE"] ?? [],
                    packager: fields["PACKAGER"]?.first, arch: fields["ARCH"]?.first))
        }
    }

    /// Each owned path ("/usr/bin/x", directories without the trailing slash) and the first package,
    /// by name, that lists it. A package's own folder in the database is its too.
    public func owners() -> [String: String] {
        var owners: [String: String] = [:]
        for name in packages.keys.sorted() {
            if let entry = packages[name]?.entry {
                let folder = "\(Self.directory)/\(entry)"
                owners[folder] = name
                for file in ["desc", "files", "mtree", "install", "changelog"] { owners[folder + "/" + file] = name }
            }
            for file in packages[name]?.files ?? [] {
                var path = "/" + file
                if path.count > 1 && path.hasSuffix("/") { path.removeLast() }
                if owners[path] == nil { owners[path] = name }
            }
        }
        return owners
    }

    /// The `%KEY%` sections of a desc or files entry, each with its lines.
    static func fields(_ text: String) -> [String: [String]] {
        var fields: [String: [String]] = [:]
        var key: String?
        for line in text.split(separator: "\n", omittingEmptySubsequences: false) {
            if line.hasPrefix("%") && line.hasSuffix("%") && line.count > 2 {
                let name = String(line.dropFirst().dropLast())
                key = name
                fields[name, default: []] = []
            } else if line.isEmpty {
                key = nil
            } else if let current = key {
                fields[current, default: []].append(String(line))
            }
        }
        return fields
    }
}

/// What happened to one package between two sides: added, removed, upgraded or downgraded (in
/// libalpm's version order, epochs included), or moved between explicit and dependency.
public struct PackageChange: Codable, Sendable, Equatable {
    public enum Kind: String, Codable, Sendable, CaseIterable { case added, removed, upgraded, downgraded, reason }

    public var name: String
    public var change: Kind
    public var before: String?
    public var after: String?

    public static func between(_ old: PackageDatabase, _ new: PackageDatabase) -> [PackageChange] {
        var changes: [PackageChange] = []
        for name in Set(old.packages.keys).union(new.packages.keys).sorted() {
            switch (old.packages[name], new.packages[name]) {
            case (nil, let now?):
                changes.append(PackageChange(name: name, change: .added, before: nil, after: now.version))
            case (let was?, nil):
                changes.append(PackageChange(name: name, change: .removed, before: was.version, after: nil))
            case (let was?, let now?):
                let order = AlpmHandle.compareVersions(was.version, now.version)
                if order != 0 {
                    changes.append(
                        PackageChange(
                            name: name, change: order < 0 ? .upgraded : .downgraded, before: was.version,
                            after: now.version))
                } else if was.dependency != now.dependency {
                    changes.append(
                        PackageChange(
                            name: name, change: .reason, before: was.dependency ? "dependency" : "explicit",
                            after: now.dependency ? "dependency" : "explicit"))
                }
            case (nil, nil): break
            }
        }
        return changes
    }
}
