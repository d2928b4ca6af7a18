import CArchive
import CLayerSupport
import Foundation
import Glibc
import LayerEntries
import LayerShare
import LayerStore
import LayerSupport
import RegistryClient
import Testing

/// Layers as OCI layer blobs: written the same from the same layer, unpacked to the same tree, and
/// a hostile blob refused before anything of it is stored.
@Suite("OCI layer blobs", .serialized, .enabled(if: Harness.canBuild, Harness.cannotBuildReason))
struct OCILayerTests {
    @Test("each demo layer as a zstd or gzip blob: the same bytes twice, and it unpacks to the same tree")
    func roundTrip() throws {
        let layers = try Harness.demoLayers()
        let storeRoot = try Harness.temporaryDirectory("store")
        #expect(try Harness.run(["build", layers + "/gaming.yaml", "--store", storeRoot]).status == 0)
        let store = try Store(root: storeRoot)
        let work = try Harness.temporaryDirectory("blobs")
        for name in ["base", "nvidia", "gaming"] {
            let key = try #require(try store.ref(name))
            let record = try store.record(key)
            let source = ManifestSource(try store.manifest(key, record: record), tree: store.tree(key))
            for compression in OCICompression.allCases {
                var writer = OCILayerWriter()
                let first = try writer.write(source, to: "\(work)/\(name).1.\(compression)", compression: compression)
                let second = try writer.write(source, to: "\(work)/\(name).2.\(compression)", compression: compression)
                #expect(first == second, "\(name) \(compression)")
                #expect(first.mediaType == "application/vnd.oci.image.layer.v1.tar+\(compression)")
                #expect(writer.skippedAttributes.isEmpty)
                if compression == .gzip {
                    // No time in the gzip header (bytes 4 to 7), or the bytes would change every second.
                    let head = try #require(FileManager.default.contents(atPath: "\(work)/\(name).1.gzip")).prefix(8)
                    #expect(Array(head.suffix(4)) == [0, 0, 0, 0])
                }
                let reader = OCILayerReader(blob: "\(work)/\(name).1.\(compression)")
                #expect(try reader.digest() == first.digest)
                #expect(try reader.diffID() == first.diffID)
                let unpacked = "\(work)/\(name)-\(compression)"
                // Over the layers below it, whose names its whiteouts hide.
                let lower = try store.chain(key).dropLast().reversed().map(store.tree)
                #expect(try reader.unpack(into: unpacked, lower: lower) == first.diffID, "the diff_id taken while unpacking")
                #expect(try TreeScan.scan(unpacked).digest == record.treeDigest, "\(name) \(compression)")
            }
        }
        // gaming removes nano: the blob says so the OCI way, as bsdtar lists it.
        let listing = try KernelMount.run("/usr/bin/bsdtar", ["-tf", "\(work)/gaming.1.zstd"])
        #expect(listing.output.split(separator: "\n").contains { $0.hasSuffix("/.wh.nano") }, "\(listing.output)")
    }

    @Test("export --format oci writes the same layout twice, and umoci unpacks it to the tree export --format dir writes")
    func layout() throws {
        let layers = try Harness.demoLayers()
        let store = try Harness.temporaryDirectory("store")
        #expect(try Harness.run(["build", layers + "/gaming.yaml", "--store", store]).status == 0)
        let work = try Harness.temporaryDirectory("layout")
        // umoci 0.4 reads gzip layers only; zstd is the default.
        for (index, compression) in ["gzip", "gzip", "zstd:15"].enumerated() {
            let result = try Harness.run([
                "export", "gaming", "--store", store, "-o", "\(work)/oci-\(index)", "--format", "oci", "--compression", compression,
            ])
            #expect(result.status == 0, "\(result.stderr)")
        }
        let first = try String(contentsOfFile: "\(work)/oci-0/index.json", encoding: .utf8)
        #expect(try String(contentsOfFile: "\(work)/oci-1/index.json", encoding: .utf8) == first)
        #expect(first.contains("\"org.opencontainers.image.ref.name\":\"gaming\""))
        #expect(try String(contentsOfFile: "\(work)/oci-2/index.json", encoding: .utf8) != first)
        let blobs = try FileManager.default.contentsOfDirectory(atPath: "\(work)/oci-0/blobs/sha256")
        #expect(blobs.count == 5, "three layers, a config and a manifest: \(blobs)")
        // An existing layout is never overwritten.
        let again = try Harness.run(["export", "gaming", "--store", store, "-o", "\(work)/oci-0", "--format", "oci"])
        #expect(again.status == 3, "\(again.stderr)")

        #expect(try Harness.run(["export", "gaming", "--store", store, "-o", "\(work)/dir", "--format", "dir"]).status == 0)
        let unpack = try KernelMount.run("/usr/bin/umoci", ["unpack", "--image", "\(work)/oci-0:gaming", "\(work)/bundle"])
        #expect(unpack.status == 0, "\(unpack.output)")
        #expect(try TreeScan.scan("\(work)/bundle/rootfs").digest == TreeScan.scan("\(work)/dir").digest)
    }

