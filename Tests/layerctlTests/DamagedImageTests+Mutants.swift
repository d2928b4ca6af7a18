import CLayerSupport
import Foundation
import Glibc
import Testing

/// Random damage, beyond the cases above: an image is a file anyone may hand over (`stage FILE`,
/// `vm FILE`, `diff A B`), and `diff` reads all of it. Mutants of three images of a tree with every
/// kind of entry (files of several blocks, fragments, hard links whose names sort either way, a
/// symlink, a FIFO, a device, extended attributes, an empty folder), one with its metadata stored
/// uncompressed so that a change lands on a field, one compressed with zstd as layerctl writes, one
/// with xz as archiso does (each compressor's blocks go through the kernel-decoder checks):
/// bytes set at random or to values that break arithmetic (in the superblock, the tables, anywhere),
/// the file cut short. Whatever a mutant is, `diff` against the tree ends of itself within a minute,
/// not by a signal: the same (exit 0) only where the kernel reads the image as the tree too,
/// differences (exit 1), or one line that names the image (exit 3 or 7). The mutants come from a
/// fixed seed.
extension DamagedImageTests {
    /// How many mutants each image gets.
    static let mutants = 150

    /// The tree: what a system holds, small.
    func makeTree() throws -> String {
        let source = try Harness.temporaryDirectory("mutants") + "/src"
        for folder in ["usr/bin", "usr/lib", "etc/empty", "var/log"] {
            try FileManager.default.createDirectory(atPath: source + "/" + folder, withIntermediateDirectories: true)
        }
        var random = MutationTests.Random(state: 42)
        let big = (0..<(300 << 10)).map { _ in UInt8(truncatingIfNeeded: random.next()) }
        try Data(big).write(to: URL(fileURLWithPath: source + "/usr/lib/libbig.so"))
        try Data(big.prefix(5000)).write(to: URL(fileURLWithPath: source + "/usr/lib/libsmall.so"))
        try "#!/bin/sh\necho hi\n".write(toFile: source + "/usr/bin/zz", atomically: false, encoding: .utf8)
        #expect(link(source + "/usr/bin/zz", source + "/usr/bin/aa") == 0)
        #expect(symlink("../lib/libbig.so", source + "/usr/bin/link") == 0)
        #expect(mkfifo(source + "/var/log/fifo", 0o600) == 0)
        #expect(mknod(source + "/var/log/null", S_IFCHR | 0o666, Device.make(1, 3)) == 0)
        try "name\n".write(toFile: source + "/etc/hostname", atomically: false, encoding: .utf8)
        #expect(lsetxattr(source + "/etc/hostname", "user.note", "kept", 4, 0) == 0)
        #expect(chmod(source + "/usr/bin/zz", 0o755) == 0)
        return source
    }

    /// One to four changes of `image`: a byte anywhere, a byte of the superblock or of the tables
    /// after the data, a 16-, 32- or 64-bit field set to a value that breaks arithmetic, or the file
    /// cut short.
    static func damage(_ image: Image, _ random: inout MutationTests.Random) -> Image {
        var mutant = image
        let tables = image.inodeTable
        let hostile: [UInt64] = [
            0, 1, 0xFF, 0xFFFF, 0x7FFF_FFFF, 0xFFFF_FFFF, 0x8000_0000_0000_0000, .max, UInt64(image.bytes.count),
        ]
        for _ in 0...random.below(4) where mutant.bytes.count > 96 {
            let count = mutant.bytes.count
            switch random.below(5) {
            case 0: mutant.bytes[random.below(count)] = UInt8(truncatingIfNeeded: random.next())
            case 1: mutant.bytes[random.below(96)] = UInt8(truncatingIfNeeded: random.next())
            case 2:
                mutant.bytes[min(count - 1, tables + random.below(max(1, count - tables)))] = UInt8(
                    truncatingIfNeeded: random.next())
            case 3:
                let width = [2, 4, 8][random.below(3)]
                let region = random.below(2) == 0 ? 0..<96 : min(tables, count)..<count
                let at = region.lowerBound + random.below(max(1, region.count - width)) / width * width
                let value = hostile[random.below(hostile.count)]
                for index in 0..<width where at + index < count {
                    mutant.bytes[at + index] = UInt8(truncatingIfNeeded: value >> (8 * index))
                }
            default: mutant.bytes.removeLast(random.below(count - 96) + 1)
            }
        }
        return mutant
    }

