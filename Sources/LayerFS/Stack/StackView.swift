import Glibc

/// Looks up paths in a stack of overlay upper trees `[bottom … top]` with overlayfs's rules, in
/// user space and without mounting: the topmost entry wins, a whiteout (a 0:0 character device)
/// hides the name below, an opaque directory hides everything below it, and a non-directory above
/// a directory replaces it.
public struct StackView: Sendable {
    /// The layer trees, bottom first.
    public let trees: [String]

    public init(trees: [String]) { self.trees = trees }

    /// An entry of a merged directory: the real path in the tree that provides it.
    public struct Entry: Hashable, Sendable {
        public var name: String
        public var path: String
        public var isDirectory: Bool
    }

    /// The trees, top first, whose copy of directory `relativePath` shows through in the merge.
    public func contributingTrees(to relativePath: String) -> [String] {
        let components = relativePath.split(separator: "/").map(String.init)
        var result: [String] = []
        for tree in trees.reversed() {
            var current = tree
            var present = true
            var opaque = false
            for component in components {
                current += "/" + component
                var st = stat()
                guard lstat(current, &st) == 0 else {
                    present = false
                    break
                }
                if (st.st_mode & S_IFMT) != S_IFDIR { return result }  // a whiteout or a file hides all below
                if Self.isOpaque(current) { opaque = true }
            }
            if present { result.append(tree) }
            if opaque { return result }
        }
        return result
    }

    /// The visible entries of directory `relativePath`, in byte order of their names.
    public func list(_ relativePath: String) throws -> [Entry] {
        var seen: [String: Entry?] = [:]
        for tree in contributingTrees(to: relativePath) {
            let directory = relativePath.isEmpty ? tree : tree + "/" + relativePath
            for name in try FileSystem.listDirectory(directory) where seen[name] == nil {
                let path = directory + "/" + name
                var st = stat()
                guard lstat(path, &st) == 0 else { continue }
                if Self.isWhiteout(st) {
                    seen[name] = .some(nil)
                } else {
                    seen[name] = Entry(name: name, path: path, isDirectory: (st.st_mode & S_IFMT) == S_IFDIR)
                }
            }
        }
        return seen.values.compactMap { $0 }.sorted { $0.name.utf8.lexicographicallyPrecedes($1.name.utf8) }
    }

    /// True for overlayfs's whiteout: a character device with device number 0:0.
    public static func isWhiteout(_ st: stat) -> Bool {
        (st.st_mode & S_IFMT) == S_IFCHR && st.st_rdev == 0
    }

    public static func isOpaque(_ path: String) -> Bool {
        ExtendedAttributes.value(path, "trusted.overlay.opaque") == Array("y".utf8)
    }
}
