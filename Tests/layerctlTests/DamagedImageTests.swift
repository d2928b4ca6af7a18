import Foundation
import Glibc
import Testing

/// Damaged and hostile images read by `diff`: each is refused in one line that names the image,
/// never read forever and never reported as "the same". The images are mksquashfs's, with
/// metadata left uncompressed so that a test can change one field the way damage or an attacker
/// would; unsquashfs and the kernel are the oracles for what the field means.
@Suite("Damaged images", .serialized, .enabled(if: Harness.isRoot, "needs root to mount images for the oracle"))
struct DamagedImageTests {
    /// An image's bytes, with the squashfs fields a case changes. Offsets are absolute.
    struct Image {
        var bytes: [UInt8]

        func u16(_ at: Int) -> Int { Int(bytes[at]) | Int(bytes[at + 1]) << 8 }
        func u32(_ at: Int) -> Int { u16(at) | u16(at + 2) << 16 }
        func u64(_ at: Int) -> Int { u32(at) | u32(at + 4) << 32 }
        mutating func set16(_ at: Int, _ value: Int) {
            bytes[at] = UInt8(truncatingIfNeeded: value)
            bytes[at + 1] = UInt8(truncatingIfNeeded: value >> 8)
        }

        var inodeTable: Int { u64(64) }
        var directoryTable: Int { u64(72) }
        var rootReference: Int { u64(32) }
        /// Where the inode at `offset` of the (single, uncompressed) first inode block starts.
        func inode(atOffset offset: Int) -> Int { inodeTable + 2 + offset }
        var root: Int { inode(atOffset: rootReference & 0xFFFF) }
        func inodeNumber(_ inode: Int) -> Int { u32(inode + 12) }

        /// The directory entry named `name`: offset u16, inode number difference s16, type u16,
        /// name size - 1 u16, then the name.
        func entry(_ name: String) throws -> Int {
            let needle = [UInt8](name.utf8)
            let region = directoryTable..<bytes.count - needle.count
            let at = try #require(
                region.first { start in
                    Array(bytes[start..<start + needle.count]) == needle && u16(start - 2) == needle.count - 1
                }, "no entry \(name)")
            return at - 8
        }

