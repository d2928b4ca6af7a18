import LayerEntries
import LayerSupport
import Testing

/// A layer's manifest written out entry by entry, in the layout a build records: the root first,
/// each folder's children contiguous and in byte order. Paths are "/a/b"; a folder must come
/// before what is in it.
struct ManifestDraft {
    enum Kind { case folder, opaqueFolder, file(String), whiteout, symlink(String), hardLink(to: String) }

    var items: [(path: String, kind: Kind)] = []

    mutating func add(_ path: String, _ kind: Kind) { items.append((path, kind)) }

    var manifest: LayerManifest {
        var childrenOf: [String: [String]] = ["": []]
        var kinds: [String: Kind] = ["": .folder]
        for (path, kind) in items {
            let parent = String(path[..<path.lastIndex(of: "/")!])
            childrenOf[parent, default: []].append(path)
            kinds[path] = kind
            if case .folder = kind { childrenOf[path] = [] }
            if case .opaqueFolder = kind { childrenOf[path] = [] }
        }
        var order = [""]
        var entries: [MergedTree.Entry] = [entry([], .directory)]
        var index: [String: Int] = ["": 0]
        var opaque = Set<Int>()
        var head = 0
        while head < order.count {
            let folder = order[head]
            let first = entries.count
            for child in (childrenOf[folder] ?? []).sorted(by: { $0.utf8.lexicographicallyPrecedes($1.utf8) }) {
                let name = Array(child.split(separator: "/").last!.utf8)
                index[child] = entries.count
                var item: MergedTree.Entry
                switch kinds[child]! {
                case .folder, .opaqueFolder:
                    item = entry(name, .directory)
                    order.append(child)
                    if case .opaqueFolder = kinds[child]! { opaque.insert(entries.count) }
                case .file(let text): item = entry(name, .regular, size: UInt64(text.utf8.count))
                case .whiteout: item = entry(name, .characterDevice)
                case .symlink(let target): item = entry(name, .symlink, target: Array(target.utf8))
                case .hardLink: item = entry(name, .regular, size: 1)
                }
                item.parent = index[folder]!
                entries.append(item)
            }
            entries[index[folder]!].children = first..<entries.count
            head += 1
        }
        for (path, kind) in items {
            if case .hardLink(let target) = kind { entries[index[path]!].hardLinkTarget = index[target]! }
        }
        return LayerManifest(entries: entries, opaque: opaque)
    }

    private func entry(
        _ name: [UInt8], _ kind: MergedTree.Kind, size: UInt64 = 0, target: [UInt8] = []
    ) -> MergedTree.Entry {
        MergedTree.Entry(
            name: name, parent: 0, kind: kind, permissions: 0o644, uid: 0, gid: 0, mtime: 1_700_000_000, size: size,
            rdev: 0, linkTarget: target, xattrs: [], source: [], layer: 0, children: 0..<0, hardLinkTarget: nil,
            linkCount: 1)
    }
}

/// overlayfs's rules, on manifests in memory: no root, no mount. The merge oracle checks the same
/// rules against the kernel's overlay mount.
@Suite("Overlay merge")
struct OverlayMergeTests {
    /// Every visible path of the merge of `drafts` (bottom first), with the layer that provides it.
    func merged(_ drafts: [ManifestDraft]) throws -> [String: Int] {
        let sources = drafts.enumerated().map { ManifestSource($1.manifest, tree: "/layer\($0)") }
        let tree = try OverlayMerge(sources).merge()
        var result: [String: Int] = [:]
        for index in tree.entries.indices.dropFirst() {
            result[String(decoding: tree.path(of: index), as: UTF8.self)] = tree.entries[index].layer
        }
        return result
    }

    @Test("the topmost copy wins; a whiteout hides the name below and is not itself visible")
    func whiteouts() throws {
        var bottom = ManifestDraft()
        bottom.add("/etc", .folder)
        bottom.add("/etc/a", .file("a"))
        bottom.add("/etc/gone", .file("gone"))
        bottom.add("/usr", .folder)
        bottom.add("/usr/lib", .folder)
        bottom.add("/usr/lib/x", .file("x"))
        var top = ManifestDraft()
        top.add("/etc", .folder)
        top.add("/etc/a", .file("new a"))
        top.add("/etc/gone", .whiteout)
        top.add("/etc/never", .whiteout)
        top.add("/usr", .whiteout)
        #expect(try merged([bottom, top]) == ["/etc": 1, "/etc/a": 1])
    }

