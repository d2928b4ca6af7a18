/// The stack merge of `StackMerge`, over the layers' manifests instead of their trees: the same
/// overlayfs rules, worked out in memory, with no system call per entry. Entries keep the content
/// digests the manifests recorded.
struct ManifestMerge {
    let trees: [String]
    let manifests: [LayerManifest]
    let epoch: Int64

    /// One layer's copy of a name: manifest `layer`, entry `index`.
    private struct Copy {
        var layer: Int
        var index: Int
    }

    private struct HardLinkKey: Hashable {
        var layer: Int
        var first: Int
    }

    func merge() throws -> MergedTree {
        guard !manifests.isEmpty, manifests.count == trees.count else { throw MergeError.emptyStack }
        let treePaths = trees.map { Array($0.utf8) }
        // The first name of each hard-link group, per layer: later names point at it.
        let groupHeads = manifests.map { manifest in
            Set(manifest.entries.lazy.compactMap(\.hardLinkTarget))
        }
        var roots: [Copy] = []
        for layer in manifests.indices.reversed() {
            roots.append(Copy(layer: layer, index: 0))
            if manifests[layer].opaque.contains(0) { break }
        }
        var entries: [MergedTree.Entry] = []
        entries.reserveCapacity(manifests.reduce(0) { $0 + $1.entries.count })
        var root = entry(roots[0], parent: 0)
        root.name = []
        root.source = treePaths[roots[0].layer]
        entries.append(root)
        var hardLinks: [HardLinkKey: Int] = [:]

        var queue: [(index: Int, relative: [UInt8], copies: [Copy])] = [(0, [], roots)]
        var head = 0
        while head < queue.count {
            let (directory, relative, copies) = queue[head]
            queue[head].copies = []
            head += 1
            let first = entries.count
            for stack in gather(copies) {
                let winner = stack[0]
                if manifests[winner.layer].isWhiteout(winner.index) { continue }
                let index = entries.count
                var merged = entry(winner, parent: directory)
                // Only files are read, and only directories are descended into: other entries
                // need no path, which saves two allocations per entry.
                if merged.kind == .regular || merged.kind == .directory {
                    var path = treePaths[winner.layer]
                    path.reserveCapacity(path.count + relative.count + merged.name.count + 1)
                    path += relative
                    path.append(UInt8(ascii: "/"))
                    path += merged.name
                    if merged.kind == .directory {
                        queue.append((index, Array(path[treePaths[winner.layer].count...]), visibleDirectories(stack)))
                    }
                    merged.source = path
                }
                if merged.kind == .directory {
                } else if let group = manifests[winner.layer].entries[winner.index].hardLinkTarget
                    ?? (groupHeads[winner.layer].contains(winner.index) ? winner.index : nil)
                {
                    let key = HardLinkKey(layer: winner.layer, first: group)
                    if let target = hardLinks[key] {
                        merged.hardLinkTarget = target
                        entries[target].linkCount += 1
                    } else {
                        hardLinks[key] = index
                    }
                }
                entries.append(merged)
            }
            entries[directory].children = first..<entries.count
        }
        return MergedTree(entries: entries, trees: trees, epoch: epoch)
    }

    private func entry(_ copy: Copy, parent: Int) -> MergedTree.Entry {
        var entry = manifests[copy.layer].entries[copy.index]
        entry.parent = parent
        entry.layer = copy.layer
        entry.mtime = min(entry.mtime, epoch)
        entry.children = 0..<0
        entry.hardLinkTarget = nil
        entry.linkCount = 1
        return entry
    }

    /// Every name in the copies of a directory, in byte order, each with its copies top first.
    private func gather(_ directories: [Copy]) -> [[Copy]] {
        if directories.count == 1, let only = directories.first {
            return manifests[only.layer].entries[only.index].children.map { [Copy(layer: only.layer, index: $0)] }
        }
        var byName: [[UInt8]: [Copy]] = [:]
        for directory in directories {
            let manifest = manifests[directory.layer]
            for child in manifest.entries[directory.index].children {
                byName[manifest.entries[child].name, default: []].append(Copy(layer: directory.layer, index: child))
            }
        }
        return byName.sorted { $0.key.lexicographicallyPrecedes($1.key) }.map(\.value)
    }

    /// The copies of a directory that show through: from the winner down, until an opaque copy or a
    /// non-directory (a whiteout included) stops the lookup.
    private func visibleDirectories(_ stack: [Copy]) -> [Copy] {
        var result: [Copy] = []
        for copy in stack {
            guard manifests[copy.layer].entries[copy.index].kind == .directory else { break }
            result.append(copy)
            if manifests[copy.layer].opaque.contains(copy.index) { break }
        }
        return result
    }
}