    @Test(
        "random mutants of images, metadata stored plain, zstd and xz: diff ends of itself, the same only where the kernel agrees, or one line"
    )
    func randomMutants() throws {
        let source = try makeTree()
        let folder = try Harness.temporaryDirectory("mutant-images")
        var outcomes: [String: Int] = [:]
        let forms = [("plain", ["-noI", "-noD", "-noF", "-noX"]), ("zstd", ["-comp", "zstd"]), ("xz", ["-comp", "xz"])]
        for (form, options) in forms {
            let path = folder + "/\(form).squashfs"
            let made = try KernelMount.run(
                "/usr/bin/mksquashfs",
                [source, path, "-quiet", "-no-progress", "-mkfs-time", "0", "-b", "131072"] + options)
            #expect(made.status == 0, "\(made.output)")
            #expect(try kernelDisagreement(path, with: source) == nil, "\(form) as made")
            let image = Image(bytes: [UInt8](try #require(FileManager.default.contents(atPath: path))))
            var random = MutationTests.Random(state: ["plain": 7, "zstd": 8, "xz": 9][form] ?? 0)
            for number in 0..<Self.mutants {
                let mutant = Self.damage(image, &random)
                let mutantPath = folder + "/mutant.squashfs"
                try Data(mutant.bytes).write(to: URL(fileURLWithPath: mutantPath))
                let result = try KernelMount.run(
                    "/usr/bin/timeout", ["-s", "KILL", "60", Harness.executable, "diff", mutantPath, source])
                let what = "\(form) mutant \(number)"
                switch result.status {
                case 0:
                    outcomes["the same", default: 0] += 1
                    if let disagreement = try kernelDisagreement(mutantPath, with: source) {
                        Issue.record("\(what): diff says the same, and \(disagreement)")
                        try? FileManager.default.copyItem(
                            atPath: mutantPath, toPath: folder + "/\(form)-\(number).squashfs")
                    }
                case 1: outcomes["differences", default: 0] += 1
                case 3, 7:
                    outcomes["refused", default: 0] += 1
                    #expect(
                        result.output.split(separator: "\n").count == 1 && result.output.contains(mutantPath)
                            && result.output.utf8.count <= 1024,
                        "\(what): \(result.output)")
                default:
                    Issue.record(
                        "\(what): exit \(result.status) (124 and above: killed after a minute, or by a signal): \(result.output.prefix(2000))"
                    )
                    try? FileManager.default.copyItem(
                        atPath: mutantPath, toPath: folder + "/\(form)-\(number).squashfs")
                }
            }
        }
        print(
            "DamagedImageTests.randomMutants: \(outcomes.sorted { $0.key < $1.key }.map { "\($0.value) \($0.key)" }.joined(separator: ", "))"
        )
        #expect((outcomes["refused"] ?? 0) > Self.mutants / 2, "most damage is found: \(outcomes)")
    }

    /// Each rule the random mutants found, on its own: the image is refused in one line that says
    /// why, and the kernel does read it otherwise (or not at all), so the rule is no stricter than
    /// the kernel.
    @Test("each kind of image the kernel reads otherwise is refused, saying why")
    func kernelReadsOtherwise() throws {
        let source = try makeTree()
        let path = try Harness.temporaryDirectory("kernel-otherwise") + "/plain.squashfs"
        let made = try KernelMount.run(
            "/usr/bin/mksquashfs",
            [source, path, "-noI", "-noD", "-noF", "-noX", "-quiet", "-no-progress", "-mkfs-time", "0"])
        #expect(made.status == 0, "\(made.output)")
        let image = Image(bytes: [UInt8](try #require(FileManager.default.contents(atPath: path))))
        func set32(_ image: inout Image, _ at: Int, _ value: Int) {
            image.set16(at, value & 0xFFFF)
            image.set16(at + 2, value >> 16)
        }
        func inode(_ name: String) throws -> Int { image.inode(atOffset: image.u16(try image.entry(name))) }
        let used = image.u64(40)
        var cases: [(String, Image)] = []
        // The root's listing: one header (count - 1, then where its inodes are), then etc, usr, var.
        var header = image
        let count = try image.entry("etc") - 12
        header.set16(count, image.u16(count) + 50)
        cases.append(("/'s listing has a header that promises 50 more entries than its size holds", header))
        // A folder's inode: the common 16 bytes, its block, then its link count.
        var folder = image
        set32(&folder, try inode("empty") + 20, 5)
        cases.append(("/etc/empty has a link count of 5, where its 0 folders make 2", folder))
        // aa and zz share an extended file inode (two names): its link count after three 64-bit fields.
        var file = image
        set32(&file, try inode("aa") + 40, 3)
        cases.append(("/usr/bin/aa has a link count of 3, and 2 names in the image", file))
        // libbig.so's first block, stored uncompressed (bit 24), with bit 25 set as well.
        var block = image
        let first = try inode("libbig.so") + 32
        set32(&block, first, image.u32(first) | 1 << 25)
        cases.append(("/usr/lib/libbig.so lists a data block of 33685504 bytes", block))
        // The fragment table: its index points at one metadata block (a 2-byte header, then 16 bytes
        // an entry: where the block is, then its size). Every tail here is in the first block.
        var fragment = image
        let entrySize = image.u64(image.u64(80)) + 2 + 8
        set32(&fragment, entrySize, image.u32(entrySize) | 1 << 25)
        cases.append(("/etc/hostname has its tail in a fragment block of", fragment))
        // Where that block starts, its top bit set: past the image's end (libsquashfs's read failed
        // as an input/output error, exit 8, as if the disk had).
        var fragmentStart = image
        let entryStart = image.u64(image.u64(80)) + 2
        fragmentStart.set16(entryStart + 6, image.u16(entryStart + 6) | 0x8000)
        cases.append(("/etc/hostname has its tail in a fragment block that ends past the image's", fragmentStart))
        // libbig.so's blocks, starting where the image ends.
        var blocksStart = image
        set32(&blocksStart, try inode("libbig.so") + 16, used)
        cases.append(("/usr/lib/libbig.so's data blocks end past the image's \(used) bytes", blocksStart))
        // libsmall.so, 5000 bytes, is all tail: its basic inode names the fragment block after the
        // common 16 bytes and where its blocks start.
        var index = image
        set32(&index, try inode("libsmall.so") + 20, 5)
        cases.append(("/usr/lib/libsmall.so has its tail in fragment block 5, of 1 block in the image", index))
        let decoders = try decoderCases(of: source)
        cases += decoders.refused
        for (what, alike) in decoders.alike {
            let written = try Harness.temporaryDirectory("kernel-otherwise") + "/alike.squashfs"
            try Data(alike.bytes).write(to: URL(fileURLWithPath: written))
            let same = try KernelMount.run(Harness.executable, ["diff", written, source])
            #expect(same.status == 0, "\(what): \(same.output)")
            #expect(try kernelDisagreement(written, with: source) == nil, "\(what)")
        }
        // An image compressed with lzma, which libsquashfs reads and Linux has never mounted.
        let lzma = try Harness.temporaryDirectory("kernel-otherwise") + "/lzma.squashfs"
        let lzmaMade = try KernelMount.run(
            "/usr/bin/mksquashfs", [source, lzma, "-comp", "lzma", "-quiet", "-no-progress", "-mkfs-time", "0"])
        #expect(lzmaMade.status == 0, "\(lzmaMade.output)")
        cases.append(
            (
                "it is compressed with lzma, which the kernel does not read",
                Image(bytes: [UInt8](try #require(FileManager.default.contents(atPath: lzma))))
            ))
        var cut = image
        cut.bytes = Array(image.bytes.prefix(used + 10))
        #expect(used % 1024 != 0 && used % 1024 + 10 < 1024, "the image's end lies inside a block of 1 KiB")
        cases.append(
            (
                "which the kernel reads in whole blocks of 1 KiB, and its file of \(used + 10) bytes ends inside the last",
                cut
            ))
        var size = image
        set32(&size, 40, used + 8)
        cases.append(("its xattr id table's index, 8 bytes at", size))
        for (says, damaged) in cases {
            try expectRefused(damaged, against: source, saying: says)
            let written = try Harness.temporaryDirectory("kernel-otherwise") + "/damaged.squashfs"
            try Data(damaged.bytes).write(to: URL(fileURLWithPath: written))
            #expect(try kernelDisagreement(written, with: source) != nil, "the kernel reads it as the tree: \(says)")
            // Nor is it staged for a machine to boot.
            let state = try Harness.temporaryDirectory("kernel-otherwise-state")
            let boot = try Harness.temporaryDirectory("kernel-otherwise-boot")
            let staged = try KernelMount.run(
                "/usr/bin/timeout",
                ["-s", "KILL", "60", Harness.executable, "stage", written, "--state-dir", state, "--boot-dir", boot, "--no-grub"])
            #expect(staged.status == 7 && staged.output.contains(says), "stage: exit \(staged.status): \(staged.output)")
            #expect(try FileManager.default.contentsOfDirectory(atPath: state).isEmpty, "\(says)")
            #expect(try FileManager.default.contentsOfDirectory(atPath: boot).isEmpty, "\(says)")
            // Nor booted in a VM.
            let booted = try KernelMount.run(
                "/usr/bin/timeout", ["-s", "KILL", "60", Harness.executable, "vm", written, "--print-command"])
            #expect(booted.status == 7 && booted.output.contains(says), "vm: exit \(booted.status): \(booted.output)")
        }
    }

    /// An image of `source` made by mksquashfs with `options` (and no export table, whose table
    /// would move too) whose inode table, one block, is remade: `remake` gets the
    /// block's bytes, uncompressed by `uncompress`, and a function that runs a shell command on
    /// bytes (the file holding them its last argument) and returns what it writes. The tables after
    /// the block move by what it grew, and the indexes that point into them with them.
    func remadeInodeBlock(
        of source: String, _ options: [String], uncompress: String,
        _ remake: ([UInt8], (String, [UInt8]) throws -> [UInt8]) throws -> [UInt8]
    ) throws -> Image {
        let folder = try Harness.temporaryDirectory("remade-block")
        let path = folder + "/image.squashfs"
        let made = try KernelMount.run(
            "/usr/bin/mksquashfs",
            [source, path, "-no-exports", "-quiet", "-no-progress", "-mkfs-time", "0"] + options)
        #expect(made.status == 0, "\(made.output)")
        var image = Image(bytes: [UInt8](try #require(FileManager.default.contents(atPath: path))))
        // From a file, so that a zstd frame names its size and holds one segment, as a writer's do.
        func run(_ command: String, _ bytes: [UInt8]) throws -> [UInt8] {
            try Data(bytes).write(to: URL(fileURLWithPath: folder + "/in"))
            let result = try KernelMount.run("/bin/sh", ["-c", "\(command) '\(folder)/in' > '\(folder)/out'"])
            #expect(result.status == 0, "\(command): \(result.output)")
            return [UInt8](try #require(FileManager.default.contents(atPath: folder + "/out")))
        }
        func add(_ at: Int, _ delta: Int) {
            let value = image.u64(at) + delta
            for part in 0..<4 { image.set16(at + 2 * part, (value >> (16 * part)) & 0xFFFF) }
        }
        let start = image.inodeTable
        let header = image.u16(start)
        let length = header & 0x7FFF
        try #require(header & 0x8000 == 0 && start + 2 + length == image.directoryTable, "one compressed inode block")
        let block = try remake(try run(uncompress, Array(image.bytes[start + 2..<start + 2 + length])), run)
        let delta = block.count - length
        image.bytes =
            Array(image.bytes[..<start]) + [UInt8(block.count & 0xFF), UInt8(block.count >> 8)] + block
            + Array(image.bytes[image.directoryTable..<image.u64(40)])
        // bytes_used, the id, xattr id, directory and fragment tables' starts; then the indexes, and
        // where the attributes' own table starts, which heads the xattr id table.
        for at in [40, 48, 56, 72, 80] { add(at, delta) }
        for index in 0..<(image.u32(16) + 511) / 512 { add(image.u64(80) + 8 * index, delta) }
        for index in 0..<(image.u16(26) + 2047) / 2048 { add(image.u64(48) + 8 * index, delta) }
        let attributes = image.u64(56)
        add(attributes, delta)
        for index in 0..<(image.u32(attributes + 8) * 16 + 8191) / 8192 { add(attributes + 16 + 8 * index, delta) }
        image.bytes += [UInt8](repeating: 0, count: (4096 - image.bytes.count % 4096) % 4096)
        return image
    }

    /// The blocks of compressed images that the kernel's decoder reads otherwise than the library's,
    /// each from mksquashfs's image with its inode block remade, with what `diff` says of it; and
    /// remade blocks both read alike, which must stay the same.
    func decoderCases(of source: String) throws -> (refused: [(String, Image)], alike: [(String, Image)]) {
        let undecodable = "a block does not decompress"
        let zstd = ["-comp", "zstd", "-b", "131072"]
        let xz = ["-comp", "xz", "-b", "131072"]
        func xzStream(_ options: String) -> ([UInt8], (String, [UInt8]) throws -> [UInt8]) throws -> [UInt8] {
            { content, run in try run("xz -q -c --format=xz \(options)", content) }
        }
        let refused: [(String, Image)] = [
            // Two frames, each of half the block: libzstd decodes both, the kernel stops at the
            // first, and cannot read the inodes in the second (the root's among them).
            (
                undecodable,
                try remadeInodeBlock(of: source, zstd, uncompress: "zstd -q -d -c") { content, run in
                    let half = content.count / 2
                    return try run("zstd -q -c --no-check", Array(content[..<half]))
                        + run("zstd -q -c --no-check", Array(content[half...]))
                }
            ),
            // A dictionary larger than the block size, which is all the kernel's decoder holds.
            (
                undecodable,
                try remadeInodeBlock(of: source, xz, uncompress: "xz -q -d -c", xzStream("--check=crc32 --lzma2=dict=256KiB"))
            ),
            // Or than the image's options name.
            (
                undecodable,
                try remadeInodeBlock(
                    of: source, xz + ["-Xdict-size", "32768"], uncompress: "xz -q -d -c",
                    xzStream("--check=crc32 --lzma2=dict=64KiB"))
            ),
            // A check the kernel does not verify, and a filter it does not have.
            (
                undecodable,
                try remadeInodeBlock(of: source, xz, uncompress: "xz -q -d -c", xzStream("--check=crc64 --lzma2=dict=128KiB"))
            ),
            (
                undecodable,
                try remadeInodeBlock(
                    of: source, xz, uncompress: "xz -q -d -c", xzStream("--check=crc32 --delta=dist=1 --lzma2=dict=128KiB"))
            ),
        ]
        let alike: [(String, Image)] = [
            // A frame whose window is the block size, with no content size.
            (
                "a zstd window of the block size",
                try remadeInodeBlock(of: source, zstd, uncompress: "zstd -q -d -c") { content, run in
                    // The frame's header rewritten in place: a window descriptor for 128 KiB and an
                    // empty dictionary id where the content's 2-byte size was.
                    var frame = try run("zstd -q -c --no-check", content)
                    try #require(Array(frame[0..<5]) == [0x28, 0xB5, 0x2F, 0xFD, 0x60], "a frame as zstd writes it")
                    frame.replaceSubrange(4..<7, with: [0x01, 0x38, 0x00])
                    return frame
                }
            ),
            // The dictionary of the block size, an x86 filter first, in three blocks.
            (
                "an xz stream of three blocks, a BCJ filter and a dictionary of the block size",
                try remadeInodeBlock(
                    of: source, xz, uncompress: "xz -q -d -c",
                    xzStream("--check=crc32 --block-size=300 --x86 --lzma2=dict=128KiB"))
            ),
        ]
        return (refused, alike)
    }

    /// How the kernel reads the image at `path` otherwise than the tree at `source`: it does not
    /// mount it, or lists other names, kinds, modes, owners, link counts, device numbers, link
    /// targets, contents or attributes. Nil when it reads the tree.
    func kernelDisagreement(_ path: String, with source: String) throws -> String? {
        let mounted: String
        do { mounted = try KernelMount.squashfs(path) } catch { return "the kernel does not mount it: \(error)" }
        defer { KernelMount.unmount(mounted) }
        let listing = { (root: String) in
            try KernelMount.run(
                "/bin/sh",
                [
                    "-c",
                    "cd '\(root)' && find . -exec stat -c '%n %F %a %u %g %h %t:%T %N' {} + | sort"
                        + " && find . -type f -exec sha256sum {} + | sort && getfattr -R -h -d -m - . 2>&1",
                ])
        }
        let (expected, found) = (try listing(source), try listing(mounted))
        return expected.output == found.output ? nil : "the kernel lists otherwise: \(found.output)"
    }
}