    @Test("an opaque folder hides everything below it, at the root too")
    func opaque() throws {
        var bottom = ManifestDraft()
        bottom.add("/opt", .folder)
        bottom.add("/opt/old", .file("old"))
        bottom.add("/opt/sub", .folder)
        bottom.add("/opt/sub/older", .file("older"))
        bottom.add("/keep", .file("keep"))
        var top = ManifestDraft()
        top.add("/opt", .opaqueFolder)
        top.add("/opt/new", .file("new"))
        #expect(try merged([bottom, top]) == ["/opt": 1, "/opt/new": 1, "/keep": 0])
        var root = ManifestDraft()
        root.add("/only", .file("only"))
        let sources = [ManifestSource(bottom.manifest, tree: "/b"), ManifestSource(root.opaqueRoot, tree: "/t")]
        let tree = try OverlayMerge(sources).merge()
        #expect(tree.entries.count == 2 && tree.entries[1].name == Array("only".utf8))
    }

    @Test("a non-folder over a folder replaces it, and a folder over a non-folder does too")
    func typeChanges() throws {
        var bottom = ManifestDraft()
        bottom.add("/srv", .folder)
        bottom.add("/srv/was-file", .file("file"))
        bottom.add("/srv/was-dir", .folder)
        bottom.add("/srv/was-dir/inside", .file("inside"))
        var middle = ManifestDraft()
        middle.add("/srv", .folder)
        middle.add("/srv/was-file", .folder)
        middle.add("/srv/was-file/child", .file("child"))
        middle.add("/srv/was-dir", .symlink("was-file"))
        var top = ManifestDraft()
        top.add("/srv", .folder)
        top.add("/srv/was-dir", .folder)
        top.add("/srv/was-dir/new", .file("new"))
        #expect(
            try merged([bottom, middle, top]) == [
                "/srv": 2, "/srv/was-file": 1, "/srv/was-file/child": 1, "/srv/was-dir": 2, "/srv/was-dir/new": 2,
            ])
    }

    @Test("hard links stay links within a source, whichever name comes first, and a hidden name drops out")
    func hardLinks() throws {
        var bottom = ManifestDraft()
        bottom.add("/x", .folder)
        bottom.add("/x/z", .file("f"))
        bottom.add("/x/a", .hardLink(to: "/x/z"))
        bottom.add("/x/b", .hardLink(to: "/x/z"))
        var top = ManifestDraft()
        top.add("/x", .folder)
        top.add("/x/b", .whiteout)
        let sources = [ManifestSource(bottom.manifest, tree: "/b"), ManifestSource(top.manifest, tree: "/t")]
        let tree = try OverlayMerge(sources).merge()
        let names = tree.entries.map { String(decoding: $0.name, as: UTF8.self) }
        let a = names.firstIndex(of: "a")!
        let z = names.firstIndex(of: "z")!
        #expect(!names.contains("b"))
        #expect(tree.entries[z].hardLinkTarget == a && tree.entries[a].linkCount == 2)
        #expect(tree.entries[a].source == Array("/b/x/a".utf8))
    }

    @Test("a merged tree (an image read whole) is a source like any other: layers over it merge as over its layers")
    func treeSource() throws {
        var bottom = ManifestDraft()
        bottom.add("/etc", .folder)
        bottom.add("/etc/a", .file("a"))
        bottom.add("/etc/link", .hardLink(to: "/etc/a"))
        bottom.add("/opt", .folder)
        bottom.add("/opt/old", .file("old"))
        bottom.add("/usr", .folder)
        bottom.add("/usr/x", .file("x"))
        bottom.add("/usr/y", .hardLink(to: "/usr/x"))
        var middle = ManifestDraft()
        middle.add("/etc", .folder)
        middle.add("/etc/b", .file("b"))
        middle.add("/var", .whiteout)
        var top = ManifestDraft()
        top.add("/etc", .folder)
        top.add("/etc/a", .whiteout)
        top.add("/opt", .opaqueFolder)
        top.add("/opt/new", .file("new"))
        // The two lower layers merged once, as an image holds them, then the top over that tree.
        let lower = try OverlayMerge([ManifestSource(bottom.manifest, tree: "/0"), ManifestSource(middle.manifest, tree: "/1")])
            .merge()
        let overImage = try OverlayMerge([TreeSource(lower), ManifestSource(top.manifest, tree: "/2")]).merge()
        let overLayers = try OverlayMerge(
            [bottom, middle, top].enumerated().map { ManifestSource($1.manifest, tree: "/\($0)") }
        ).merge()
        func listing(_ tree: MergedTree) -> [String] {
            tree.depthFirst().dropFirst().map { index in
                let entry = tree.entries[index]
                let link = entry.hardLinkTarget.map { " -> " + String(decoding: tree.path(of: $0), as: UTF8.self) } ?? ""
                return String(decoding: tree.path(of: index), as: UTF8.self) + " \(entry.kind)" + link
            }
        }
        #expect(listing(overImage) == listing(overLayers))
        // /etc/link's other name is hidden, so it is a plain file again; /usr/y stays a link.
        #expect(
            listing(overImage) == [
                "/etc directory", "/etc/b regular", "/etc/link regular", "/opt directory", "/opt/new regular",
                "/usr directory", "/usr/x regular", "/usr/y regular -> /usr/x",
            ])
    }

    @Test("paths look up folder by folder as the whole merge sees them")
    func paths() throws {
        var bottom = ManifestDraft()
        bottom.add("/var", .folder)
        bottom.add("/var/lib", .folder)
        bottom.add("/var/lib/pacman", .folder)
        bottom.add("/var/lib/pacman/local", .folder)
        bottom.add("/var/lib/pacman/local/nano-7", .folder)
        bottom.add("/var/lib/pacman/local/nano-7/desc", .file("nano"))
        bottom.add("/var/lib/pacman/local/perl-5", .folder)
        bottom.add("/var/lib/pacman/local/perl-5/desc", .file("perl"))
        var top = ManifestDraft()
        top.add("/var", .folder)
        top.add("/var/lib", .folder)
        top.add("/var/lib/pacman", .folder)
        top.add("/var/lib/pacman/local", .folder)
        top.add("/var/lib/pacman/local/nano-7", .whiteout)
        top.add("/var/lib/pacman/local/vim-9", .folder)
        top.add("/var/lib/pacman/local/vim-9/desc", .file("vim"))
        let paths = OverlayPaths(
            OverlayMerge([ManifestSource(bottom.manifest, tree: "/b"), ManifestSource(top.manifest, tree: "/t")]))
        #expect(try paths.list("/var/lib/pacman/local") == ["perl-5", "vim-9"])
        #expect(try paths.list("/var/lib/pacman/local/nano-7") == nil)
        #expect(try paths.entry(at: Array("/var/lib/pacman/local/vim-9/desc".utf8))?.layer == 1)
        #expect(try paths.entry(at: Array("/var/lib/pacman/local/perl-5/desc".utf8))?.layer == 0)
        #expect(try paths.entry(at: Array("/var/lib/pacman/local/nano-7/desc".utf8)) == nil)
        #expect(try paths.list("/nowhere") == nil)
    }
}

