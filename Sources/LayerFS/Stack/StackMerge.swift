import CLayerSupport
import Glibc

/// Merges a stack of overlay upper trees `[bottom … top]` into one `MergedTree` in user space,
/// following overlayfs's lookup rules, without mounting anything:
/// - the topmost entry of a name wins, and its metadata is the merged entry's metadata;
/// - a whiteout (a 0:0 character device) hides the name below it and is not itself visible;
/// - an opaque directory (`trusted.overlay.opaque=y`) hides everything below it;
/// - a non-directory above a directory replaces it, and a directory above a non-directory does too.
///
/// Hard links inside one tree stay hard links; `trusted.overlay.*` attributes are dropped.
///
/// Reading `trusted.*` attributes needs CAP_SYS_ADMIN, so a tree's opaque directories may be given
/// as a list instead (the store records them when it builds a layer); with a list for every tree,
/// the merge needs no privilege beyond reading the trees.
public struct StackMerge: Sendable {
    public let trees: [String]
    public let epoch: Int64
    /// For each tree, its opaque directories relative to it ("" for the root, "/etc/x" below it),
    /// or nil to read `trusted.overlay.opaque` from the tree itself.
    private let opaque: [Set<[UInt8]>?]
    /// Leave out what is on other filesystems than the tree's root (mounts such as /proc), as
    /// `find -xdev` does.
    private let oneFilesystem: Bool

    public init(trees: [String], epoch: Int64, opaqueDirectories: [[String]?]? = nil, oneFilesystem: Bool = false) {
        self.trees = trees
        self.epoch = epoch
        self.oneFilesystem = oneFilesystem
        opaque = (opaqueDirectories ?? trees.map { _ in nil }).map { list in list.map { Set($0.map { Array($0.utf8) }) }
        }
    }

    /// One layer's copy of a directory that shows through in the merge.
    private struct Contribution {
        var layer: Int
        var path: [UInt8]
    }

    /// One layer's entry for a name, before the merge decides what is visible.
    private struct Candidate {
        var layer: Int
        var path: [UInt8]
        var st: stat
    }

    public func merge() throws -> MergedTree {
        guard let top = trees.indices.last else { throw MergeError.emptyStack }
        if !privileged, let unknown = trees.indices.first(where: { opaque[$0] == nil }) {
            throw MergeError.needsPrivilege(trees[unknown])
        }
        var entries: [MergedTree.Entry] = []
        var hardLinks: [HardLinkKey: Int] = [:]

        let roots = try rootContributions()
        var rootStat = stat()
        let topRoot = Array(trees[roots[0].layer].utf8)
        _ = try RawPath.with(topRoot) { path in try sys("read", trees[top]) { lstat(path, &rootStat) } }
        entries.append(
            try makeEntry(name: [], parent: 0, candidate: Candidate(layer: roots[0].layer, path: topRoot, st: rootStat))
        )

        var queue: [(index: Int, contributions: [Contribution])] = [(0, roots)]
        var head = 0
        while head < queue.count {
            let (directory, contributions) = queue[head]
            queue[head].contributions = []
            head += 1

            let first = entries.count
            for (name, stack) in try gather(contributions) {
                let winner = stack[0]
                if StackView.isWhiteout(winner.st) { continue }
                var entry = try makeEntry(name: name, parent: directory, candidate: winner)
                let index = entries.count
                if entry.kind == .directory {
                    queue.append((index, visibleDirectories(stack)))
                } else if winner.st.st_nlink > 1 {
                    let key = HardLinkKey(
                        layer: winner.layer, device: UInt64(winner.st.st_dev), inode: UInt64(winner.st.st_ino))
                    if let target = hardLinks[key] {
                        entry.hardLinkTarget = target
                        entries[target].linkCount += 1
                    } else {
                        hardLinks[key] = index
                    }
                }
                entries.append(entry)
            }
            entries[directory].children = first..<entries.count
        }
        return MergedTree(entries: entries, trees: trees, epoch: epoch)
    }

    private struct HardLinkKey: Hashable {
        var layer: Int
        var device: UInt64
        var inode: UInt64
    }

    /// The trees whose root shows through: all of them, down to the first opaque root.
    private func rootContributions() throws -> [Contribution] {
        var result: [Contribution] = []
        for layer in trees.indices.reversed() {
            var st = stat()
            try sys("read layer tree", trees[layer]) { lstat(trees[layer], &st) }
            guard (st.st_mode & S_IFMT) == S_IFDIR else { throw MergeError.notADirectory(trees[layer]) }
            result.append(Contribution(layer: layer, path: Array(trees[layer].utf8)))
            if isOpaque(layer: layer, path: Array(trees[layer].utf8)) { break }
        }
        return result
    }