    /// OCI has no way to write a name that starts with `.wh.` but as a whiteout: such a file went
    /// out as it was, and came back from a registry as the removal of the file it seems to name.
    @Test("a layer with a file, a folder or a link named .wh.NAME is refused for OCI in one line, naming the layer and the entry")
    func nameThatMeansWhiteout() throws {
        let layers = try Harness.demoLayers()
        let store = try Harness.temporaryDirectory("store")
        let work = try Harness.temporaryDirectory("wh")
        for (name, files, shown, hidden) in [
            ("file", "  - path: /etc/.wh.hostname\n    content: x\n", "/etc/.wh.hostname", "/etc/hostname"),
            ("link", "  - path: /.wh.usr\n    link: usr\n", "/.wh.usr", "/usr"),
            ("bare", "  - path: /etc/.wh.\n    content: x\n", "/etc/.wh.", "/etc/"),
        ] {
            try "from: base\nfiles:\n\(files)".write(toFile: "\(layers)/\(name).yaml", atomically: false, encoding: .utf8)
            #expect(try Harness.run(["build", "\(layers)/\(name).yaml", "--store", store]).status == 0)
            let result = try Harness.run(["export", name, "--store", store, "-o", "\(work)/\(name)", "--format", "oci"])
            #expect(result.status == 3, "\(name): \(result.stderr)")
            #expect(
                result.stderr == "layerctl: layer \(name) holds \(shown), which cannot go into an OCI layer: a name that "
                    + "starts with .wh. is a whiteout there, which every reader would take for the removal of \(hidden); "
                    + "rename it in the layer\n", "\(name)")
            #expect(!FileManager.default.fileExists(atPath: "\(work)/\(name)"))
        }
        // A folder whose name starts so, made by a step: the same.
        try "from: base\nrun:\n  - mkdir /opt/.wh.cache\n".write(toFile: "\(layers)/folder.yaml", atomically: false, encoding: .utf8)
        #expect(try Harness.run(["build", "\(layers)/folder.yaml", "--store", store]).status == 0)
        let folder = try Harness.run(["export", "folder", "--store", store, "-o", "\(work)/folder", "--format", "oci"])
        #expect(folder.status == 3 && folder.stderr.contains("layer folder holds /opt/.wh.cache, which"), "\(folder.stderr)")
        // Their squashfs image holds them as they are.
        let image = work + "/file.squashfs"
        #expect(try Harness.run(["export", "file", "--store", store, "-o", image]).status == 0)
        let listed = try KernelMount.run("/usr/bin/unsquashfs", ["-lln", image, "etc/.wh.hostname"])
        #expect(listed.output.contains("etc/.wh.hostname"), "\(listed.output)")
    }

    @Test("a crafted layer of every kind and shape goes through a blob unchanged")
    func craftedRoundTrip() throws {
        let stack = try CraftedStack("oci")
        // What the whiteouts hide: a blob's whiteout that hides nothing below is left out.
        try stack.layer("below") { tree in
            for index in 0..<40 { try tree.file("gone-\(index)", "g") }
        }
        try stack.layer("odd") { tree in
            try tree.directory("etc")
            try tree.file("etc/b", "bee", mode: 0o4755, owner: (5, 6))
            try tree.hardLink("etc/a", to: "etc/b")  // the second name sorts first
            try tree.file("etc/c", "sea")
            try tree.hardLink("etc/d", to: "etc/c")  // the second name sorts last
            try tree.symlink("etc/abs", to: "/etc/passwd")
            try tree.symlink("etc/rel", to: "../usr/lib")
            try tree.fifo("etc/pipe")
            try tree.device("etc/tty9", character: true, major: 4, minor: 9)
            try tree.device("etc/sda", character: false, major: 8, minor: 0)
            try tree.xattr("etc/c", "user.note", Array("yes".utf8))
            try tree.directory("hidden")
            try tree.file("hidden/kept", "k")
            try tree.opaque("hidden")
            for index in 0..<40 { try tree.whiteout("gone-\(index)") }
            try tree.file([0x6E, 0xFF, 0x6F], Array("not UTF-8".utf8))
            try tree.file("spaces, = and \u{e9}", "x")
            try tree.directory("empty", mode: 0o700, owner: (7, 8))
            // Holes first, inside and last, and data off the pages' edges: the tar carries zeros.
            try tree.sparse(
                "disk.img", size: (8 << 20) + 100,
                pieces: [((1 << 20) + 7, Array(repeating: 0x41, count: 10_000)), (5 << 20, Array(repeating: 0x42, count: 4096))])
        }
        let work = try Harness.temporaryDirectory("crafted-blob")
        var writer = OCILayerWriter()
        let blob = try writer.write(try FolderSource(stack.tree(1)), to: work + "/blob", compression: .zstd)
        let reader = OCILayerReader(blob: work + "/blob")
        #expect(try reader.diffID() == blob.diffID)
        #expect(try reader.unpack(into: work + "/tree", lower: [stack.tree(0)]) == blob.diffID)
        #expect(try TreeScan.scan(work + "/tree").digest == TreeScan.scan(stack.tree(1)).digest)
        // The zeros are holes again: the pages that hold data, and no more.
        var st = stat()
        #expect(stat(work + "/tree/disk.img", &st) == 0 && st.st_size == (8 << 20) + 100)
        #expect(st.st_blocks * 512 <= 6 * 4096, "\(st.st_blocks * 512) bytes allocated")
        let listing = try KernelMount.run("/usr/bin/bsdtar", ["-tf", work + "/blob"])
        #expect(listing.output.contains("hidden/.wh..wh..opq") && listing.output.contains(".wh.gone-39"), "\(listing.output)")
    }

    /// One entry of a crafted tar.
    struct Crafted {
        var name: String
        var type: mode_t = Glibc.S_IFREG
        var data = "x"
        var symlink: String?
        var hardlink: String?
        /// A sparse file's size: `data` is its first bytes, the rest a hole.
        var sparseSize: Int64?
        /// A file of this many bytes of `fill` (zeros unless it says), written out, instead of `data`.
        var zeros: Int64?
        var fill: UInt8 = 0
        /// Extended attributes, as a pax header carries them.
        var attributes: [(name: String, value: String)] = []
        /// A file's data as bytes, instead of `data`.
        var bytes: [UInt8]?
        var mode: mode_t = 0o644
        var owner: (uid: uid_t, gid: gid_t) = (0, 0)
        var mtime: Int = 0
        /// A device node's numbers.
        var device: (major: UInt32, minor: UInt32) = (0, 0)
    }

    /// Writes `entries` as a tar, compressed with zstd when `zstd`.
    static func craft(_ entries: [Crafted], at path: String, zstd: Bool = false) throws {
        let archive = archive_write_new()!
        defer { archive_write_free(archive) }
        archive_write_set_format_pax_restricted(archive)
        // Names are written as their bytes: UTF-8 ones too, whatever the test's locale. (Only
        // then: the option adds a pax header to each entry, and tests cut tars at their offsets.)
        if entries.contains(where: { entry in (entry.name + (entry.hardlink ?? "")).utf8.contains { $0 >= 0x80 } }) {
            archive_write_set_option(archive, "pax", "hdrcharset", "BINARY")
        }
        if zstd { #expect(archive_write_add_filter_zstd(archive) == ARCHIVE_OK) }
        #expect(archive_write_open_filename(archive, path) == ARCHIVE_OK)
        for crafted in entries {
            let header = archive_entry_new()!
            defer { archive_entry_free(header) }
            archive_entry_set_pathname(header, crafted.name)
            archive_entry_set_filetype(header, UInt32(crafted.type))
            archive_entry_set_perm(header, crafted.mode)
            archive_entry_set_uid(header, la_int64_t(crafted.owner.uid))
            archive_entry_set_gid(header, la_int64_t(crafted.owner.gid))
            archive_entry_set_mtime(header, crafted.mtime, 0)
            archive_entry_set_rdevmajor(header, dev_t(crafted.device.major))
            archive_entry_set_rdevminor(header, dev_t(crafted.device.minor))
            if let target = crafted.symlink { archive_entry_set_symlink(header, target) }
            if let target = crafted.hardlink { archive_entry_set_hardlink(header, target) }
            let data = crafted.bytes ?? Array(crafted.data.utf8)
            let size = crafted.type == Glibc.S_IFREG && crafted.hardlink == nil ? data.count : 0
            archive_entry_set_size(header, la_int64_t(crafted.sparseSize ?? Int64(size)))
            if crafted.sparseSize != nil { archive_entry_sparse_add_entry(header, 0, la_int64_t(size)) }
            for attribute in crafted.attributes {
                attribute.value.withCString { archive_entry_xattr_add_entry(header, attribute.name, $0, strlen($0)) }
            }
            if let zeros = crafted.zeros {
                archive_entry_set_size(header, la_int64_t(zeros))
                #expect(archive_write_header(archive, header) == ARCHIVE_OK)
                let chunk = [UInt8](repeating: crafted.fill, count: 1 << 20)
                var left = zeros
                while left > 0 {
                    let count = Int(min(left, Int64(chunk.count)))
                    #expect(archive_write_data(archive, chunk, count) == count)
                    left -= Int64(count)
                }
                continue
            }
            #expect(archive_write_header(archive, header) == ARCHIVE_OK)
            if size > 0 { _ = data.withUnsafeBytes { archive_write_data(archive, $0.baseAddress, size) } }
        }
        archive_write_close(archive)
    }

    @Test("a hostile blob is refused, naming the entry and why, and nothing of it is left")
    func hostile() throws {
        let work = try Harness.temporaryDirectory("hostile")
        let outside = "/tmp/layerctl-oci-owned-\(getpid())"
        let big = String(repeating: "y", count: 4000)
        let cases: [(entries: [Crafted], names: String, why: String)] = [
            ([Crafted(name: outside)], outside, "an absolute name"),
            ([Crafted(name: "../../../../../../..\(outside)")], "..", "a name with . or .."),
            ([Crafted(name: "link", type: Glibc.S_IFLNK, symlink: "/tmp"), Crafted(name: "link/owned")], "link/owned",
             "a name through a symlink, /link"),
            ([Crafted(name: "file"), Crafted(name: "file/below")], "file/below", "a name below a file"),
            ([Crafted(name: "h", hardlink: "../../../../../../../etc/passwd")], "..", "a name with . or .."),
            ([Crafted(name: "h", hardlink: "etc/passwd")], "h", "which is no earlier file of the layer"),
            ([Crafted(name: "dir", type: Glibc.S_IFDIR), Crafted(name: "h", hardlink: "dir")], "h",
             "which is no earlier file of the layer"),
            ([Crafted(name: ".wh..", data: ""), Crafted(name: "x")], ".wh..", "a whiteout of . or .."),
            ([Crafted(name: "etc/.wh...", data: "")], "etc/.wh...", "a whiteout of . or .."),
            ([Crafted(name: ".wh.x", data: ""), Crafted(name: ".wh.x", data: "")], ".wh.x", "a name the layer holds twice"),
            ([Crafted(name: "x"), Crafted(name: "x")], "x", "a name the layer holds twice"),
            ([Crafted(name: "big", data: big)], "big", "its data cannot be read"),
            ([Crafted(name: String(repeating: "d/", count: 1536) + "f")], "d/d/d/…/d/d/d/d/d/d/d/d/d/d/d/f",
             "a name longer than a path in a layer may be (3072 bytes)"),
            // Names and targets longer than Linux holds: the call that makes them failed, quoting
            // all of the name, and not the blob.
            ([Crafted(name: "etc/" + String(repeating: "n", count: 256))], "etc/nnnnnnnn",
             "a name of 256 bytes, longer than a file's name may be (255)"),
            ([Crafted(name: String(repeating: "n", count: 300) + "/f")], "nnnnnnnn",
             "a name of 300 bytes, longer than a file's name may be (255)"),
            ([Crafted(name: ".wh." + String(repeating: "n", count: 256), data: "")], ".wh.nnnnnnnn",
             "a name of 256 bytes, longer than a file's name may be (255)"),
            ([Crafted(name: "s", type: Glibc.S_IFLNK, symlink: String(repeating: "t", count: 4096))], "s",
             "a symlink whose target of 4096 bytes is longer than one may be (4095)"),
            // Device numbers past the kernel's (12 bits of major, 20 of minor): mknod failed with
            // "Invalid argument", exit 8.
            ([Crafted(name: "d", type: Glibc.S_IFCHR, device: (4096, 0))], "d",
             "a device 4096:0, which Linux does not have (majors end at 4095, minors at 1048575)"),
            ([Crafted(name: "d", type: Glibc.S_IFBLK, device: (8, 1 << 20))], "d", "a device 8:1048576, which Linux does not have"),
            ([Crafted(name: "d", type: Glibc.S_IFCHR, device: (UInt32.max, UInt32.max))], "d",
             "a device 4294967295:4294967295, which Linux does not have"),
            // A terabyte in a few hundred bytes of blob: written out, it would fill the disk.
            ([Crafted(name: "sparse", sparseSize: 1 << 40)], "sparse",
             "a sparse file of 1099511627776 bytes, which a layer blob does not hold"),
            // Data the unpack would decompress only to throw away: a whiteout writes no data.
            ([Crafted(name: ".wh.gone", zeros: 1 << 20)], ".wh.gone", "1048576 bytes of data in an entry that is no file"),
            // Refused while the decompression runs chunks ahead of the tar reader, with more to come.
            ([Crafted(name: "big", zeros: 4 << 20), Crafted(name: outside), Crafted(name: "more", zeros: 16 << 20)], outside,
             "an absolute name"),
        ]
        for (index, hostile) in cases.enumerated() {
            let blob = "\(work)/\(index).tar"
            try Self.craft(hostile.entries, at: blob)
            if hostile.why == "its data cannot be read" {
                // The header promises 4000 bytes; the blob ends after 100 of them.
                #expect(truncate(blob, 512 + 512 + 100) == 0)
            }
            let tree = "\(work)/tree-\(index)"
            #expect {
                try OCILayerReader(blob: blob).unpack(into: tree)
            } throws: { error in
                let text = "\(error)"
                return text.contains("hostile entry") && text.contains(hostile.names) && text.contains(hostile.why)
            }
            #expect(!FileManager.default.fileExists(atPath: tree), "case \(index)")
            #expect(!FileManager.default.fileExists(atPath: outside), "case \(index)")
            #expect(!FileManager.default.fileExists(atPath: "/tmp/owned"), "case \(index)")
        }

        // The longest a name and a target may be unpack: 255 bytes (a whiteout's `.wh.` besides),
        // and 4,095; and so does the last device Linux has.
        let longest = String(repeating: "n", count: 255)
        try Self.craft(
            [Crafted(name: "etc/" + longest), Crafted(name: "etc/.wh." + longest, data: ""),
             Crafted(name: "s", type: Glibc.S_IFLNK, symlink: String(repeating: "t", count: 4095)),
             Crafted(name: "d", type: Glibc.S_IFBLK, device: (4095, (1 << 20) - 1))],
            at: work + "/longest.tar")
        #expect(throws: Never.self) { try OCILayerReader(blob: work + "/longest.tar").unpack(into: work + "/longest") }
        #expect(FileManager.default.fileExists(atPath: work + "/longest/etc/" + longest))
        var device = stat()
        #expect(lstat(work + "/longest/d", &device) == 0 && lc_major(UInt64(device.st_rdev)) == 4095 && lc_minor(UInt64(device.st_rdev)) == (1 << 20) - 1)
        var target = [CChar](repeating: 0, count: 8192)
        #expect(readlink(work + "/longest/s", &target, target.count) == 4095)

        // A pax header that claims 512 MiB, which zstd makes of a few kilobytes: libarchive refuses
        // it before reading it into memory, so a stranger's layer cannot take the unpack's memory.
        let paxBomb = """
            import sys
            claimed = 512 << 20
            header = bytearray(512)
            header[0:14] = b"././@PaxHeader"
            for at, field in ((100, b"0000644"), (108, b"0000000"), (116, b"0000000"), (136, b"00000000000")):
                header[at:at + len(field)] = field
            header[124:135] = b"%011o" % claimed
            header[156:157] = b"x"
            header[257:263] = b"ustar\\0"
            header[263:265] = b"00"
            header[148:156] = b" " * 8
            header[148:155] = b"%06o\\0" % sum(header)
            out = sys.stdout.buffer
            out.write(header)
            record = b"%d comment=" % claimed
            out.write(record)
            left = claimed - len(record) - 1
            while left > 0:
                out.write(b"a" * min(left, 1 << 20))
                left -= 1 << 20
            out.write(b"\\n" + bytes(1024))
            """
        let bombed = try KernelMount.run(
            "/bin/sh", ["-c", "python3 -c \"$1\" | zstd -q -3 -c > \"$2\"", "sh", paxBomb, work + "/pax-bomb.tar.zst"])
        #expect(bombed.status == 0, "\(bombed.output)")
        let bombSize = try FileManager.default.attributesOfItem(atPath: work + "/pax-bomb.tar.zst")[.size] as? Int ?? 0
        #expect(bombSize < 1 << 20, "\(bombSize) bytes of blob")
        #expect {
            try OCILayerReader(blob: work + "/pax-bomb.tar.zst").unpack(into: work + "/pax-bomb")
        } throws: { error in
            "\(error)".contains("pax-bomb.tar.zst does not unpack: Special header too large")
        }
        #expect(!FileManager.default.fileExists(atPath: work + "/pax-bomb"))

        // After the tar's end, a writer pads to its record: GNU tar's largest, 1 MiB, unpacks;
        // 9 MiB of zeros more, which zstd makes of a few hundred bytes, is refused.
        try "x".write(toFile: work + "/file", atomically: false, encoding: .utf8)
        let padded = try KernelMount.run("/usr/bin/tar", ["-b", "2048", "-cf", work + "/padded.tar", "-C", work, "file"])
        #expect(padded.status == 0, "\(padded.output)")
        #expect(try FileManager.default.attributesOfItem(atPath: work + "/padded.tar")[.size] as? Int == 1 << 20)
        #expect(throws: Never.self) { try OCILayerReader(blob: work + "/padded.tar").unpack(into: work + "/padded") }
        let trailing = FileHandle(forWritingAtPath: work + "/padded.tar")!
        trailing.seekToEndOfFile()
        trailing.write(Data(count: 9 << 20))
        trailing.closeFile()
        #expect {
            try OCILayerReader(blob: work + "/padded.tar").unpack(into: work + "/trailing")
        } throws: { error in
            "\(error)".contains("holds more than 8388608 bytes after the tar's end")
        }
        #expect(!FileManager.default.fileExists(atPath: work + "/trailing"))

        // A layer is a tar, plain, gzip or zstd. Another compression is refused before anything is
        // unpacked: libarchive would decompress lrzip, grzip and lzop with a program of the host's.
        for (tool, arguments) in [("/usr/bin/xz", ["-k", "-f"]), ("/usr/bin/bzip2", ["-k", "-f"])] {
            #expect(try KernelMount.run(tool, arguments + [work + "/padded.tar"]).status == 0)
        }
        var lrzip = Data("LRZI".utf8) + Data([0, 6]) + Data(count: 58)
        lrzip += try #require(FileManager.default.contents(atPath: work + "/padded.tar"))
        try lrzip.write(to: URL(fileURLWithPath: work + "/padded.tar.lrz"))
        for suffix in ["xz", "bz2", "lrz"] {
            #expect {
                try OCILayerReader(blob: work + "/padded.tar." + suffix).unpack(into: work + "/other-" + suffix)
            } throws: { error in
                "\(error)".contains("padded.tar.\(suffix)") && "\(error)".contains("is no tar, plain, gzip or zstd")
            }
            #expect(!FileManager.default.fileExists(atPath: work + "/other-" + suffix))
        }
    }
}