extension ManifestDraft {
    /// The manifest with its root marked opaque.
    var opaqueRoot: LayerManifest {
        var manifest = self.manifest
        manifest.opaque.insert(0)
        return manifest
    }
}

@Suite("Layer manifest codec")
struct LayerManifestCodecTests {
    func sample() -> LayerManifest {
        var draft = ManifestDraft()
        draft.add("/etc", .opaqueFolder)
        draft.add("/etc/a", .file("a"))
        draft.add("/etc/b", .hardLink(to: "/etc/a"))
        draft.add("/etc/gone", .whiteout)
        draft.add("/link", .symlink("etc/a"))
        var manifest = draft.manifest
        manifest.entries[2].xattrs = [ExtendedAttribute(name: [0x75, 0x2E, 0xFF], value: [0, 1, 2])]
        manifest.entries[2].content = Hash256.of(Array("a".utf8))
        return manifest
    }

    @Test("a manifest reads back as it was written, and every cut or changed magic reads as damaged")
    func roundTrip() {
        let bytes = sample().encoded()
        let decoded = bytes.withUnsafeBytes { LayerManifest.decode($0) }
        #expect(decoded?.encoded() == bytes)
        #expect(decoded?.opaque == sample().opaque)
        #expect(decoded?.entries[2].content == Hash256.of(Array("a".utf8)))
        for length in 0..<bytes.count {
            #expect(Array(bytes[..<length]).withUnsafeBytes { LayerManifest.decode($0) } == nil, "cut at \(length)")
        }
        var edited = bytes
        edited[0] ^= 1
        #expect(edited.withUnsafeBytes { LayerManifest.decode($0) } == nil)
        #expect((bytes + [0]).withUnsafeBytes { LayerManifest.decode($0) } == nil)
    }
}
