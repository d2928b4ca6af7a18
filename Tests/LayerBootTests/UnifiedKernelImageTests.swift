import Foundation
import LayerBoot
import LayerSupport
import Testing

/// The PE file `stage --uki` writes: a stub with sections added, read back field by field here;
/// the firmware reads one in `StagingTests.secureBootUnifiedKernel`. The stub is the image's, so
/// one that lies about its own layout is refused with one line.
@Suite("Unified kernel images")
struct UnifiedKernelImageTests {
    /// A little-endian field of `bytes`.
    static func field(_ bytes: [UInt8], _ offset: Int, _ size: Int) -> Int {
        (0..<size).reduce(0) { $0 | Int(bytes[offset + $1]) << (8 * $1) }
    }

    static func put(_ value: Int, _ size: Int, at offset: Int, in bytes: inout [UInt8]) {
        for index in 0..<size { bytes[offset + index] = UInt8(truncatingIfNeeded: value >> (8 * index)) }
    }

    /// Where a PE32+ file's fields are, with the DOS header's pointer at 64.
    static let coff = 68, optional = 88, table = 88 + 240

    /// A PE32+ EFI program as a linker leaves one: one `.text` section of 0x300 bytes (two file
    /// blocks) at 0x1000, headers of 0x400 bytes, sections aligned to 0x1000 in memory and 0x200 in
    /// the file, and a symbol table of 100 bytes after the last section, as systemd's stub has.
    static func stub() -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: 0x400 + 0x400 + 100)
        put(0x5A4D, 2, at: 0, in: &bytes)
        put(64, 4, at: 0x3C, in: &bytes)
        put(0x0000_4550, 4, at: 64, in: &bytes)
        put(0x8664, 2, at: coff, in: &bytes)
        put(1, 2, at: coff + 2, in: &bytes)
        put(0x800, 4, at: coff + 8, in: &bytes)
        put(5, 4, at: coff + 12, in: &bytes)
        put(240, 2, at: coff + 16, in: &bytes)
        put(0x20B, 2, at: optional, in: &bytes)
        put(0x1000, 4, at: optional + 32, in: &bytes)
        put(0x200, 4, at: optional + 36, in: &bytes)
        put(0x2000, 4, at: optional + 56, in: &bytes)
        put(0x400, 4, at: optional + 60, in: &bytes)
        put(16, 4, at: optional + 108, in: &bytes)
        bytes.replaceSubrange(table..<table + 5, with: Array(".text".utf8))
        put(0x300, 4, at: table + 8, in: &bytes)
        put(0x1000, 4, at: table + 12, in: &bytes)
        put(0x400, 4, at: table + 16, in: &bytes)
        put(0x400, 4, at: table + 20, in: &bytes)
        for offset in 0x400..<0x700 { bytes[offset] = 0xCC }
        return bytes
    }

    static let sections = UnifiedKernelImage.sections(
        osRelease: Array("ID=arch\n".utf8), commandLine: "layerctl.image=/a.squashfs quiet",
        initrd: [UInt8](repeating: 7, count: 0x1234), kernel: [UInt8](repeating: 9, count: 0x2001))

    @Test("the sections follow the stub's, each at the next alignment in the file and in memory; the symbol table goes; the same bytes each time")
    func layout() throws {
        let stub = Self.stub()
        let image = try UnifiedKernelImage.assemble(stub: stub, sections: Self.sections, shownAs: "stub")
        #expect(image == (try UnifiedKernelImage.assemble(stub: stub, sections: Self.sections, shownAs: "stub")))
        func f(_ offset: Int, _ size: Int) -> Int { Self.field(image, offset, size) }
        #expect(f(Self.coff + 2, 2) == 5)
        #expect(f(Self.coff + 8, 4) == 0 && f(Self.coff + 12, 4) == 0, "the symbol table is gone")
        #expect(Array(image[0x400..<0x800]) == Array(stub[0x400..<0x800]), "the stub's own section is as it was")
        // name, data, then where: file offsets from 0x800 (the end of .text's two blocks), memory from 0x2000.
        let expected: [(String, Int, Int, Int)] = [
            (".osrel", 8, 0x800, 0x2000), (".cmdline", 32, 0xA00, 0x3000), (".initrd", 0x1234, 0xC00, 0x4000),
            (".linux", 0x2001, 0x2000, 0x6000),
        ]
        for (index, (name, size, offset, address)) in expected.enumerated() {
            let header = Self.table + 40 * (index + 1)
            #expect(String(decoding: image[header..<header + 8].prefix { $0 != 0 }, as: UTF8.self) == name)
            #expect(f(header + 8, 4) == size && f(header + 12, 4) == address, "\(name)")
            #expect(f(header + 16, 4) == (size + 0x1FF) / 0x200 * 0x200 && f(header + 20, 4) == offset, "\(name)")
            #expect(UInt32(f(header + 36, 4)) == 0x4000_0040, "\(name): initialized data, read only")
            #expect(Array(image[offset..<offset + size]) == Self.sections[index].data, "\(name)")
        }
        #expect(image.count == 0x2000 + 0x2200, "the last section padded to a file block")
        #expect(f(Self.optional + 56, 4) == 0x9000, "SizeOfImage: the last section's end, aligned")
        #expect(f(Self.optional + 8, 4) == 0x200 + 0x200 + 0x1400 + 0x2200, "SizeOfInitializedData")
        // The checksum: the 16-bit words with their carries folded in, the field left out, plus the size.
        var sum = 0
        for offset in stride(from: 0, to: image.count, by: 2) where offset != Self.optional + 64 && offset != Self.optional + 66 {
            sum += f(offset, 2)
            sum = (sum & 0xFFFF) + (sum >> 16)
        }
        #expect(f(Self.optional + 64, 4) == sum + image.count)
    }

    /// pefile, the PE reader systemd's ukify writes unified kernel images with, reads `path`: each
    /// section's name, address, size in memory, file offset, size in the file and sha256, the
    /// image's size in memory, whether its checksum holds, and what pefile warns of.
    static let readBack = """
        import hashlib, json, sys, pefile
        pe = pefile.PE(sys.argv[1])
        print(json.dumps({
            "sections": [[s.Name.rstrip(b"\\0").decode(), s.VirtualAddress, s.Misc_VirtualSize, s.PointerToRawData,
                          s.SizeOfRawData, hashlib.sha256(s.get_data()[:s.Misc_VirtualSize]).hexdigest()] for s in pe.sections],
            "sizeOfImage": pe.OPTIONAL_HEADER.SizeOfImage, "checksum": pe.verify_checksum(), "warnings": pe.get_warnings()}))
        """

    @Test("pefile reads systemd's stubs with the sections added: each where the header says, none overlapping, the checksum right, no new warning")
    func readByPefile() throws {
        let python = "/usr/bin/python3"
        guard FileManager.default.isExecutableFile(atPath: python),
            (try? Self.run(python, ["-c", "import pefile"]).status) == 0
        else {
            print("UnifiedKernelImageTests.readByPefile skipped: needs Debian's python3 with pefile (python3-pefile, scripts/install-deps.sh)")
            return
        }
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().path
        var stubs = ["/usr/lib/systemd/boot/efi/linuxx64.efi.stub", root + "/demo/out/stub/linuxx64.efi.stub"]
        for stub in stubs where !FileManager.default.fileExists(atPath: stub) {
            print("UnifiedKernelImageTests.readByPefile: \(stub) skipped: it is not there (systemd-boot-efi, scripts/fetch-stub.sh)")
        }
        stubs = stubs.filter { FileManager.default.fileExists(atPath: $0) }
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("uki-\(getpid())").path
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: folder) }
        for stub in stubs {
            let image = try UnifiedKernelImage.assemble(
                stub: [UInt8](try Data(contentsOf: URL(fileURLWithPath: stub))), sections: Self.sections, shownAs: stub)
            let path = folder + "/linux.efi"
            try Data(image).write(to: URL(fileURLWithPath: path))
            let result = try Self.run(python, ["-c", Self.readBack, path])
            #expect(result.status == 0, "\(stub): \(result.output)")
            let read = try #require(try JSONSerialization.jsonObject(with: Data(result.output.utf8)) as? [String: Any], "\(result.output)")
            let sections = try #require(read["sections"] as? [[Any]])
            #expect(read["checksum"] as? Bool == true, "\(stub)")
            // What pefile warns of, it warns of in the stub alone (Debian 12's relocations overlap).
            let alone = try Self.run(python, ["-c", Self.readBack, stub])
            let stubRead = try #require(try JSONSerialization.jsonObject(with: Data(alone.output.utf8)) as? [String: Any], "\(alone.output)")
            #expect(read["warnings"] as? [String] == stubRead["warnings"] as? [String], "\(stub): \(read["warnings"] ?? "")")
            // The stub's own sections, then ours in order, with their data where the headers say.
            let added = sections.suffix(Self.sections.count)
            #expect(added.map { $0[0] as? String } == Self.sections.map(\.name), "\(stub)")
            for (read, section) in zip(added, Self.sections) {
                let digest = Digest.sha256(Data(section.data))
                #expect(read[2] as? Int == section.data.count && read[5] as? String == digest, "\(stub): \(section.name)")
            }
            // In memory, each section ends before the next begins, and the image's size covers the last.
            let spans = sections.map { (start: $0[1] as? Int ?? 0, end: ($0[1] as? Int ?? 0) + ($0[2] as? Int ?? 0)) }
            for (before, after) in zip(spans, spans.dropFirst()) { #expect(before.end <= after.start, "\(stub): \(spans)") }
            #expect((read["sizeOfImage"] as? Int ?? 0) >= spans.last?.end ?? .max, "\(stub)")
        }
    }

    static func run(_ program: String, _ arguments: [String]) throws -> (status: Int32, output: String) {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: program)
        process.arguments = arguments
        let pipe = Pipe()
        process.standardOutput = pipe
        process.standardError = pipe
        try process.run()
        let output = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        return (process.terminationStatus, output)
    }

    @Test("a stub that is no PE file, lies about its layout, has no room for the sections or is a unified kernel image already: one line")
    func refusedStubs() throws {
        func refusal(_ change: (inout [UInt8]) -> Void) -> String? {
            var stub = Self.stub()
            change(&stub)
            do {
                _ = try UnifiedKernelImage.assemble(stub: stub, sections: Self.sections, shownAs: "the stub")
                return nil
            } catch {
                return (error as? BootError)?.message
            }
        }
        let start = "the stub is no EFI stub a unified kernel image can be made of: "
        #expect(refusal { $0 = Array("#!/bin/sh\n".utf8) } == start + "it does not start as a PE file (MZ)")
        #expect(refusal { Self.put(0x7FFF_FFF0, 4, at: 0x3C, in: &$0) } == start + "it has no PE header")
        #expect(refusal { $0.removeLast($0.count - 200) } == start + "its optional header is cut short")
        #expect(refusal { Self.put(0x10C, 2, at: Self.optional, in: &$0) } == start + "its optional header's magic is 268, not PE32 or PE32+")
        #expect(
            refusal { Self.put(0, 4, at: Self.optional + 36, in: &$0) }
                == start + "its section alignment (4096) or file alignment (0) is not one PE allows")
        #expect(refusal { Self.put(500, 2, at: Self.coff + 2, in: &$0) } == start + "its section table runs past its headers")
        #expect(refusal { Self.put(0x10_0000, 4, at: Self.table + 20, in: &$0) } == start + "its section .text runs past the end of the file")
        #expect(refusal { Self.put(0x100, 4, at: Self.table + 20, in: &$0) } == start + "its section .text lies in its section table")
        #expect(
            refusal { Self.put(0x1D0, 4, at: Self.optional + 60, in: &$0) }
                == start + "its headers hold room for 2 more sections, and a unified kernel image adds 4")
        // 65,535 sections of nothing, in headers of 3 MiB: with four more, the count passes its 16 bits.
        #expect(
            refusal {
                $0 += [UInt8](repeating: 0, count: 3 << 20)
                Self.put(0xFFFF, 2, at: Self.coff + 2, in: &$0)
                Self.put($0.count, 4, at: Self.optional + 60, in: &$0)
            } == start + "its section table holds 65535 sections: with the 4 a unified kernel image adds, more than the 65535 a PE file holds")
        // .text ends where the four sections added would end at 4 GiB exactly, past what SizeOfImage holds.
        let inMemory = 0x1000 + 0x1000 + 0x2000 + 0x3000
        #expect(
            refusal { Self.put((1 << 32) - inMemory - 0x1000, 4, at: Self.table + 12, in: &$0) }
                == start + "its sections end at 0xffff8400 in memory, where the 4 a unified kernel image adds would pass the 4 GiB a PE file addresses")
        let image = try UnifiedKernelImage.assemble(stub: Self.stub(), sections: Self.sections, shownAs: "the stub")
        #expect(
            refusal { $0 = image } == start + "it holds a .osrel section already (a unified kernel image, not a stub)")
    }
}