extension OCILayerTests {
    /// A folder a blob only implies is the folder below it, found by looking at each folder on the
    /// way: a lower blob's symlink on it is a stranger's, and through it the folder of the host it
    /// points at gave the layer its owner, mode and attributes.
    @Test("a folder a blob only implies is the one below, its attributes too, but not inside an opaque folder, and never what a lower symlink points at")
    func impliedFolders() throws {
        let work = try Harness.temporaryDirectory("implied")
        let host = work + "/host"
        try FileManager.default.createDirectory(atPath: host + "/sub", withIntermediateDirectories: true)
        #expect(chown(host + "/sub", 1234, 1234) == 0 && chmod(host + "/sub", 0o700) == 0)
        #expect(setxattr(host + "/sub", "user.secret", "s", 1, 0) == 0)
        try Self.craft(
            [
                Crafted(name: "link", type: Glibc.S_IFLNK, symlink: host),
                Crafted(name: "kept", type: Glibc.S_IFDIR, attributes: [("user.note", "n")], mode: 0o750, mtime: 5),
            ], at: work + "/below.tar")
        try OCILayerReader(blob: work + "/below.tar").unpack(into: work + "/below")
        try Self.craft([Crafted(name: "link/sub/file"), Crafted(name: "kept/file")], at: work + "/above.tar")
        try OCILayerReader(blob: work + "/above.tar").unpack(into: work + "/above", lower: [work + "/below"])
        for folder in ["link", "link/sub"] {
            var st = stat()
            #expect(lstat(work + "/above/" + folder, &st) == 0)
            #expect(st.st_mode == S_IFDIR | 0o755 && st.st_uid == 0 && st.st_gid == 0 && st.st_mtim.tv_sec == 0, "\(folder)")
            #expect(ExtendedAttributes.value(work + "/above/" + folder, "user.secret") == nil, "\(folder)")
        }
        var kept = stat()
        #expect(lstat(work + "/above/kept", &kept) == 0 && kept.st_mode == S_IFDIR | 0o750 && kept.st_mtim.tv_sec == 5)
        #expect(ExtendedAttributes.value(work + "/above/kept", "user.note") == Array("n".utf8))
        // Inside a folder the blob makes opaque, the root here, nothing below shows: the folder is new.
        try Self.craft([Crafted(name: ".wh..wh..opq", data: ""), Crafted(name: "kept/file")], at: work + "/opaque.tar")
        try OCILayerReader(blob: work + "/opaque.tar").unpack(into: work + "/opaque", lower: [work + "/below"])
        #expect(lstat(work + "/opaque/kept", &kept) == 0 && kept.st_mode == S_IFDIR | 0o755 && kept.st_uid == 0)
        #expect(ExtendedAttributes.value(work + "/opaque/kept", "user.note") == nil)
    }