        /// Points entry `name` at the inode at `inode` (in the first inode block), with the
        /// inode number that inode has, so only the target changes.
        mutating func point(_ name: String, at inode: Int) throws {
            let entry = try entry(name)
            let current = self.inode(atOffset: u16(entry))
            let base = inodeNumber(current) - Int(Int16(truncatingIfNeeded: u16(entry + 2)))
            set16(entry, inode - inodeTable - 2)
            set16(entry + 2, inodeNumber(inode) - base)
        }
    }

    /// A small tree and its image: /a/loopdir, /c/file1, /c/file2.
    func make(_ options: [String] = []) throws -> (folder: String, image: Image, path: String) {
        let folder = try Harness.temporaryDirectory("damaged")
        let source = folder + "/src"
        for directory in ["a", "a/loopdir", "c"] {
            try FileManager.default.createDirectory(atPath: source + "/" + directory, withIntermediateDirectories: true)
        }
        try "one\n".write(toFile: source + "/c/file1", atomically: false, encoding: .utf8)
        try "two\n".write(toFile: source + "/c/file2", atomically: false, encoding: .utf8)
        let path = folder + "/image.squashfs"
        let made = try KernelMount.run(
            "/usr/bin/mksquashfs",
            [source, path, "-noI", "-noD", "-noF", "-noX", "-quiet", "-no-progress", "-all-root", "-mkfs-time", "0"] + options)
        #expect(made.status == 0, "\(made.output)")
        let bytes = try #require(FileManager.default.contents(atPath: path))
        return (source, Image(bytes: [UInt8](bytes)), path)
    }

    /// `layerctl diff` of the damaged `image` against `folder`, within a minute: exit 7 (damaged), or 3
    /// when what is left is no squashfs image at all, and one line that names the image and says `expected`.
    func expectRefused(
        _ image: Image, against folder: String, saying expected: String,
        sourceLocation: SourceLocation = #_sourceLocation
    ) throws {
        let path = try Harness.temporaryDirectory("damaged-image") + "/damaged.squashfs"
        try Data(image.bytes).write(to: URL(fileURLWithPath: path))
        let result = try KernelMount.run("/usr/bin/timeout", ["-s", "KILL", "60", Harness.executable, "diff", path, folder])
        #expect(
            result.status == 7 || (result.status == 3 && result.output.contains("not a squashfs image")),
            "exit \(result.status) (124: still reading after a minute): \(result.output)",
            sourceLocation: sourceLocation)
        let lines = result.output.split(separator: "\n")
        #expect(lines.count == 1, "\(result.output)", sourceLocation: sourceLocation)
        #expect(
            result.output.contains(path) && (expected.isEmpty || result.output.contains(expected)), "\(result.output)",
            sourceLocation: sourceLocation)
    }

    @Test("A metadata block that does not decompress is damage (exit 7), not the compressor's failure")
    func undecompressable() throws {
        let (folder, _, _) = try make()
        let path = try Harness.temporaryDirectory("damaged-gzip") + "/image.squashfs"
        // mksquashfs's defaults: gzip, whose zlib stream ends with a checksum, and metadata compressed.
        let made = try KernelMount.run(
            "/usr/bin/mksquashfs", [folder, path, "-comp", "gzip", "-quiet", "-no-progress", "-all-root", "-mkfs-time", "0"])
        #expect(made.status == 0, "\(made.output)")
        var image = Image(bytes: [UInt8](try #require(FileManager.default.contents(atPath: path))))
        let header = image.u16(image.inodeTable)
        #expect(header & 0x8000 == 0, "the inode table's first block is stored compressed")
        let middle = image.inodeTable + 2 + (header & 0x7FFF) / 2
        image.bytes[middle] ^= 0xFF
        try expectRefused(image, against: folder, saying: "a block does not decompress")
    }

    @Test("The image as written reads as the same as its folder; unsquashfs reads it")
    func undamaged() throws {
        let (folder, _, path) = try make()
        let result = try Harness.run(["diff", path, folder])
        #expect(result.status == 0, "\(result.stdout)\(result.stderr)")
    }

    @Test("A directory that points back at the root or at itself is a loop, refused at once, as unsquashfs does")
    func loops() throws {
        let (folder, image, _) = try make()
        var toRoot = image
        try toRoot.point("loopdir", at: image.root)
        try expectRefused(toRoot, against: folder, saying: "directory loop")
        let unsquashfs = try Self.unsquashfs(toRoot)
        #expect(unsquashfs.contains("loop"), "\(unsquashfs)")

        var toParent = image
        let a = image.inode(atOffset: image.u16(try image.entry("a")))
        try toParent.point("loopdir", at: a)
        try expectRefused(toParent, against: folder, saying: "directory loop")
    }

    @Test(
        "An entry whose type or inode number disagrees with its inode, two inodes under one number, names out of order")
    func entriesThatDisagree() throws {
        let (folder, image, _) = try make()
        var type = image
        type.set16(try image.entry("file1") + 4, 3)  // a symlink, says the entry; readdir reports DT_LNK
        try expectRefused(type, against: folder, saying: "is listed as type 3")

        var number = image
        let entry = try image.entry("file2")
        number.set16(entry + 2, image.u16(entry + 2) + 1)
        try expectRefused(number, against: folder, saying: "is listed as inode")

        var order = image
        let name = try image.entry("file2") + 8
        order.bytes[name + 4] = UInt8(ascii: "0")  // file2 → file0, now after file1
        try expectRefused(order, against: folder, saying: "lists file0 after file1")

        // Entry and inode agree on a number past the image's inode count.
        var range = image
        let file1 = try image.entry("file1")
        let inode = image.inode(atOffset: image.u16(file1))
        let past = image.u32(4) + 10
        range.set16(inode + 12, past)
        range.set16(inode + 14, 0)
        range.set16(file1 + 2, image.u16(file1 + 2) + past - image.inodeNumber(inode))
        try expectRefused(range, against: folder, saying: "has inode number \(past), outside 1 to \(image.u32(4))")

        // Two directories under one number: the kernel would show the first's entries for both.
        var shared = image
        let loopdir = try image.entry("loopdir")
        let loopInode = image.inode(atOffset: image.u16(loopdir))
        let c = image.inode(atOffset: image.u16(try image.entry("c")))
        let taken = image.inodeNumber(c)
        shared.set16(loopInode + 12, taken)
        shared.set16(loopInode + 14, 0)
        shared.set16(loopdir + 2, image.u16(loopdir + 2) + taken - image.inodeNumber(loopInode))
        try expectRefused(shared, against: folder, saying: "which is taken")
    }

    @Test("Truncated images and an owner index past the id table are refused in one line")
    func truncatedAndBadIndexes() throws {
        let (folder, image, _) = try make()
        // bytes_used: mksquashfs pads the file to 4 KiB beyond it.
        let used = image.u64(40)
        for length in [96, used / 2, used - 1] {
            var cut = image
            cut.bytes = Array(image.bytes.prefix(length))
            try expectRefused(cut, against: folder, saying: "")
        }
        var owner = image
        owner.set16(image.root + 4, 200)
        try expectRefused(owner, against: folder, saying: "")
    }

    /// `stage`, `diff` and `vm` opened an image operand as it was: a pipe held each of them until
    /// something wrote to it, and a device node read as an empty file.
    @Test("An image operand that is a pipe, a device or shorter than a superblock is refused in one line, at once; stage keeps nothing")
    func operandsThatAreNoImageFile() throws {
        let folder = try Harness.temporaryDirectory("operands")
        #expect(mkfifo(folder + "/pipe.squashfs", 0o600) == 0)
        #expect(mknod(folder + "/disk.squashfs", S_IFBLK | 0o600, Device.make(7, 250)) == 0)
        #expect(symlink(folder + "/pipe.squashfs", folder + "/link.squashfs") == 0)
        try "not an image\n".write(toFile: folder + "/short.squashfs", atomically: false, encoding: .utf8)
        #expect(FileManager.default.createFile(atPath: folder + "/empty.squashfs", contents: nil))
        let state = try Harness.temporaryDirectory("operands-state")
        let boot = try Harness.temporaryDirectory("operands-boot")
        for (name, says) in [
            ("pipe", "pipe.squashfs is a pipe: an image is read from a file, never from a device, a pipe or a socket"),
            ("link", "link.squashfs is a pipe: "),
            ("disk", "disk.squashfs is a block device: an image is read from a file, never from a device, a pipe or a socket (copy it into a file first with `dd if="),
            ("short", "short.squashfs as a squashfs image failed: not a squashfs image (no squashfs magic)"),
            ("empty", "empty.squashfs as a squashfs image failed: not a squashfs image (no squashfs magic)"),
        ] {
            let path = "\(folder)/\(name).squashfs"
            for command in [
                ["diff", path, folder], ["vm", path, "--print-command"],
                ["stage", path, "--state-dir", state, "--boot-dir", boot, "--no-grub"],
            ] {
                let result = try KernelMount.run("/usr/bin/timeout", ["-s", "KILL", "60", Harness.executable] + command)
                #expect(result.status == 3, "\(command) exit \(result.status) (137: still waiting after a minute): \(result.output)")
                #expect(result.output.split(separator: "\n").count == 1, "\(command): \(result.output)")
                #expect(result.output.contains(folder + "/" + says), "\(command): \(result.output)")
            }
        }
        // Not even an empty folder for a name never staged: `staged` would list it.
        #expect(try FileManager.default.contentsOfDirectory(atPath: state).isEmpty)
        #expect(try FileManager.default.contentsOfDirectory(atPath: boot).isEmpty)
    }

    /// The walk kept a table as long as the superblock's inode count: 4 billion asked for 64 GiB,
    /// and the allocation's failure killed layerctl. Without an export table the kernel takes the
    /// count as it is and mounts the image, so the count alone is no damage; with one, whose index
    /// is as long as the count needs, the kernel refuses the image, and so does layerctl.
    @Test("A superblock that claims 4 billion inodes costs only the memory its entries need; with an export table, it is damage")
    func hugeInodeCount() throws {
        let (folder, image, _) = try make(["-no-exports"])
        var claims = image
        claims.set16(4, 0xFFFF)
        claims.set16(6, 0xFFFF)
        let path = try Harness.temporaryDirectory("damaged-image") + "/claims.squashfs"
        try Data(claims.bytes).write(to: URL(fileURLWithPath: path))
        let result = try KernelMount.run("/usr/bin/timeout", ["-s", "KILL", "60", Harness.executable, "diff", path, folder])
        #expect(result.status == 0 && result.output.contains("files: the same"), "exit \(result.status): \(result.output.prefix(300))")
        KernelMount.unmount(try KernelMount.squashfs(path))

        var exported = try make().image
        exported.set16(4, 0xFFFF)
        exported.set16(6, 0xFFFF)
        try expectRefused(exported, against: folder, saying: "a damaged image: its export table's index, 33554432 bytes at ")
    }

    /// What unsquashfs says of `image` when it lists it.
    static func unsquashfs(_ image: Image) throws -> String {
        let path = try Harness.temporaryDirectory("unsquashfs") + "/image.squashfs"
        try Data(image.bytes).write(to: URL(fileURLWithPath: path))
        return try KernelMount.run("/usr/bin/timeout", ["60", "/usr/bin/unsquashfs", "-l", path]).output
    }
}
