import Foundation
import LayerSupport

/// A layer file and its ancestors, root first: what `layerctl build FILE` builds.
public struct Recipe: Sendable {
    /// The chain from the root layer (`from: scratch`) to the requested layer.
    public let layers: [LayerFile]

    /// The requested layer.
    public var target: LayerFile { layers[layers.count - 1] }

    /// The architecture the root layer names.
    public var arch: String { layers[0].arch?.value ?? "x86_64" }

    /// The image the first layer file is built upon (`from: REF`), as written, and where.
    public var baseImage: Located<String>? {
        guard case .image(let reference) = layers[0].parent else { return nil }
        return Located(reference, at: layers[0].fromLocation)
    }

    /// Reads `path` and follows `from:` to the root, checking every file on the way.
    public static func load(_ path: String) throws -> Recipe {
        let start = URL(fileURLWithPath: path).standardizedFileURL.path
        guard FileManager.default.fileExists(atPath: start) else {
            // `build gaming` or `build gaming.yml` for gaming.yaml.
            let stem = start.hasSuffix(".yml") ? String(start.dropLast(4)) : start
            let meant = stem.hasSuffix(".yaml") || !FileManager.default.fileExists(atPath: stem + ".yaml")
                ? "" : " (did you mean \(quote(FileSystem.split(stem).name + ".yaml"))?)"
            throw LayerFileError("no such layer file" + meant, at: FileLocation(file: path, line: 1, column: 1))
        }
        var chain: [LayerFile] = []
        var current = try LayerFileParser.parse(path: start)
        while true {
            chain.append(current)
            guard case .file(let parentPath) = current.parent else { break }
            if let loop = chain.firstIndex(where: { $0.path == parentPath }) {
                let names = (chain[loop...].map(\.name) + [chain[loop].name]).joined(separator: " → ")
                throw LayerFileError("`from:` makes a cycle: \(names)", at: current.fromLocation)
            }
            // The name is the layer author's: quoted, and no longer than a line.
            let parentName = quote(FileSystem.split(parentPath).name)
            guard FileManager.default.fileExists(atPath: parentPath) else {
                throw LayerFileError(
                    "the parent layer file \(parentName) does not exist in \(FileSystem.parent(of: parentPath))",
                    at: current.fromLocation)
            }
            // A parent that is a symlink out of the folder is not read at all, so nothing of what
            // it points to is printed in an error.
            let folder = URL(fileURLWithPath: FileSystem.parent(of: current.path))
                .resolvingSymlinksInPath().path
            let real = URL(fileURLWithPath: parentPath).resolvingSymlinksInPath().path
            guard FileSystem.parent(of: real) == folder else {
                throw LayerFileError(
                    "the parent layer file \(parentName) is a link out of its folder \(folder)", at: current.fromLocation)
            }
            // A parent that is no file is the child's mistake, at its `from:`; a pipe is not read.
            var st = stat()
            if stat(parentPath, &st) == 0 {
                let kind = st.st_mode & S_IFMT == S_IFDIR ? "a folder" : FileSystem.special(st.st_mode)
                if let kind {
                    throw LayerFileError("the parent layer file \(parentName) is \(kind), not a file", at: current.fromLocation)
                }
            }
            current = try LayerFileParser.parse(path: parentPath)
        }
        let recipe = Recipe(layers: chain.reversed())
        try recipe.checkRepositories()
        return recipe
    }

    /// The `boot:` layer `index` has: its own, or the nearest ancestor's.
    public func boot(for index: Int) -> Located<BootFlavour>? {
        layers[...index].last { $0.boot != nil }?.boot
    }

    /// The `noextract:` patterns layer `index` installs under: its ancestors', then its own, as
    /// pacman reads its `NoExtract` lines (a later pattern decides over an earlier one).
    public func noExtract(for index: Int) -> [String] {
        layers[...index].flatMap { $0.noExtract.map(\.value) }
    }

    /// The repositories layer `index` sees, its ancestors' and its own, in pacman's order: a package
    /// comes from the first repository that holds it. A layer's `repos:` keep the order they are
    /// written in. New ones alone come after those inherited, as sections added at the end of
    /// pacman.conf; a list that names an inherited one again (a new mirror, another `siglevel`)
    /// replaces it and takes its place, so a child puts `core-testing` above `core` by naming both.
    public func repositories(for index: Int) -> [RepoSpec] {
        var repos: [RepoSpec] = []
        for layer in layers[...index] where !layer.repos.isEmpty {
            let own = layer.repos.compactMap { spec in spec.inherits ? Self.placed(spec, inheriting: repos) : spec }
            let named = Set(own.map(\.name))
            guard let first = repos.firstIndex(where: { named.contains($0.name) }) else {
                repos += own
                continue
            }
            let others = { (slice: ArraySlice<RepoSpec>) in slice.filter { !named.contains($0.name) } }
            repos = others(repos[..<first]) + own + others(repos[first...])
        }
        return repos
    }

    /// The inherited repository a name alone (`spec`) places: as declared below, with the `siglevel`
    /// `spec` gives, if it gives one (then its place is where the layer file says so). nil when no
    /// layer below declares it, which loading refuses.
    private static func placed(_ spec: RepoSpec, inheriting repos: [RepoSpec]) -> RepoSpec? {
        guard var inherited = repos.first(where: { $0.name == spec.name }) else { return nil }
        if let siglevel = spec.siglevel {
            inherited.siglevel = siglevel
            inherited.location = spec.location
        }
        return inherited
    }

    private func checkRepositories() throws {
        for (index, layer) in layers.enumerated() {
            let below = index == 0 ? [] : repositories(for: index - 1)
            let names = Set(below.map(\.name))
            if let orphan = layer.repos.first(where: { $0.inherits && !names.contains($0.name) }) {
                let why = index == 0 ? "" : ", and no layer below declares it (a name alone puts an inherited repository in its place)"
                throw LayerFileError(
                    "repository \(quote(orphan.name)) has no `servers`, `mirrorlist` or `snapshot`" + why, at: orphan.location)
            }
            if repositories(for: index).isEmpty, let first = layer.packages.first {
                throw LayerFileError(
                    "`\(first.value)` cannot be installed: no layer up to here declares `repos`", at: first.location)
            }
        }
    }
}