    /// The OCI spec's whiteout hides only what the layers below hold: a blob that whites out a
    /// name it also holds (a squashed image, a layer made by hand) means a name of its own, and a
    /// folder of its own is opaque and new, whatever the order of the entries in the tar.
    @Test("a whiteout of a name the blob also holds, before or after it: the name is the blob's, a folder opaque and new")
    func whiteoutOfItsOwnName() throws {
        let work = try Harness.temporaryDirectory("whiteout-own")
        try Self.craft(
            ["named", "implied"].flatMap { folder in
                [
                    Crafted(name: folder, type: Glibc.S_IFDIR, attributes: [("user.note", "below")], mode: 0o750, mtime: 5),
                    Crafted(name: folder + "/old"),
                ]
            } + [Crafted(name: "file", data: "old"), Crafted(name: "kept")], at: work + "/below.tar")
        try OCILayerReader(blob: work + "/below.tar").unpack(into: work + "/below")
        // The same layer, said without whiteouts: a folder named as the blob leaves it implied.
        let named = Crafted(name: "named", type: Glibc.S_IFDIR, mode: 0o700, mtime: 7)
        try Self.craft(
            [
                named, Crafted(name: "named/.wh..wh..opq", data: ""), Crafted(name: "named/new"),
                Crafted(name: "implied", type: Glibc.S_IFDIR, mode: 0o755), Crafted(name: "implied/.wh..wh..opq", data: ""),
                Crafted(name: "implied/new"), Crafted(name: "file", data: "new"),
            ], at: work + "/meant.tar")
        try OCILayerReader(blob: work + "/meant.tar").unpack(into: work + "/meant", lower: [work + "/below"])
        let meant = try Self.listing(work + "/meant", implied: [])
        let out = { (name: String) in Crafted(name: ".wh." + name, data: "") }
        let orders: [(String, [Crafted])] = [
            ("whiteouts first", [out("named"), named, Crafted(name: "named/new"), out("implied"), Crafted(name: "implied/new"),
                                 out("file"), Crafted(name: "file", data: "new")]),
            ("whiteouts last", [Crafted(name: "named/new"), named, Crafted(name: "implied/new"), Crafted(name: "file", data: "new"),
                                out("named"), out("implied"), out("file")]),
            ("whiteouts between", [named, out("named"), Crafted(name: "named/new"), Crafted(name: "implied/new"), out("implied"),
                                   Crafted(name: "file", data: "new"), out("file")]),
        ]
        for (order, entries) in orders {
            let tree = work + "/" + order.replacingOccurrences(of: " ", with: "-")
            try Self.craft(entries, at: tree + ".tar")
            try OCILayerReader(blob: tree + ".tar").unpack(into: tree, lower: [work + "/below"])
            let found = try Self.listing(tree, implied: [])
            let difference = Self.difference(found, meant)
            #expect(difference == nil, "\(order): \(difference ?? "")")
        }
        // The kernel's merge of it: each folder holds only the blob's entries, with the blob's metadata.
        let merged = try KernelMount.overlay(lowerdir: work + "/whiteouts-first:" + work + "/below")
        defer { KernelMount.unmount(merged) }
        for folder in ["named", "implied"] {
            #expect(try FileManager.default.contentsOfDirectory(atPath: merged + "/" + folder) == ["new"], "\(folder)")
            #expect(ExtendedAttributes.value(merged + "/" + folder, "user.note") == nil, "\(folder)")
        }
        var st = stat()
        #expect(lstat(merged + "/named", &st) == 0 && st.st_mode == S_IFDIR | 0o700 && st.st_mtim.tv_sec == 7)
        #expect(lstat(merged + "/implied", &st) == 0 && st.st_mode == S_IFDIR | 0o755 && st.st_mtim.tv_sec == 0)
        #expect(try String(contentsOfFile: merged + "/file", encoding: .utf8) == "new")
        #expect(try FileManager.default.contentsOfDirectory(atPath: merged).sorted() == ["file", "implied", "kept", "named"])
    }

