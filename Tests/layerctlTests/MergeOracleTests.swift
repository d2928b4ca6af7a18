import Foundation
import Glibc
import LayerEntries
import LayerSupport
import SquashfsImage
import Testing

/// The merge oracle: for each overlayfs rule, a crafted stack is mounted with the kernel's overlayfs
/// and our image of the same stack is mounted with the kernel's squashfs, and the two trees must be
/// the same in every detail the image records. Each image must also read back with unsquashfs and
/// sqfs2tar, and sqfsdiff must find no difference in content from mksquashfs of the overlay mount.
@Suite("Merge oracle", .serialized, .enabled(if: Harness.isRoot, "needs root to mount overlayfs and squashfs"))
struct MergeOracleTests {
    /// Exports `stack`, compares it with the overlay mount, and returns export's stderr. With
    /// `formats`, the tar and dir exports are compared with the overlay mount too.
    @discardableResult
    func expectSameAsOverlay(
        _ stack: CraftedStack, top: String, layers: Int? = nil, formats: Bool = true,
        sourceLocation: SourceLocation = #_sourceLocation
    ) throws -> String {
        let image = try Harness.temporaryDirectory("image") + "/image.squashfs"
        let export = try Harness.run(["export", top, "--store", stack.store, "-o", image, "--jobs", "2"])
        #expect(export.status == 0, "\(export.stderr)", sourceLocation: sourceLocation)
        guard export.status == 0 else { return export.stderr }

        let overlay = try KernelMount.overlay(lowerdir: stack.lowerdir(upTo: layers.map { $0 - 1 }))
        defer { KernelMount.unmount(overlay) }
        let squashfs = try KernelMount.squashfs(image)
        defer { KernelMount.unmount(squashfs) }
        let expected = try TreeSnapshot(overlay)
        let actual = try TreeSnapshot(squashfs)
        let differences = expected.differences(from: actual)
        #expect(
            differences.isEmpty, "overlay (-) and image (+) differ:\n\(differences.joined(separator: "\n"))",
            sourceLocation: sourceLocation)
        #expect(actual.systemAttributes.isEmpty, sourceLocation: sourceLocation)
        // Inside the image, a link count is the number of names the image gives the inode.
        #expect(
            actual.linkCountMismatches.isEmpty, "\(actual.linkCountMismatches.prefix(10))", sourceLocation: sourceLocation)
        if formats {
            try expectFormatsSameAsOverlay(stack, top: top, expected: expected, sourceLocation: sourceLocation)
        }

        // layerctl's own image reader (diff) sees the image as the kernel's overlay shows the stack,
        // but for system.* attributes (ACLs), which squashfs cannot hold.
        let ours = try Harness.run(["diff", overlay, image, "--files"])
        if expected.systemAttributes.isEmpty {
            #expect(
                ours.status == 0, "layerctl diff overlay image:\n\(ours.stdout.prefix(2000))\(ours.stderr)",
                sourceLocation: sourceLocation)
        } else {
            #expect(ours.status == 1, "\(ours.stderr)", sourceLocation: sourceLocation)
            #expect(
                ours.stdout.split(separator: "\n").allSatisfy { $0.contains("(xattrs)") }, "\(ours.stdout)",
                sourceLocation: sourceLocation)
        }

        // The image comes from the layers' manifests; `diff` merges the layer trees themselves
        // (StackMerge). The two merges must agree.
        let layerSide = try Harness.run(["diff", top, image, "--store", stack.store, "--files"])
        #expect(
            layerSide.status == ours.status,
            "layerctl diff \(top) image:\n\(layerSide.stdout.prefix(2000))\(layerSide.stderr)",
            sourceLocation: sourceLocation)

        // Every other consumer of the merge agrees with the kernel too: the lookups package
        // resolution makes in the layer trees, `diff` of the layer (from its manifests) against
        // the mount, and `changes` of the top tree over a mount of the layers below it.
        let count = layers ?? stack.keys.count
        let folders = try (0..<count).map { try FolderSource(stack.tree($0)) as any EntrySource }
        try expectPathsSameAsOverlay(folders, overlay: overlay, readContent: true, sourceLocation: sourceLocation)
        if count > 1 {
            // An image of the layers below the top is a source like them: the top over it is the mount.
            let below = (image as NSString).deletingLastPathComponent + "/below.squashfs"
            let exported = try Harness.run(["export", stack.keys[count - 2], "--store", stack.store, "-o", below])
            #expect(exported.status == 0, "export below: \(exported.stderr)", sourceLocation: sourceLocation)
            let sources: [any EntrySource] = [TreeSource(try ImageTree(image: below).tree), folders[count - 1]]
            try expectPathsSameAsOverlay(sources, overlay: overlay, readContent: false, sourceLocation: sourceLocation)
        }
        let againstMount = try Harness.run(["diff", overlay, top, "--store", stack.store, "--files"])
        #expect(
            againstMount.status == 0, "layerctl diff overlay \(top):\n\(againstMount.stdout.prefix(2000))\(againstMount.stderr)",
            sourceLocation: sourceLocation)
        if count > 1 {
            try expectChangesSameAsDiff(stack, layers: count, overlay: overlay, sourceLocation: sourceLocation)
        }

        let listing = try KernelMount.run("/usr/bin/unsquashfs", ["-lls", image])
        #expect(listing.status == 0, "unsquashfs -lls: \(listing.output.suffix(500))", sourceLocation: sourceLocation)
        let tar = try KernelMount.run("/bin/sh", ["-c", "sqfs2tar '\(image)' > /dev/null"])
        #expect(tar.status == 0, "sqfs2tar: \(tar.output.suffix(500))", sourceLocation: sourceLocation)

        let reference = (image as NSString).deletingLastPathComponent + "/mksquashfs.squashfs"
        let made = try KernelMount.run(
            "/usr/bin/mksquashfs", [overlay, reference, "-comp", "zstd", "-quiet", "-no-progress", "-processors", "2"])
        #expect(made.status == 0, "mksquashfs: \(made.output.suffix(500))", sourceLocation: sourceLocation)
        let diff = try KernelMount.run("/usr/bin/sqfsdiff", ["-a", reference, "-b", image])
        // sqfsdiff also reports a basic inode in one image that is extended in the other: an
        // encoding choice, not content.
        let contentLines = diff.output.split(separator: "\n").filter {
            !$0.hasSuffix(" has a basic type") && !$0.hasSuffix(" has an extended type")
        }
        #expect(
            diff.status != 2 && contentLines.isEmpty, "sqfsdiff: \(contentLines.prefix(20).joined(separator: "\n"))",
            sourceLocation: sourceLocation)
        return export.stderr
    }

    /// Package resolution's view of `sources` (`OverlayPaths`): each folder of the kernel's mount
    /// lists the same names with the same types, and with `readContent` each file reads the same
    /// bytes (an image's files are read through the image, not by path).
    func expectPathsSameAsOverlay(
        _ sources: [any EntrySource], overlay: String, readContent: Bool, sourceLocation: SourceLocation
    ) throws {
        let paths = OverlayPaths(OverlayMerge(sources))
        var mismatches: [String] = []
        var folders: [[UInt8]] = [[]]
        while let folder = folders.popLast() {
            let mounted = try KernelMount.listRaw(Array(overlay.utf8) + folder)
            let merged = try paths.names(at: folder)?.map(\.entry) ?? []
            let names = merged.map(\.name)
            if names != mounted.map(\.name) {
                mismatches.append("\(TreeSnapshot.display(folder))/: \(names.count) names, the mount \(mounted.count)")
                continue
            }
            for (entry, mount) in zip(merged, mounted) {
                let path = folder + [0x2F] + entry.name
                if entry.kind.typeBits != mount.type {
                    mismatches.append("\(TreeSnapshot.display(path)): type differs")
                } else if entry.kind == .directory {
                    folders.append(path)
                } else if readContent, entry.kind == .regular, let text = String(validating: path, as: UTF8.self),
                    try paths.read(text).map({ Data($0) }) != FileManager.default.contents(atPath: overlay + text)
                {
                    mismatches.append("\(TreeSnapshot.display(path)): content differs")
                }
            }
        }
        #expect(mismatches.isEmpty, "\(mismatches.prefix(20))", sourceLocation: sourceLocation)
    }

    /// `changes` of the top tree over the kernel's mount of the layers below it says what `diff` of
    /// that mount and the whole stack's mount says: each path and how it changed. (A deleted folder
    /// is one line in `changes`; `diff` lists what was in it too.)
    func expectChangesSameAsDiff(
        _ stack: CraftedStack, layers: Int, overlay: String, sourceLocation: SourceLocation
    ) throws {
        let lower = layers == 2 ? stack.tree(0) : try KernelMount.overlay(lowerdir: stack.lowerdir(upTo: layers - 2))
        defer { if layers > 2 { KernelMount.unmount(lower) } }
        let changes = try Harness.run(["changes", "--upper", stack.tree(layers - 1), "--lower", lower, "--json"])
        let diff = try Harness.run(["diff", lower, overlay, "--json"])
        #expect(changes.status == 0, "\(changes.stderr)", sourceLocation: sourceLocation)
        #expect(diff.status <= 1, "\(diff.stderr)", sourceLocation: sourceLocation)
        func lines(_ json: String, _ key: String) throws -> [String] {
            let object = try JSONSerialization.jsonObject(with: Data(json.utf8)) as? [String: Any]
            let list = object?[key] as? [[String: Any]] ?? []
            var removed = Set<String>()
            return list.compactMap { item in
                let path = item["path"] as? String ?? ""
                var change = item["change"] as? String ?? ""
                if change == "deleted" { change = "removed" }
                if change == "removed" {
                    defer { removed.insert(path) }
                    if removed.contains(where: { path.hasPrefix($0 + "/") }) { return nil }
                }
                let differences = (item["differences"] as? [String] ?? []).joined(separator: ",")
                return "\(change) \(path) \(differences)"
            }.sorted()
        }
        let fromChanges = try lines(changes.stdout, "files")
        let fromDiff = try lines(diff.stdout, "entries")
        #expect(
            fromChanges == fromDiff,
            "changes (-) and diff (+):\n\(fromChanges.filter { !fromDiff.contains($0) }.map { "- " + $0 }.joined(separator: "\n"))\n\(fromDiff.filter { !fromChanges.contains($0) }.map { "+ " + $0 }.joined(separator: "\n"))",
            sourceLocation: sourceLocation)
    }

    /// The dir and tar exports of `top` hold what the overlay mount shows (tar: but sockets).
    func expectFormatsSameAsOverlay(
        _ stack: CraftedStack, top: String, expected: TreeSnapshot, sourceLocation: SourceLocation
    ) throws {
        let out = try Harness.temporaryDirectory("formats")
        defer { try? FileManager.default.removeItem(atPath: out) }
        let dir = try Harness.run(["export", top, "--store", stack.store, "-o", out + "/tree", "--format", "dir"])
        #expect(dir.status == 0, "export --format dir: \(dir.stderr)", sourceLocation: sourceLocation)
        let tar = try Harness.run(["export", top, "--store", stack.store, "-o", out + "/tree.tar", "--format", "tar"])
        #expect(tar.status == 0, "export --format tar: \(tar.stderr)", sourceLocation: sourceLocation)
        guard dir.status == 0, tar.status == 0 else { return }
        let directory = try TreeSnapshot(out + "/tree")
        #expect(
            expected.differences(from: directory).isEmpty,
            "overlay (-) and dir export (+):\n\(expected.differences(from: directory).joined(separator: "\n"))",
            sourceLocation: sourceLocation)
        #expect(directory.linkCountMismatches.isEmpty, "\(directory.linkCountMismatches)", sourceLocation: sourceLocation)
        try FileManager.default.createDirectory(atPath: out + "/extracted", withIntermediateDirectories: false)
        let extract = try KernelMount.run(
            "/bin/tar",
            ["--xattrs", "--xattrs-include=*", "--numeric-owner", "-xpf", out + "/tree.tar", "-C", out + "/extracted"])
        #expect(extract.status == 0, "tar -x: \(extract.output)", sourceLocation: sourceLocation)
        // tar has no sockets, and leaves out attribute names outside printable ASCII (and says so).
        var withoutSockets = expected
        withoutSockets.entries = withoutSockets.entries.filter { !$0.value.hasPrefix("socket") }.mapValues {
            $0.replacingOccurrences(of: #" xattr:[^ =]*(\\x|%)[^ =]*=[0-9a-f]*"#, with: "", options: .regularExpression)
        }
        if withoutSockets.entries != expected.entries.filter({ !$0.value.hasPrefix("socket") }) {
            #expect(
                tar.stderr.contains("tar cannot carry attribute names outside printable ASCII"), "\(tar.stderr)",
                sourceLocation: sourceLocation)
        }
        let extracted = try TreeSnapshot(out + "/extracted")
        #expect(
            withoutSockets.differences(from: extracted).isEmpty,
            "overlay (-) and tar export (+):\n\(withoutSockets.differences(from: extracted).joined(separator: "\n"))",
            sourceLocation: sourceLocation)
    }

    @Test("The topmost entry wins, with its content, mode, owner and time")
    func topmostWins() throws {
        let stack = try CraftedStack("topmost")
        try stack.layer("bottom") { t in
            try t.directory("etc")
            try t.file("etc/a", "bottom a\n")
            try t.file("etc/b", "bottom b\n", mode: 0o640, owner: (0, 5))
        }
        try stack.layer("top") { t in
            try t.directory("etc", mode: 0o750, owner: (0, 10), mtime: 1_650_000_000)
            try t.file("etc/a", "top a, longer than before\n", mode: 0o600, owner: (1000, 1000), mtime: 1_650_000_001)
            try t.file("etc/c", "only on top\n", mode: 0o4755)
        }
        try expectSameAsOverlay(stack, top: "top")
    }

    @Test("A whiteout hides a file or a whole directory below it and is not in the image")
    func whiteouts() throws {
        let stack = try CraftedStack("whiteout")
        try stack.layer("bottom") { t in
            try t.directory("usr")
            try t.file("usr/gone", "removed above\n")
            try t.file("usr/kept", "kept\n")
            try t.directory("usr/tree")
            try t.directory("usr/tree/deep")
            try t.file("usr/tree/deep/file", "deep\n")
        }
        try stack.layer("middle") { t in
            try t.directory("usr")
            try t.whiteout("usr/gone")
            try t.whiteout("usr/tree")
            try t.whiteout("usr/never-existed")
        }
        try stack.layer("top") { t in
            try t.directory("usr")
            try t.directory("usr/tree")
            try t.file("usr/tree/new", "back as a new directory\n")
        }
        try expectSameAsOverlay(stack, top: "top")
        try expectSameAsOverlay(stack, top: "middle", layers: 2)
    }

    @Test("An opaque directory hides everything below it")
    func opaqueDirectories() throws {
        let stack = try CraftedStack("opaque")
        try stack.layer("bottom") { t in
            try t.directory("opt")
            try t.directory("opt/app")
            try t.file("opt/app/old", "old\n")
            try t.directory("opt/app/sub")
            try t.file("opt/app/sub/older", "older\n")
            try t.file("opt/sibling", "untouched\n")
        }
        try stack.layer("top") { t in
            try t.directory("opt")
            try t.directory("opt/app", mode: 0o700)
            try t.opaque("opt/app")
            try t.file("opt/app/new", "new\n")
        }
        try expectSameAsOverlay(stack, top: "top")
    }

    @Test("A file over a directory and a directory over a file replace what is below")
    func typeChanges() throws {
        let stack = try CraftedStack("types")
        try stack.layer("bottom") { t in
            try t.directory("srv")
            try t.file("srv/was-file", "file below\n")
            try t.directory("srv/was-dir")
            try t.file("srv/was-dir/inside", "inside\n")
            try t.directory("srv/was-dir-2")
            try t.file("srv/was-dir-2/inside", "inside\n")
        }
        try stack.layer("top") { t in
            try t.directory("srv")
            try t.directory("srv/was-file")
            try t.file("srv/was-file/child", "child\n")
            try t.file("srv/was-dir", "now a file\n")
            try t.symlink("srv/was-dir-2", to: "was-file")
        }
        try expectSameAsOverlay(stack, top: "top")
    }

    @Test("A directory of 100,000 entries comes through")
    func hugeDirectory() throws {
        let stack = try CraftedStack("huge")
        try stack.layer("bottom") { t in
            try t.directory("many")
            for i in 0..<50_000 { try t.file("many/b\(i)", i % 1000 == 0 ? "content \(i)\n" : "") }
        }
        try stack.layer("top") { t in
            try t.directory("many")
            for i in 0..<50_000 { try t.file("many/t\(i)", i % 1000 == 0 ? "content \(i)\n" : "") }
            for i in stride(from: 0, to: 50_000, by: 10) { try t.whiteout("many/b\(i)") }
        }
        try expectSameAsOverlay(stack, top: "top", formats: false)
    }
}
