import Foundation
import Glibc
import LayerStore
import LayerSupport
import Testing

/// The tar and dir formats against the kernel's overlay, and the time every format stamps. Part of
/// the serialized "Exporting images" suite.
extension ExportTests {
    @Test("The dir and tar formats hold the same tree as the kernel's overlay of the stack")
    func directoryAndTar() throws {
        let stack = try CraftedStack("formats")
        try stack.layer("bottom") { t in
            try t.directory("data")
            try t.file("data/linked", "two names\n", mode: 0o640, owner: (12, 34))
            try t.hardLink("data/linked-2", to: "data/linked")
            try t.file("data/hidden", "whited out\n")
            try t.xattr("data/linked", "user.tag", Array("kept".utf8))
        }
        try stack.layer("top") { t in
            try t.directory("data", mode: 0o750)
            try t.whiteout("data/hidden")
            try t.directory("dev")
            try t.device("dev/null", character: true, major: 1, minor: 3, mode: 0o666)
            try t.fifo("dev/fifo")
            try t.socket("dev/socket")
            try t.symlink("data/link", to: "linked")
            try t.sparse("data/sparse", size: 3 << 20, data: "middle", at: 1 << 20)
            try t.file(Array("data/odd-".utf8) + [0xFF], Array("not UTF-8\n".utf8))
        }
        let out = try Harness.temporaryDirectory("formats")
        _ = try export("top", store: stack.store, to: out + "/tree", ["--format", "dir"])
        let tar = try export("top", store: stack.store, to: out + "/tree.tar", ["--format", "tar"])
        #expect(tar.stderr.contains("tar cannot store sockets: left out 1, first /dev/socket"), "\(tar.stderr)")
        try FileManager.default.createDirectory(atPath: out + "/extracted", withIntermediateDirectories: false)
        let extract = try KernelMount.run(
            "/bin/tar",
            ["--xattrs", "--xattrs-include=*", "--numeric-owner", "-xpf", out + "/tree.tar", "-C", out + "/extracted"])
        #expect(extract.status == 0, "\(extract.output)")

        let overlay = try KernelMount.overlay(lowerdir: stack.lowerdir())
        defer { KernelMount.unmount(overlay) }
        let expected = try TreeSnapshot(overlay)
        let directory = try TreeSnapshot(out + "/tree")
        #expect(
            expected.differences(from: directory).isEmpty,
            "\(expected.differences(from: directory).joined(separator: "\n"))")
        var withoutSocket = expected
        withoutSocket.entries["/dev/socket"] = nil
        // The tar's `./` entry carries the root's mode, owner and time.
        let extracted = try TreeSnapshot(out + "/extracted")
        #expect(
            withoutSocket.differences(from: extracted).isEmpty,
            "\(withoutSocket.differences(from: extracted).joined(separator: "\n"))")

        // A sparse file stays sparse: 3 MiB long, one block of data.
        var sparse = stat()
        #expect(lstat(out + "/tree/data/sparse", &sparse) == 0 && sparse.st_size == 3 << 20)
        #expect(sparse.st_blocks * 512 <= 64 << 10, "\(sparse.st_blocks) blocks allocated")

        let again = try Harness.run(["export", "top", "--store", stack.store, "-o", out + "/tree", "--format", "dir"])
        #expect(again.status == 3 && again.stderr.contains("File exists"), "\(again.stderr)")
    }

    @Test("A sparse file's image is that of the same bytes written out, its holes stored as sparse blocks and never read, and the kernel reads the bytes back")
    func sparseFiles() throws {
        func noise(_ count: Int, seed: UInt32) -> [UInt8] {
            var state = seed
            return (0..<count).map { _ in
                state = state &* 1_664_525 &+ 1_013_904_223
                return UInt8(truncatingIfNeeded: state >> 24) | 1
            }
        }
        let block = 128 << 10
        let shapes: [(path: String, size: Int, pieces: [(offset: Int, bytes: [UInt8])])] = [
            ("data/disk.img", 64 << 20, [(32 << 20, noise(4096, seed: 1))]),
            ("data/head", 3 << 20, [(0, noise(4096, seed: 2))]),
            ("data/tail", (3 << 20) + 10, [(3 << 20, noise(10, seed: 3))]),
            ("data/inside", 4 << 20, [((1 << 20) + 100, [7])]),
            ("data/many", 8 << 20, (0..<32).map { ($0 * (256 << 10) + $0, noise(5, seed: UInt32(10 + $0))) }),
            ("data/across", 2 << 20, [(3 * block + 7, noise(300 << 10, seed: 4))]),
            ("data/hole", (1 << 20) + 1, []),
        ]
        var stacks: [CraftedStack] = []
        for holes in [true, false] {
            let stack = try CraftedStack(holes ? "sparse" : "dense")
            try stack.layer("files") { t in
                try t.directory("data")
                for shape in shapes { try t.sparse(shape.path, size: shape.size, pieces: shape.pieces, holes: holes) }
            }
            stacks.append(stack)
        }
        let disk = stacks[0].tree(0) + "/data/disk.img"
        var st = stat()
        #expect(stat(disk, &st) == 0 && st.st_blocks * 512 < 1 << 20, "the crafted file has holes")
        let before = try PageCache.residentPages(disk)
        let out = try Harness.temporaryDirectory("sparse")
        let sparse = try export(
            "files", store: stacks[0].store, to: out + "/sparse.squashfs", ["--no-block-cache", "--json"])
        // Reading the page of data may read ahead into the hole around it: at most a few MiB of 64.
        let after = try PageCache.residentPages(disk)
        #expect(after - before < 1024, "\(after - before) of 16384 pages read into the cache")
        _ = try export("files", store: stacks[1].store, to: out + "/dense.squashfs", ["--no-block-cache"])
        #expect(bytes(out + "/sparse.squashfs") == bytes(out + "/dense.squashfs"))
        let counts = try JSONSerialization.jsonObject(with: Data(sparse.stdout.utf8)) as? [String: Any]
        // 64 MiB of which one block holds data, and the other files' blocks of zeros.
        #expect((counts?["zeroBlocks"] as? Int ?? 0) > 511, "\(sparse.stdout)")
        // Through the block cache, twice: the same image; the second time from the cache, its
        // blocks of zeros still counted as such.
        _ = try export("files", store: stacks[0].store, to: out + "/cached.squashfs")
        let again = try export("files", store: stacks[0].store, to: out + "/again.squashfs")
        #expect(bytes(out + "/cached.squashfs") == bytes(out + "/sparse.squashfs"))
        #expect(bytes(out + "/again.squashfs") == bytes(out + "/sparse.squashfs"))
        #expect(
            again.stdout.contains(", 0 blocks compressed,") && again.stdout.contains(" of zeros"), "\(again.stdout)")
        // A tar and an OCI layout carry the zeros, and read none of them either.
        for format in ["tar", "oci"] {
            // Out of the cache first, so that each writer's reads show.
            try PageCache.evict(disk)
            let before = try PageCache.residentPages(disk)
            _ = try export("files", store: stacks[0].store, to: out + "/sparse.\(format)", ["--format", format])
            let after = try PageCache.residentPages(disk)
            #expect(after - before < 1024, "\(format): \(after - before) of 16384 pages read into the cache")
            _ = try export("files", store: stacks[1].store, to: out + "/dense.\(format)", ["--format", format])
        }
        #expect(bytes(out + "/sparse.tar") == bytes(out + "/dense.tar"))
        // Blobs are named by their digests, and the layer's is the largest: the same in both (the
        // config and the manifest name the crafted layers' keys, which differ).
        let layers = ["sparse", "dense"].map { layout in
            let folder = out + "/\(layout).oci/blobs/sha256"
            return ((try? FileManager.default.contentsOfDirectory(atPath: folder)) ?? []).max {
                bytes(folder + "/" + $0).count < bytes(folder + "/" + $1).count
            }
        }
        #expect(layers[0] != nil && layers[0] == layers[1], "\(layers)")

        let mounted = try KernelMount.squashfs(out + "/sparse.squashfs")
        defer { KernelMount.unmount(mounted) }
        for shape in shapes {
            var expected = [UInt8](repeating: 0, count: shape.size)
            for piece in shape.pieces {
                expected.replaceSubrange(piece.offset..<(piece.offset + piece.bytes.count), with: piece.bytes)
            }
            #expect(FileManager.default.contents(atPath: mounted + "/" + shape.path) == Data(expected), "\(shape.path)")
        }
    }

    @Test("Timestamps are clamped to SOURCE_DATE_EPOCH, which is also the superblock's time")
    func clampedTimes() throws {
        let stack = try CraftedStack("epoch")
        try stack.layer("only") { t in
            try t.directory("etc", mtime: 1_650_000_000)
            try t.file("etc/old", "old\n", mtime: 1_500_000_000)
            try t.file("etc/new", "new\n", mtime: 1_700_000_000)
        }
        let out = try Harness.temporaryDirectory("images")
        let epoch = 1_600_000_000
        let result = try Harness.run(
            ["export", "only", "--store", stack.store, "-o", out + "/image"],
            environment: ["SOURCE_DATE_EPOCH": "\(epoch)"])
        #expect(result.status == 0, "\(result.stderr)")
        let image = bytes(out + "/image")
        let superblockTime =
            image.count > 12 ? image[8..<12].enumerated().reduce(0) { $0 | Int($1.element) << (8 * $1.offset) } : 0
        #expect(superblockTime == epoch)
        let mounted = try KernelMount.squashfs(out + "/image")
        defer { KernelMount.unmount(mounted) }
        let snapshot = try TreeSnapshot(mounted)
        #expect(snapshot.entries["/etc/old"]?.contains("mtime=1500000000") == true)
        #expect(snapshot.entries["/etc/new"]?.contains("mtime=\(epoch)") == true)
        #expect(snapshot.entries["/etc"]?.contains("mtime=\(epoch)") == true)
    }

    /// `SOURCE_DATE_EPOCH=abc` was passed over without a word (the layer's own epoch stood), and
    /// `-5` taken: a time squashfs, whose times are unsigned, cannot hold.
    @Test("A SOURCE_DATE_EPOCH that is no whole number of seconds from 0 to 2^32-1 is refused in one line by export, build and lock")
    func malformedEpoch() throws {
        let stack = try CraftedStack("bad-epoch")
        try stack.layer("only") { t in try t.file("file", "content\n") }
        let out = try Harness.temporaryDirectory("bad-epoch")
        let layer = try Harness.demoLayers() + "/base.yaml"
        for value in ["abc", "-5", "1e9", " 12", "4294967296", "99999999999999999999"] {
            for command in [["export", "only", "-o", out + "/image"], ["build", layer], ["lock", layer]] {
                let result = try Harness.run(command + ["--store", stack.store], environment: ["SOURCE_DATE_EPOCH": value])
                #expect(result.status == 3, "\(command) \(value): \(result.stderr)")
                #expect(
                    result.stderr == "layerctl: SOURCE_DATE_EPOCH is `\(value)`: it must be a whole number of seconds since 1970, "
                        + "from 0 to 4294967295 (or unset)\n", "\(command)")
            }
        }
        #expect(try FileManager.default.contentsOfDirectory(atPath: out).isEmpty)
        #expect(!FileManager.default.fileExists(atPath: stack.store + "/refs/base"))
        for value in ["", "4294967295"] {
            let result = try Harness.run(
                ["export", "only", "--store", stack.store, "-o", out + "/image"], environment: ["SOURCE_DATE_EPOCH": value])
            #expect(result.status == 0, "\(value): \(result.stderr)")
        }
    }

    @Test("An image holds 65,535 owners and groups, and the kernel mounts it; one more is one line naming the entry, with no image written and an older one kept")
    func ownerAndGroupLimit() throws {
        // The root's 0, then an owner and a group of their own for each file: 65,535 ids. The
        // superblock counts them in 16 bits: mksquashfs and gensquashfs write 65,536 as 0, which
        // the kernel refuses to mount.
        let stack = try CraftedStack("ids")
        try stack.layer("full") { t in
            try t.directory("ids")
            for n in 1...32_767 { try t.file("ids/\(n)", owner: (uid_t(n), gid_t(100_000 + n))) }
        }
        let out = try Harness.temporaryDirectory("ids")
        let image = out + "/ids.squashfs"
        _ = try export("full", store: stack.store, to: image, ["--no-block-cache"])
        let mounted = try KernelMount.squashfs(image)
        var wrong: [String] = []
        for n in 1...32_767 {
            var st = stat()
            if lstat(mounted + "/ids/\(n)", &st) != 0 || st.st_uid != n || st.st_gid != 100_000 + n {
                wrong.append("ids/\(n): \(st.st_uid):\(st.st_gid)")
            }
        }
        KernelMount.unmount(mounted)
        #expect(wrong.isEmpty, "\(wrong.count) files with other owners, first \(wrong.prefix(3))")

        try stack.layer("more") { t in try t.file("one-more", owner: (200_000, 0)) }
        let kept = bytes(image)
        let refused = try Harness.run(["export", "more", "--store", stack.store, "-o", image])
        #expect(refused.status == 3, "\(refused.stderr)")
        #expect(
            refused.stderr == "layerctl: the stack has more than 65,535 distinct owners and groups (uids and gids together), "
                + "all that a squashfs image holds: the first past them is the owner 200000 of /one-more; a tar or a folder "
                + "holds them (export --format tar, or dir)\n")
        #expect(bytes(image) == kept, "the older image changed")
        #expect(try FileManager.default.contentsOfDirectory(atPath: out) == ["ids.squashfs"])
        _ = try export("more", store: stack.store, to: out + "/more.tar", ["--format", "tar"])
    }
}