    /// What a blob's entries meet below is the lower trees merged as overlayfs merges them: a
    /// folder a lower tree makes opaque hides what the trees under it hold, from the folders a
    /// blob implies and from its whiteouts. A whiteout that hides nothing is left out: in a folder
    /// no lower tree has, the kernel lists it and then finds nothing there (`ls` shows
    /// `c?????????`). Unpacked here and pulled through the confined child, which cannot read the
    /// lower trees' opaque markers and is handed the records' lists: the same trees.
    @Test("whiteouts that hide nothing below are left out, and a lower tree's opaque folder hides what is under it, in this process and in a pull")
    func whiteoutsHidingNothing() throws {
        let work = try Harness.temporaryDirectory("whiteout-nothing")
        let blobs = [
            [
                Crafted(name: "a", type: Glibc.S_IFDIR, mode: 0o750), Crafted(name: "a/x"), Crafted(name: "d/deep/y"),
                Crafted(name: "d/deep", type: Glibc.S_IFDIR, attributes: [("user.note", "bottom")], mode: 0o700, mtime: 9),
                Crafted(name: "f"), Crafted(name: "o/w"),
            ] + (0..<100).map { Crafted(name: "many/m\($0)") },
            // Opaque folders: what the bottom blob holds in `a` and `d` is hidden from here up.
            [Crafted(name: "a/.wh..wh..opq", data: ""), Crafted(name: "a/z"), Crafted(name: "d/.wh..wh..opq", data: "")],
            [
                Crafted(name: "a/.wh.x", data: ""), Crafted(name: "a/.wh.z", data: ""), Crafted(name: "ghost/.wh.g", data: ""),
                Crafted(name: ".wh.f", data: ""), Crafted(name: ".wh.nothing", data: ""), Crafted(name: "d/deep/new"),
                Crafted(name: "o/.wh..wh..opq", data: ""), Crafted(name: "o/.wh.w", data: ""),
            ]
                // A folder of many lookups: the first are lstats in each copy below, the rest in
                // its names, listed once. Every tenth hides nothing.
                + (0..<100).map { Crafted(name: $0 % 10 == 9 ? "many/.wh.g\($0)" : "many/.wh.m\($0)", data: "") },
        ]
        var trees: [String] = []
        for (index, entries) in blobs.enumerated() {
            try Self.craft(entries, at: "\(work)/\(index).tar")
            try OCILayerReader(blob: "\(work)/\(index).tar").unpack(into: "\(work)/\(index)", lower: trees.reversed())
            trees.append("\(work)/\(index)")
        }
        let top = try Self.listing(work + "/2", implied: [])
        // Kept: the whiteouts of z (the middle blob's) and f. Left out: x (under the middle
        // blob's opaque a), g (in a folder nothing below has), nothing, w (under the blob's own
        // opaque o). d/deep is new: the bottom blob's is under the middle blob's opaque d.
        let whiteouts = top.filter { $0.hasSuffix(" marker") && !$0.contains(".wh..wh..opq") }
        let many = (0..<100).filter { $0 % 10 != 9 }.map { "many/.wh.m\($0) marker" }
        #expect(whiteouts.sorted() == ([".wh.f marker", "a/.wh.z marker"] + many).sorted(), "\(top)")
        #expect(try FileManager.default.contentsOfDirectory(atPath: work + "/2/ghost").isEmpty)
        var st = stat()
        #expect(lstat(work + "/2/d/deep", &st) == 0 && st.st_mode == S_IFDIR | 0o755 && st.st_mtim.tv_sec == 0)
        #expect(ExtendedAttributes.value(work + "/2/d/deep", "user.note") == nil)
        // The kernel's merge: every name a folder lists can be looked at.
        let merged = try KernelMount.overlay(lowerdir: trees.reversed().joined(separator: ":"))
        defer { KernelMount.unmount(merged) }
        let seen = try Self.listing(merged, implied: [], folderTimes: false)
        let shown = ["a", "d", "d/deep", "d/deep/new", "ghost", "many", "o"] + (0..<10).map { "many/m\($0 * 10 + 9)" }
        #expect(seen.map { String($0.prefix { $0 != " " }) }.sorted() == shown.sorted(), "\(seen)")
        // A pull: each blob unpacked in the confined child, the layers below handed over.
        let registry = try RegistryServer()
        defer { registry.stop() }
        let reference = try ImageReference(parsing: "\(registry.host)/steve/whiteouts:1")
        try ShareTests.pushImage(layers: (0..<3).map { "\(work)/\($0).tar" }, to: reference)
        let storeRoot = work + "/store"
        let pulled = try Harness.run(["pull", reference.description, "--name", "pulled", "--store", storeRoot])
        #expect(pulled.status == 0, "\(pulled.stderr)")
        let store = try Store(root: storeRoot)
        let keys = try store.chain(try #require(try store.ref("pulled")))
        #expect(keys.count == 3)
        for (index, key) in keys.enumerated() {
            #expect(try store.record(key).treeDigest == TreeScan.scan(trees[index]).digest, "blob \(index)")
        }
    }

    /// A blob whose root is opaque (`./.wh..wh..opq`) hides every layer below it, as an export
    /// of the stack has it (`OverlayMerge`) and the OCI spec says. overlayfs ignores the marker
    /// on a layer's root, so a build or a shell on the stack showed the layers below, and built
    /// on a tree the image it was exported to did not hold.
    @Test("a blob with an opaque root hides the layers below it from a build and a shell on it, as from its export")
    func opaqueRoot() throws {
        let registry = try RegistryServer()
        defer { registry.stop() }
        let work = try Harness.temporaryDirectory("opaque-root")
        let shell = try #require(FileManager.default.contents(atPath: "/bin/busybox"))
        try Self.craft(
            [Crafted(name: "bin/sh", bytes: Array(shell), mode: 0o755), Crafted(name: "etc/below", data: "hidden")],
            at: work + "/0.tar")
        try Self.craft(
            [
                Crafted(name: ".wh..wh..opq", data: ""), Crafted(name: "bin/sh", bytes: Array(shell), mode: 0o755),
                Crafted(name: "etc/top", data: "shown"),
            ], at: work + "/1.tar")
        let reference = try ImageReference(parsing: "\(registry.host)/steve/opaque-root:1")
        try ShareTests.pushImage(layers: [work + "/0.tar", work + "/1.tar"], to: reference)
        let store = work + "/store"
        #expect(try Harness.run(["pull", reference.description, "--name", "image", "--store", store]).status == 0)
        let listed = "for f in below top; do if test -e /etc/$f; then echo $f; fi; done"
        let shown = try Harness.run(["shell", "image", "--store", store, "--", "/bin/sh", "-c", listed])
        #expect(shown.status == 0 && shown.stdout == "top\n", "\(shown.stdout) \(shown.stderr)")
        // A record without the list of opaque folders (written before it was kept): the layer's
        // manifest says the same.
        let top = try #require(try Store(root: store).ref("image"))
        var record = try Store(root: store).record(top)
        #expect(record.opaqueDirectories == [""])
        record.opaqueDirectories = nil
        try record.encoded().write(to: URL(fileURLWithPath: "\(store)/layers/\(top)/layer.json"))
        #expect(try Store(root: store).opaqueFolders(top) == [[]])
        let again = try Harness.run(["shell", "image", "--store", store, "--", "/bin/sh", "-c", listed])
        #expect(again.status == 0 && again.stdout == "top\n", "\(again.stdout) \(again.stderr)")
        try "from: \(reference)\nrun:\n  - \(listed) > /seen\n".write(toFile: work + "/on.yaml", atomically: false, encoding: .utf8)
        let built = try Harness.run(["build", work + "/on.yaml", "--store", store, "-o", work + "/on.sqfs"])
        #expect(built.status == 0, "\(built.stderr)")
        let key = try #require(try Store(root: store).ref("on"))
        #expect(try String(contentsOfFile: Store(root: store).tree(key) + "/seen", encoding: .utf8) == "top\n")
        let image = try KernelMount.run("/usr/bin/unsquashfs", ["-lc", work + "/on.sqfs"])
        #expect(image.output.contains("etc/top") && !image.output.contains("etc/below"), "\(image.output)")
    }

    /// ext4 keeps a file's attributes in one block unless made with `ea_inode`: a blob's larger
    /// value failed a pull with "No space left on device", exit 8, as if the disk were full.
    @Test("an attribute larger than the store's filesystem holds on one file: the blob's fault, in one line naming the entry, in this process and in a pull")
    func attributeTooLarge() throws {
        let work = try Harness.temporaryDirectory("attribute-large")
        let value = String(repeating: "v", count: 60_000)
        let probe = work + "/probe"
        #expect(FileManager.default.createFile(atPath: probe, contents: nil))
        guard setxattr(probe, "user.probe", value, value.utf8.count, 0) != 0 else {
            print("attributeTooLarge: this filesystem holds 60,000-byte attributes; nothing to refuse")
            return
        }
        let registry = try RegistryServer()
        defer { registry.stop() }
        for name in ["user.big", "trusted.big"] {
            let blob = work + "/\(name).tar"
            try Self.craft([Crafted(name: "etc/small", attributes: [(name, "s")]), Crafted(name: "etc/f", attributes: [(name, value)])], at: blob)
            if name.hasPrefix("user.") {
                #expect {
                    try OCILayerReader(blob: blob).unpack(into: work + "/tree", lower: [])
                } throws: { error in
                    "\(error)".contains("gives /etc/f the attribute user.big of 58.6 KiB, more than the store's filesystem holds on one file")
                }
            }
            try Self.expectPullRefused(
                blob, from: registry, as: "steve/large:\(name)", into: work + "/store",
                saying: "gives /etc/f the attribute \(name) of 58.6 KiB")
        }
    }