    /// Every name in the contributing copies of a directory, in byte order, with each layer's
    /// entry for it, top first.
    private func gather(_ contributions: [Contribution]) throws -> [([UInt8], [Candidate])] {
        if contributions.count == 1, let only = contributions.first {
            // Most directories exist in one layer only: no names to match up.
            var list: [([UInt8], [Candidate])] = []
            try forEachEntry(in: only.path) { name, st in
                list.append((name, [Candidate(layer: only.layer, path: RawPath.join(only.path, name), st: st)]))
            }
            return list.sorted { $0.0.lexicographicallyPrecedes($1.0) }
        }
        var candidates: [[UInt8]: [Candidate]] = [:]
        for contribution in contributions {
            try forEachEntry(in: contribution.path) { name, st in
                let candidate = Candidate(
                    layer: contribution.layer, path: RawPath.join(contribution.path, name), st: st)
                candidates[name, default: []].append(candidate)
            }
        }
        return candidates.sorted { $0.key.lexicographicallyPrecedes($1.key) }.map { ($0.key, $0.value) }
    }

    /// The copies of a directory that show through: from the winner down, until an opaque copy,
    /// a whiteout or a non-directory stops the lookup.
    private func visibleDirectories(_ stack: [Candidate]) -> [Contribution] {
        var result: [Contribution] = []
        for candidate in stack {
            guard (candidate.st.st_mode & S_IFMT) == S_IFDIR else { break }
            result.append(Contribution(layer: candidate.layer, path: candidate.path))
            if isOpaque(layer: candidate.layer, path: candidate.path) { break }
        }
        return result
    }

    /// Whether the directory at `path` in tree `layer` hides the trees below it. The attribute
    /// itself decides whenever it can be read (as root); the recorded list stands in otherwise.
    private func isOpaque(layer: Int, path: [UInt8]) -> Bool {
        if !privileged, let list = opaque[layer] {
            return list.contains(Array(path.dropFirst(trees[layer].utf8.count)))
        }
        return RawPath.with(path) { ExtendedAttributes.value($0, "trusted.overlay.opaque") } == Array("y".utf8)
    }

    private var privileged: Bool { geteuid() == 0 }

    private func makeEntry(name: [UInt8], parent: Int, candidate: Candidate) throws -> MergedTree.Entry {
        var entry = try MergedTree.Entry.read(candidate.path, candidate.st, epoch: epoch)
        entry.name = name
        entry.parent = parent
        entry.layer = candidate.layer
        return entry
    }

    /// Calls `body` with each name in `directory` (raw bytes) and its lstat.
    private func forEachEntry(in directory: [UInt8], _ body: ([UInt8], stat) throws -> Void) throws {
        guard let dir = RawPath.with(directory, { opendir($0) }) else {
            throw SystemError("read directory", RawPath.string(directory))
        }
        defer { closedir(dir) }
        let fd = dirfd(dir)
        var here = stat()
        if oneFilesystem { fstat(fd, &here) }
        while let dirent = readdir(dir) {
            let name: [UInt8] = withUnsafeBytes(of: dirent.pointee.d_name) { raw in
                Array(raw.prefix { $0 != 0 })
            }
            if name == [0x2E] || name == [0x2E, 0x2E] { continue }
            var st = stat()
            let status = RawPath.with(name) { fstatat(fd, $0, &st, AT_SYMLINK_NOFOLLOW) }
            if status != 0 { throw SystemError("read", RawPath.string(RawPath.join(directory, name))) }
            if oneFilesystem && st.st_dev != here.st_dev { continue }
            try body(name, st)
        }
    }
}

public enum MergeError: Error, CustomStringConvertible, Sendable {
    case emptyStack
    case notADirectory(String)
    case unsupportedType(String)
    case needsPrivilege(String)

    public var description: String {
        switch self {
        case .emptyStack: "the stack has no layers"
        case .notADirectory(let path): "layer tree \(path) is not a directory"
        case .unsupportedType(let path): "\(path): file type cannot be stored in an image"
        case .needsPrivilege(let tree):
            "layer tree \(tree) has no record of its opaque directories, and reading them from trusted.overlay.opaque needs root"
        }
    }
}