    /// An attribute the kernel or the store's filesystem refuses failed a pull with "set attribute
    /// foo.bar on /f failed: Operation not supported", exit 8; a name longer than Linux takes was
    /// said to be a value too large, quoting all of it.
    @Test("an attribute the store's filesystem does not take: the blob's fault, in one line naming the entry and the attribute")
    func attributeNotTaken() throws {
        let work = try Harness.temporaryDirectory("attribute-not-taken")
        let long = "user." + String(repeating: "a", count: 300)
        let cases: [(name: String, value: String, says: String)] = [
            ("foo.bar", "v", "gives /etc/f the attribute foo.bar, which the store's filesystem does not take (Operation not supported)"),
            ("system.foo", "v", "the attribute system.foo, which the store's filesystem does not take (Operation not supported)"),
            ("user.", "v", "the attribute user., which the store's filesystem does not take (Invalid argument)"),
            // A file capability the kernel cannot read.
            ("security.capability", "garbage", "the attribute security.capability, which the store's filesystem does not take"),
            (long, "v", "gives /etc/f an attribute named user.aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa…aaaaaaaaaaaaaaaaaaaaaaaa, "
                + "of 305 bytes, longer than an attribute's name may be (255)"),
        ]
        for (index, attribute) in cases.enumerated() {
            let blob = work + "/\(index).tar"
            try Self.craft([Crafted(name: "etc/f", attributes: [(attribute.name, attribute.value)])], at: blob)
            #expect {
                try OCILayerReader(blob: blob).unpack(into: work + "/tree-\(index)", lower: [])
            } throws: { error in
                error is LayerBlobError && "\(error)".contains(attribute.says) && !"\(error)".contains(long)
            }
        }
        // In a pull: set by the confined unpack, and a `trusted.*` one by layerctl once it is gone.
        let registry = try RegistryServer()
        defer { registry.stop() }
        for (tag, name) in [("user", "foo.bar"), ("trusted", "trusted." + String(repeating: "a", count: 300))] {
            let blob = work + "/\(tag).tar"
            try Self.craft([Crafted(name: "etc/f", attributes: [(name, "v")])], at: blob)
            try Self.expectPullRefused(
                blob, from: registry, as: "steve/attribute:\(tag)", into: work + "/store-\(tag)",
                saying: tag == "user" ? "the attribute foo.bar, which the store's filesystem does not take" : "longer than an attribute's name may be (255)")
        }
    }

    /// Pushes `blob` as an image of one layer and pulls it into the store at `store`: the pull must
    /// fail in one line, exit 3, that names the blob and says `saying`, and leave nothing.
    static func expectPullRefused(
        _ blob: String, from registry: RegistryServer, as name: String, into store: String, saying: String
    ) throws {
        let reference = try ImageReference(parsing: "\(registry.host)/\(name)")
        try ShareTests.pushImage(layers: [blob], to: reference)
        let pull = try Harness.run(["pull", reference.description, "--store", store])
        #expect(pull.status == 3, "\(pull.stderr)")
        #expect(pull.stderr.contains("layer blob sha256:") && pull.stderr.contains(saying), "\(pull.stderr)")
        #expect(pull.stderr.split(separator: "\n").count == 1, "\(pull.stderr)")
        #expect(try Store(root: store).keys().isEmpty)
        #expect(try FileManager.default.contentsOfDirectory(atPath: store + "/tmp").isEmpty)
    }

    /// ext4 holds 65,000 names of one file, and a blob gives a file a name more in 512 bytes of
    /// tar: a pull of one with more failed "link … failed: Too many links", exit 8, as if the
    /// system had failed.
    @Test("more hard links to one file than the store's filesystem holds: the blob's fault, in one line naming the file, in this process and in a pull")
    func hardLinksTooMany() throws {
        let work = try Harness.temporaryDirectory("links-many")
        let blob = work + "/links.tar.zst"
        let names = 70_000
        try Self.craft(
            [Crafted(name: "etc/f")] + (0..<names).map { Crafted(name: "l/\($0)", hardlink: "etc/f") }, at: blob, zstd: true)
        do {
            try OCILayerReader(blob: blob).unpack(into: work + "/tree", lower: [])
            var st = stat()
            #expect(lstat(work + "/tree/etc/f", &st) == 0 && st.st_nlink == nlink_t(names + 1))
            print("hardLinksTooMany: this filesystem holds \(names + 1) names of one file; nothing to refuse")
            return
        } catch {
            #expect(error is LayerBlobError, "\(error)")
            // The names the file had when a link failed: 65000 on ext4.
            let said = "\(error)"
            #expect(
                said.contains("gives /etc/f more names (hard links) than the ")
                    && said.hasSuffix(" the store's filesystem holds for one file"), "\(said)")
        }
        let registry = try RegistryServer()
        defer { registry.stop() }
        try Self.expectPullRefused(
            blob, from: registry, as: "steve/links:many", into: work + "/store", saying: "gives /etc/f more names (hard links)")
    }

    /// A pull hands each confined unpack the opaque folders of every layer below as such an index,
    /// written once a pull: lists decoded whole for every layer made a pull grow with the square of
    /// its layers (`Benchmarks/deep-pull.sh`).
    @Test("an opaque folder index answers as the list it was written from; a damaged one is refused, not read past its end")
    func opaqueFolderIndex() throws {
        let work = try Harness.temporaryDirectory("opaque-index")
        var random = SystemRandomNumberGenerator()
        let alphabet: [[UInt8]] = [[0x61], [0x62], [0x61, 0x62], [0x2E, 0x77, 0x68], [0xC3, 0xA9], [0xFF], [0x20], [0x0A]]
        func name() -> [UInt8] {
            (0..<Int.random(in: 1...4, using: &random)).map { _ in alphabet.randomElement(using: &random)! }
                .reduce(into: []) { path, part in path += (path.isEmpty ? [] : [0x2F]) + part }
        }
        let lists: [[[UInt8]]] = [
            [], [[]], [[], [0x61]], [[0x61], [0x61, 0x2F, 0x62], [0x61, 0x62], [0x61]],
            (0..<2_000).map { _ in name() },
        ]
        for (number, folders) in lists.enumerated() {
            let path = work + "/\(number)"
            try OpaqueFolderIndex.write(folders, to: path)
            let index = try OpaqueFolderIndex(path: path)
            let expected = Set(folders)
            #expect(index.count == expected.count)
            // Every name it holds, and names beside them: each prefix, each with a byte more.
            var queries = expected.union([[], [0x61], [0x7A], [0xFF, 0xFF]])
            for folder in expected {
                queries.insert(Array(folder.dropLast()))
                queries.insert(folder + [0x00])
                queries.insert(folder + [0x2F, 0x61])
            }
            for _ in 0..<500 { queries.insert(name()) }
            let wrong = queries.filter { index.contains($0) != expected.contains($0) }
            #expect(wrong.isEmpty, "index \(number): \(wrong.prefix(5).map { RawPath.display($0) })")
        }
        // Cut short, or a count larger than the file holds: refused as it opens.
        let whole = try Data(contentsOf: URL(fileURLWithPath: work + "/4"))
        try whole.prefix(30).write(to: URL(fileURLWithPath: work + "/short"))
        #expect(throws: SystemError.self) { try OpaqueFolderIndex(path: work + "/short") }
        var counted = whole.prefix(2_000)
        counted[24] = 0xFF
        try counted.write(to: URL(fileURLWithPath: work + "/counted"))
        #expect(throws: SystemError.self) { try OpaqueFolderIndex(path: work + "/counted") }
        try Data("not an index at all, but long enough".utf8).write(to: URL(fileURLWithPath: work + "/other"))
        #expect(throws: SystemError.self) { try OpaqueFolderIndex(path: work + "/other") }
        // Offsets that point past the end are names of no bytes, never a read outside the map.
        var offsets = whole
        for slot in 0..<10 { offsets.replaceSubrange(32 + 8 * slot..<40 + 8 * slot, with: [UInt8](repeating: 0xFF, count: 8)) }
        try offsets.write(to: URL(fileURLWithPath: work + "/offsets"))
        let damaged = try OpaqueFolderIndex(path: work + "/offsets")
        for folder in Set(lists[4]).prefix(200) { _ = damaged.contains(folder) }
    }

    /// The attributes a confined unpack hands back (`DeferredAttribute`) are set by layerctl on a
    /// tree that process wrote: never through a symlink it left, and only what an unpack defers.
    @Test("attributes handed back by an unpack: set without following a symlink, and only trusted.* or a folder's opaque marker")
    func deferredAttributes() throws {
        let work = try Harness.temporaryDirectory("deferred")
        let tree = work + "/tree", outside = work + "/outside"
        for folder in [tree, tree + "/etc", outside] { try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true) }
        #expect(FileManager.default.createFile(atPath: tree + "/etc/hosts", contents: Data("x".utf8)))
        #expect(FileManager.default.createFile(atPath: outside + "/file", contents: Data("x".utf8)))
        try FileManager.default.createSymbolicLink(atPath: tree + "/link", withDestinationPath: outside)
        try FileManager.default.createSymbolicLink(atPath: tree + "/etc/file-link", withDestinationPath: outside + "/file")
        func attribute(_ path: String, _ name: String) -> String? {
            var value = [UInt8](repeating: 0, count: 256)
            let count = lgetxattr(path, name, &value, value.count)
            return count < 0 ? nil : String(decoding: value[0..<count], as: UTF8.self)
        }
        func deferred(_ path: String, _ name: String, _ value: String) -> DeferredAttribute {
            DeferredAttribute(path: Array(path.utf8), name: Array(name.utf8), value: Array(value.utf8))
        }
        try DeferredAttribute.apply(
            [deferred("etc", "trusted.overlay.opaque", "y"), deferred("etc/hosts", "trusted.note", "a"), deferred("", "trusted.root", "r"),
             deferred("etc/file-link", "trusted.note", "on the link")],
            in: tree, blob: "blob")
        #expect(attribute(tree + "/etc", "trusted.overlay.opaque") == "y")
        #expect(attribute(tree + "/etc/hosts", "trusted.note") == "a")
        #expect(attribute(tree, "trusted.root") == "r")
        #expect(attribute(tree + "/etc/file-link", "trusted.note") == "on the link", "set on the symlink itself")
        #expect(attribute(outside + "/file", "trusted.note") == nil, "followed a symlink")
        let refused: [(DeferredAttribute, String)] = [
            (deferred("link/file", "trusted.note", "b"), "open the folder"),  // through a symlink the unpack left
            (deferred("link", "trusted.overlay.opaque", "y"), "no folder"),
            (deferred("etc/hosts", "trusted.overlay.opaque", "y"), "no folder"),
            (deferred("etc", "trusted.overlay.redirect", "/x"), "which no unpack sets"),
            (deferred("etc", "trusted.overlay.opaque", "x"), "which no unpack sets"),
            (deferred("etc/hosts", "security.capability", "c"), "which no unpack sets"),
            (deferred("etc/hosts", "user.note", "u"), "which no unpack sets"),
            (deferred("etc/../link/file", "trusted.note", "b"), "which no layer entry is named"),
        ]
        for (attribute, why) in refused {
            #expect(throws: (any Error).self, "\(attribute)") { try DeferredAttribute.apply([attribute], in: tree, blob: "blob") }
            do { try DeferredAttribute.apply([attribute], in: tree, blob: "blob") } catch {
                #expect("\(error)".contains(why), "\(error)")
            }
        }
        #expect(attribute(outside, "trusted.overlay.opaque") == nil && attribute(outside + "/file", "trusted.note") == nil)
        #expect(attribute(tree + "/etc", "trusted.overlay.redirect") == nil)
    }
}
